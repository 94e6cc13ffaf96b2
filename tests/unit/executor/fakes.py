"""A scripted API server and a fake clock for the executor's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.commands import CommandIssued
from services.executor.apply import Abandoned, Answer, Applier
from services.executor.retry import RetryPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UID = "11111111-1111-1111-1111-111111111111"
OTHER_UID = "22222222-2222-2222-2222-222222222222"


def command(step: str = "delete", **overrides: Any) -> CommandIssued:
    fields: dict[str, Any] = {
        "command_id": "c0ffee",
        "step": step,
        "namespace": "ns",
        "job_name": "job",
        "job_uid": "job-uid",
        "pod_name": "job-abc",
        "pod_uid": UID,
        "trigger": "Killed",
        "reason": "Killed",
        "rule": "ladder.delete-method",
        "config_version": 3,
        "due_at": T0,
        "decided_at": T0,
    }
    if step == "set-active-deadline":
        fields["active_deadline_seconds"] = 30
        fields["rule"] = "ladder.active-deadline"
    if step == "force-delete":
        fields["grace_period_seconds"] = 0
        fields["rule"] = "ladder.force-delete"
    if step == "fail-job":
        fields.update(pod_name=None, pod_uid=None, rule="job.failure-target")
    if step == "annotate-job":
        fields.update(
            pod_name=None, pod_uid=None, rule="job.show-kill", kill_state="due", kill_due_at=T0
        )
    fields.update(overrides)
    return CommandIssued(**fields)


JOB_REF: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "name": "job",
    "uid": "job-uid",
    "controller": True,
    "blockOwnerDeletion": True,
}
"""The owner reference the Job controller puts on the pods of :func:`command`'s Job."""


JOB_LABELS = {
    "batch.kubernetes.io/controller-uid": "job-uid",
    "batch.kubernetes.io/job-name": "job",
    "controller-uid": "job-uid",
    "job-name": "job",
}
"""The labels the Job controller puts on them."""


def job_ref(name: str = "job", uid: str = "job-uid", **fields: Any) -> dict[str, Any]:
    return {**JOB_REF, "name": name, "uid": uid, **fields}


def pod(
    uid: str = UID,
    *,
    owners: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    **fields: Any,
) -> Answer:
    """The pod ``ns/job-abc`` as the API server returns it: by default a pod of the
    Job ``job`` (uid ``job-uid``), as :func:`command` names it."""
    meta: dict[str, Any] = {
        "name": "job-abc",
        "namespace": "ns",
        "uid": uid,
        "resourceVersion": fields.get("resourceVersion", "7"),
        "labels": JOB_LABELS if labels is None else labels,
        "ownerReferences": [JOB_REF] if owners is None else owners,
    }
    spec: dict[str, Any] = {}
    if "deletionTimestamp" in fields:
        meta["deletionTimestamp"] = fields["deletionTimestamp"]
        meta["deletionGracePeriodSeconds"] = fields.get("deletionGracePeriodSeconds", 30)
    if "activeDeadlineSeconds" in fields:
        spec["activeDeadlineSeconds"] = fields["activeDeadlineSeconds"]
    return Answer(200, "OK", "", orjson.dumps({"metadata": meta, "spec": spec}))


def job(
    uid: str = "job-uid",
    *,
    conditions: list[dict[str, Any]] | None = None,
    managed_by: str | None = None,
    resource_version: str = "70",
) -> Answer:
    """The Job ``ns/job`` as the API server returns it (uid ``job-uid`` by default,
    as :func:`command` names it)."""
    spec: dict[str, Any] = {"backoffLimit": 6}
    if managed_by is not None:
        spec["managedBy"] = managed_by
    body = {
        "metadata": {
            "name": "job",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": resource_version,
        },
        "spec": spec,
        "status": {"active": 3, "conditions": conditions or []},
    }
    return Answer(200, "OK", "", orjson.dumps(body))


@dataclass
class Call:
    verb: str
    path: str
    body: Any
    content_type: str
    timeout: float


@dataclass
class ScriptedApi:
    """Answers from a script: one entry per call, an Answer or a function of the call."""

    script: list[Answer | Callable[[Call], Answer]]
    calls: list[Call] = field(default_factory=list)

    async def __call__(
        self, verb: str, path: str, body: Any, content_type: str, timeout: float
    ) -> Answer:
        call = Call(verb, path, body, content_type, timeout)
        self.calls.append(call)
        if not self.script:
            raise AssertionError(f"unexpected call {verb} {path}")
        step = self.script.pop(0)
        return step(call) if callable(step) else step

    @property
    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.verb != "GET"]


@dataclass
class FakeClock:
    t: float = 0.0
    slept: list[float] = field(default_factory=list)
    retried: list[tuple[str, int]] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    async def sleep(self, stopping: asyncio.Event, delay: float) -> None:
        if stopping.is_set():
            raise Abandoned
        self.slept.append(delay)
        self.t += delay


def applier(api: ScriptedApi, clock: FakeClock, budget_s: float = 60.0) -> Applier:
    return Applier(
        api,
        RetryPolicy(initial_s=0.2, max_s=5.0, budget_s=budget_s, jitter=0.0),
        request_timeout_s=10.0,
        on_retry=lambda step, status: clock.retried.append((step, status)),
        now=clock.now,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
