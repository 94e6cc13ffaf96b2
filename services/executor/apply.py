"""One command -> Kubernetes API calls -> one outcome.

The mapping is pure (:func:`plan`, :func:`classify`, :func:`parse_pod`); the
loop (:class:`Applier`) does the calls through an injected transport, clock
and sleep, so every path is unit-tested without an API server.

A command carrying the pod's resourceVersion as the killer last saw it is
first written without a read, conditional on that version and the uid: one
call when the pod is unchanged. Refused (it changed since), or without a
version, the command is decided on a GET of the pod. That read is what makes a
redelivered command (a crash between the API call and the Kafka commit)
harmless: if its effect is already there, no second write is sent.

- 404 -> ``gone``; another uid under the name -> ``uid-mismatch`` (nothing
  written: the UID precondition, checked by us and by the API server).
- ``set-active-deadline``: current ``activeDeadlineSeconds`` <= the value ->
  ``applied`` without a write; otherwise a JSON patch whose ``test`` ops on
  ``/metadata/uid`` and ``/metadata/resourceVersion`` make the API server
  refuse another pod, or the same pod changed since our read (422). The API
  server itself refuses to raise the value (422), so a concurrent lowering
  cannot be undone: on 422 we read again and decide from what is there.
- ``delete``: already being deleted -> ``applied`` without a write; else
  DELETE with ``preconditions`` uid and resourceVersion and the command's
  grace period.
- ``force-delete``: DELETE with ``gracePeriodSeconds: 0`` and the same
  preconditions, unless a grace-0 deletion is already recorded.
- Every write is conditional on the resourceVersion we read. That is what
  makes a retry after a lost answer safe even when the lost write was still
  queued in the API server when we read again: it lands first, changes the
  resourceVersion, and our second write is refused instead of applied twice.
- Writes: 409 (a DELETE precondition) or 422 (a patch ``test``) -> read
  again and decide from what is there (another uid -> ``uid-mismatch``;
  the effect already there -> ``applied``; else write again, at most
  ``max_rechecks`` times); 403 -> ``forbidden``; 429, 5xx, timeouts,
  connection errors -> retried with capped exponential backoff (from the
  GET again) until the command's budget is spent -> ``failed``.

``fail-job`` (the Job-level step, :mod:`.job`) reads the Job: 404 -> ``gone``;
another uid -> ``uid-mismatch``; ``spec.managedBy`` naming another controller ->
``refused``; a ``FailureTarget``, ``SuccessCriteriaMet``, ``Complete`` or
``Failed`` condition already there -> ``applied`` without a write; else a merge
patch of ``status`` adding ``FailureTarget``, conditional on the resourceVersion
read; 409/422 -> read again and decide from what is there (bounded, as above).

Commands come from Kafka, so nothing in one is trusted (docs/executor.md, "What
the executor refuses"): a namespace, pod or Job name that is not a valid
Kubernetes name is ``refused`` before any API call (:func:`invalid_names`), and
a pod not owned by the command's Job is ``refused`` with no write
(:func:`not_owned`, on the pod read; the unread patch carries the same check as
``test`` ops on the pod's controller owner reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from schemas.commands import JOB_STEPS, CommandIssued, Outcome, Step
from services.runtime.retry import sleep_unless_stopped

from .job import (
    JSON_MERGE_PATCH,
    KILL_STATE,
    BadJob,
    JobView,
    StatusPatch,
    job_path,
    managed_elsewhere,
    parse_job,
    plan_annotate_job,
    plan_fail_job,
)
from .retry import RetryPolicy

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"


# -- what a command may name: checked before any API call ------------------------------

_DNS1123_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_DNS1123_LABEL)
DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253

Refusal = Literal[
    "invalid-namespace",
    "invalid-pod-name",
    "invalid-job-name",
    "invalid-command",
    "not-owned",
    "managed-elsewhere",
]
"""Why a command was ``refused`` (the label of ``jobreaper_executor_refused_total``)."""


def is_dns1123_label(value: str) -> bool:
    """Kubernetes' namespace names: at most 63 of ``[a-z0-9-]``, alphanumeric at both ends."""
    return len(value) <= DNS1123_LABEL_MAX and DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Kubernetes' pod and Job names: dot-separated DNS-1123 labels, at most 253 in all."""
    return len(value) <= DNS1123_SUBDOMAIN_MAX and DNS1123_SUBDOMAIN.fullmatch(value) is not None


def _shown(value: str, limit: int) -> str:
    """A name for a message: quoted, escaped, shortened (it may be anything)."""
    text = repr(value[:80]) + ("..." if len(value) > 80 else "")
    return f"{text} ({len(value)} characters)" if len(value) > limit else text


def invalid_names(command: CommandIssued) -> tuple[Refusal, str] | None:
    """Why the command must not reach the API server at all, or None.

    The namespace and pod name go into the request's URL path, the Job name into
    the result and the Events: each must be a name Kubernetes itself accepts
    (so none holds ``/``, ``..``, ``%``, ``?`` or anything a path can be bent with).
    """
    if not is_dns1123_label(command.namespace):
        return "invalid-namespace", (
            f"namespace {_shown(command.namespace, DNS1123_LABEL_MAX)} "
            "is not a DNS-1123 label "
            f"(at most {DNS1123_LABEL_MAX} of a-z, 0-9 and '-', alphanumeric at both ends)"
        )
    if command.step in JOB_STEPS:
        if command.pod_name is not None or not command.job_uid:
            return "invalid-command", f"{command.step} names a pod, or no Job uid"
    elif command.pod_name is None or command.pod_uid is None:
        return "invalid-command", f"{command.step} without pod_name and pod_uid"
    elif not is_dns1123_subdomain(command.pod_name):
        return "invalid-pod-name", (
            f"pod name {_shown(command.pod_name, DNS1123_SUBDOMAIN_MAX)} "
            "is not a DNS-1123 subdomain "
            f"(at most {DNS1123_SUBDOMAIN_MAX} of a-z, 0-9, '-' and '.')"
        )
    if not is_dns1123_subdomain(command.job_name):
        return "invalid-job-name", (
            f"Job name {_shown(command.job_name, DNS1123_SUBDOMAIN_MAX)} "
            "is not a DNS-1123 subdomain "
            f"(at most {DNS1123_SUBDOMAIN_MAX} of a-z, 0-9, '-' and '.')"
        )
    if command.step == "set-active-deadline" and command.active_deadline_seconds is None:
        return "invalid-command", "set-active-deadline without active_deadline_seconds"
    return None


# -- what the API server says --------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One API answer. ``status`` 0: no answer (timeout, connection error)."""

    status: int
    reason: str = ""
    message: str = ""
    body: bytes = b""


class Transport(Protocol):
    async def __call__(
        self, verb: str, path: str, body: Any, content_type: str, timeout: float
    ) -> Answer: ...


Verdict = Literal["ok", "gone", "forbidden", "failed", "retry", "recheck"]


def retryable(status: int) -> bool:
    """Throttling, server errors and no answer at all are worth another try."""
    return status == 0 or status == 429 or status >= 500


def classify(status: int, *, step: Step, write: bool) -> Verdict:
    """What an answer means for the command.

    ``recheck``: read the pod again and decide from what is there (a refused
    patch: another uid under the name, or a value lowered meanwhile).
    """
    if 200 <= status < 300:
        return "ok"
    if retryable(status):
        return "retry"
    if status == 404:
        return "gone"
    if status == 403:
        return "forbidden"
    if write and status == 409:
        return "recheck"  # a precondition failed: another pod, or this one changed
    if write and step == "set-active-deadline" and status == 422:
        return "recheck"  # a patch ``test`` failed, or the value may not be raised
    if write and step == "fail-job" and status == 422:
        return "recheck"  # e.g. the Job completed meanwhile: its conditions tell
    return "failed"


# -- the pod, as far as a command cares ----------------------------------------------


JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
"""The labels the Job controller puts on its pods, in the order the watcher reads them."""
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
"""The labels holding the uid of the Job that created the pod (kept when it is orphaned)."""


@dataclass(frozen=True)
class OwnerRef:
    kind: str
    api_version: str
    name: str
    uid: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def is_job(self) -> bool:
        return self.kind == "Job" and self.group == "batch"

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r} ({self.api_version}, uid {self.uid})"


@dataclass(frozen=True)
class PodView:
    uid: str
    resource_version: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    job_name: str | None = None
    """The controlling Job's name (``batch`` ``Job`` controller owner reference)."""
    job_uid: str | None = None
    controller: OwnerRef | None = None
    """The controller owner reference, of whatever kind."""
    controller_index: int | None = None
    """Its index in ``metadata.ownerReferences`` (the JSON-patch ``test`` path)."""
    job_owners: tuple[str, ...] = ()
    """Uids of every owner reference of kind ``Job``, controller or not."""
    job_label: str | None = None
    """The first non-empty of :data:`JOB_NAME_LABELS`."""
    job_uid_label: str | None = None
    """The first non-empty of :data:`JOB_UID_LABELS`."""


class BadPod(ValueError):
    """A GET answered with something that is not a pod."""


def parse_pod(body: bytes) -> PodView:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPod(f"the pod is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadPod("the pod is not a JSON object")
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    uid = meta.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadPod("the pod has no metadata.uid")
    controller: OwnerRef | None = None
    controller_index: int | None = None
    job_owners: list[str] = []
    refs = meta.get("ownerReferences") or []
    if not isinstance(refs, list):
        raise BadPod("the pod's metadata.ownerReferences is not a list")
    for index, raw_ref in enumerate(refs):
        if not isinstance(raw_ref, dict):
            raise BadPod("an owner reference of the pod is not an object")
        ref = OwnerRef(
            kind=str(raw_ref.get("kind") or ""),
            api_version=str(raw_ref.get("apiVersion") or ""),
            name=str(raw_ref.get("name") or ""),
            uid=str(raw_ref.get("uid") or ""),
        )
        if ref.kind == "Job":
            job_owners.append(ref.uid)
        if raw_ref.get("controller") is True and controller is None:
            controller, controller_index = ref, index
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise BadPod("the pod's metadata.labels is not an object")

    def first(keys: tuple[str, ...]) -> str | None:
        return next((v for k in keys if isinstance(v := labels.get(k), str) and v), None)

    job = controller if controller is not None and controller.is_job else None
    resource_version = meta.get("resourceVersion")
    return PodView(
        uid=uid,
        resource_version=resource_version if isinstance(resource_version, str) else None,
        deletion_timestamp=meta.get("deletionTimestamp"),
        deletion_grace_period_seconds=meta.get("deletionGracePeriodSeconds"),
        active_deadline_seconds=spec.get("activeDeadlineSeconds"),
        job_name=job.name if job is not None else None,
        job_uid=job.uid if job is not None else None,
        controller=controller,
        controller_index=controller_index,
        job_owners=tuple(job_owners),
        job_label=first(JOB_NAME_LABELS),
        job_uid_label=first(JOB_UID_LABELS),
    )


def not_owned(command: CommandIssued, pod: PodView) -> str | None:
    """Why ``pod`` (read, uid matching) is not the command's Job's to kill, or None.

    A pod with a controller owner reference: it must be a ``batch`` Job of the
    command's Job uid and name (a command without a Job uid is refused).

    A pod with no controller, an orphan (its Job was deleted with
    ``propagationPolicy: Orphan``, or it was found by its label only): it must
    have no owner reference to any Job, its Job-name label (:data:`JOB_NAME_LABELS`,
    the first non-empty, as the watcher reads it) must be the command's Job name
    and, when the command has a Job uid, its controller-uid label
    (:data:`JOB_UID_LABELS`, set by the Job controller and kept on orphans) must be
    that uid.
    """
    where = f"pod {command.namespace}/{command.pod_name}"
    ref = pod.controller
    wanted = f"Job {command.job_name!r}" + (
        f" (uid {command.job_uid})" if command.job_uid is not None else ""
    )
    if ref is not None:
        if command.job_uid is None:
            return (
                f"{where} is controlled by {ref}; a command without a Job uid may only "
                "touch an orphan (no controller)"
            )
        if not ref.is_job or ref.uid != command.job_uid or ref.name != command.job_name:
            return f"{where} is controlled by {ref}, not by {wanted}"
        return None
    if pod.job_owners:
        return (
            f"{where} has an owner reference to a Job (uid {pod.job_owners[0]}) but no controller"
        )
    if pod.job_label != command.job_name:
        shown = (
            "no Job-name label" if pod.job_label is None else f"Job-name label {pod.job_label!r}"
        )
        return f"{where} is an orphan with {shown}, not of {wanted}"
    if command.job_uid is not None and pod.job_uid_label != command.job_uid:
        shown = (
            "no controller-uid label"
            if pod.job_uid_label is None
            else f"controller-uid label {pod.job_uid_label!r}"
        )
        return f"{where} is an orphan with {shown}, not of {wanted}"
    return None


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


# -- command -> request ----------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    verb: str
    path: str
    body: Any
    content_type: str


@dataclass(frozen=True)
class AlreadyDone:
    """The command's effect is already there: nothing is written."""

    message: str


def plan(command: CommandIssued, pod: PodView) -> Write | AlreadyDone:
    """The write that applies a pod step ``command`` to ``pod`` (whose uid matched),
    if one is needed."""
    if command.pod_name is None or command.pod_uid is None or command.step in JOB_STEPS:
        raise ValueError(f"{command.step} is not a pod step with a pod")
    path = pod_path(command.namespace, command.pod_name)
    pod_uid = command.pod_uid
    if command.step == "set-active-deadline":
        value = command.active_deadline_seconds
        if value is None:
            raise ValueError("set-active-deadline without active_deadline_seconds")
        current = pod.active_deadline_seconds
        if current is not None and current <= value:
            return AlreadyDone(
                f"activeDeadlineSeconds is already {current} <= {value}: not written "
                "(only ever set or lowered)"
            )
        tests: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": pod_uid}]
        if pod.resource_version is not None:
            tests.append(
                {"op": "test", "path": "/metadata/resourceVersion", "value": pod.resource_version}
            )
        tests.extend(owner_tests(command, pod))
        return Write(
            "PATCH",
            path,
            [*tests, {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": value}],
            JSON_PATCH,
        )
    if command.step == "delete":
        if pod.deletion_timestamp is not None:
            return AlreadyDone(
                f"already being deleted since {pod.deletion_timestamp} "
                f"(grace {pod.deletion_grace_period_seconds}s): no second delete sent"
            )
        options = delete_options(pod_uid, pod.resource_version, command.grace_period_seconds)
        return Write("DELETE", path, options, JSON)
    # force-delete
    if pod.deletion_timestamp is not None and pod.deletion_grace_period_seconds == 0:
        return AlreadyDone(
            f"already force-deleted at {pod.deletion_timestamp} (grace 0), "
            "waiting on its finalizers: no second delete sent"
        )
    return Write("DELETE", path, delete_options(pod_uid, pod.resource_version, 0), JSON)


def owner_tests(command: CommandIssued, pod: PodView) -> list[dict[str, Any]]:
    """JSON-patch ``test`` ops that make the API server refuse the patch (422) unless
    the pod's controller owner reference is the command's Job.

    At the controller reference's index as read (0, the Job controller's own
    place, for an unread write). Without a Job uid there is nothing to test
    against: those commands are only written after a read (:func:`not_owned`),
    and the resourceVersion test holds the pod to that read.
    """
    if command.job_uid is None or pod.controller_index is None:
        return []
    at = f"/metadata/ownerReferences/{pod.controller_index}"
    api_version = pod.controller.api_version if pod.controller is not None else "batch/v1"
    return [
        {"op": "test", "path": f"{at}/controller", "value": True},
        {"op": "test", "path": f"{at}/apiVersion", "value": api_version},
        {"op": "test", "path": f"{at}/kind", "value": "Job"},
        {"op": "test", "path": f"{at}/name", "value": command.job_name},
        {"op": "test", "path": f"{at}/uid", "value": command.job_uid},
    ]


def delete_options(
    uid: str, resource_version: str | None, grace_period_seconds: int | None
) -> dict[str, Any]:
    preconditions = {"uid": uid}
    if resource_version is not None:
        preconditions["resourceVersion"] = resource_version
    options: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": preconditions,
    }
    if grace_period_seconds is not None:
        options["gracePeriodSeconds"] = grace_period_seconds
    return options


# -- the loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    applied_at: datetime
    """When the API server gave the answer that decided the outcome."""
    http_status: int | None
    message: str
    attempts: int
    """API calls made for the command (reads and writes, retries included)."""
    wrote: bool = False
    """Whether a write of ours was accepted (False: found already done, or refused)."""
    pod: PodView | None = None
    """The pod as read or written, when it is the command's pod (not for
    ``uid-mismatch`` and ``refused``: its facts are not the command's Job's)."""
    refusal: Refusal | None = None
    """For ``refused``: why."""


class Abandoned(Exception):
    """The executor is stopping (or lost the partition) while the command waited to retry.

    Nothing is recorded: the command is redelivered to the partition's next
    owner, whose GET sees whatever effect a lost answer had.
    """


def _now() -> datetime:
    return datetime.now(UTC)


async def _sleep_unless(stopping: asyncio.Event, delay: float) -> None:
    if await sleep_unless_stopped(stopping, delay):
        raise Abandoned


class _Calls:
    """One command's API calls: counted, each given what is left of the command's
    time budget, and retried with capped backoff until that budget is spent."""

    def __init__(self, applier: Applier, command: CommandIssued, stopping: asyncio.Event) -> None:
        self.applier = applier
        self.command = command
        self.step: Step = command.step
        self.stopping = stopping
        self.started = applier.monotonic()
        self.made = 0
        self.retries = 0

    async def call(self, verb: str, path: str, body: Any, content_type: str) -> Answer:
        a = self.applier
        self.made += 1
        left = a.policy.budget_s - (a.monotonic() - self.started)
        timeout = max(1.0, min(a.request_timeout_s, left))
        return await a.transport(verb, path, body, content_type, timeout)

    async def backoff(self, answer: Answer) -> str | None:
        """Wait before trying again; or, if the wait would spend the budget, why
        the command gives up (the caller records it ``failed``)."""
        a = self.applier
        self.retries += 1
        delay = a.policy.delay(self.retries, a.rand)
        elapsed = a.monotonic() - self.started
        if not a.policy.allows(elapsed, delay):
            return f"gave up after {self.made} API calls in {elapsed:.1f}s: {describe(answer)}"
        if a.on_retry is not None:
            a.on_retry(self.step, answer.status)
        await a.sleep(self.stopping, delay)
        return None

    def result(
        self,
        outcome: Outcome,
        answer: Answer,
        message: str,
        *,
        wrote: bool = False,
        refusal: Refusal | None = None,
        pod: PodView | None = None,
    ) -> Result:
        """The command's result, after the calls made so far."""
        return Result(
            outcome=outcome,
            applied_at=self.applier._stamp(self.command),
            http_status=answer.status or None,
            message=message,
            attempts=max(self.made, 1),
            wrote=wrote,
            pod=pod,
            refusal=refusal,
        )

    async def wait_or_give_up(self, answer: Answer, pod: PodView | None = None) -> Result | None:
        """:meth:`backoff`, or the ``failed`` result if the budget is spent (with
        ``pod``, the pod as last read)."""
        gave_up = await self.backoff(answer)
        return None if gave_up is None else self.result("failed", answer, gave_up, pod=pod)


@dataclass
class Applier:
    transport: Transport
    policy: RetryPolicy
    request_timeout_s: float = 10.0
    on_retry: Callable[[Step, int], None] | None = None
    """Called with the step and the status (0: no answer) of each retried answer."""
    now: Callable[[], datetime] = _now
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[asyncio.Event, float], Awaitable[None]] = _sleep_unless
    rand: random.Random | None = None
    max_rechecks: int = 2

    def _stamp(self, command: CommandIssued) -> datetime:
        """``applied_at``: now, on the API server's clock, and never before the killer
        decided the command (each service's clock is a lower bound of the API server's,
        each with its own error of tens of milliseconds: without this, kill latency
        could read a few milliseconds below zero)."""
        return max(self.now(), command.decided_at)

    async def apply(self, command: CommandIssued, stopping: asyncio.Event) -> Result:
        """Apply ``command``; raises :class:`Abandoned` only if ``stopping`` is set."""
        if stopping.is_set():
            raise Abandoned
        if command.shadow:
            # Shadow mode: decided as a live run would, written by nobody.
            return Result(
                outcome="would-apply",
                applied_at=self._stamp(command),
                http_status=None,
                message=f"shadow mode: {command.step} not applied, no API call",
                attempts=0,
            )
        if (bad := invalid_names(command)) is not None:
            reason, why = bad
            return Result(
                outcome="refused",
                applied_at=self._stamp(command),
                http_status=None,
                message=f"refused, no API call: {why}",
                attempts=0,
                refusal=reason,
            )
        if command.step in JOB_STEPS:
            return await self._job_step(command, stopping)
        if command.pod_name is None or command.pod_uid is None:  # refused by invalid_names
            raise ValueError(f"{command.step} without a pod")
        pod_uid = command.pod_uid
        calls = _Calls(self, command, stopping)
        rechecks = 0
        step = command.step
        read = pod_path(command.namespace, command.pod_name)
        pod: PodView | None = None

        def done(
            outcome: Outcome,
            answer: Answer,
            message: str,
            *,
            wrote: bool = False,
            refusal: Refusal | None = None,
        ) -> Result:
            # The pod as read (or written), unless it is not the command's.
            mine = pod if outcome not in ("uid-mismatch", "refused") else None
            return calls.result(outcome, answer, message, wrote=wrote, refusal=refusal, pod=mine)

        # First, unless the killer did not know it, write without reading: its view
        # of the pod (uid and resourceVersion) and the command's Job (as the pod's
        # controller owner reference, at index 0) are the patch's ``test`` ops.
        # Accepted: the pod was exactly as the killer saw it and is its Job's, so the
        # step was needed (one call). Refused (422: it changed since, or is not that
        # Job's): read it and decide from what is there, ownership included. Only
        # the patch can carry the ownership test, and only with a Job uid: deletions
        # and commands without one are always read first.
        believed = (
            PodView(
                uid=pod_uid,
                resource_version=command.pod_resource_version,
                controller_index=0,
            )
            if command.pod_resource_version is not None
            and command.step == "set-active-deadline"
            and command.job_uid is not None
            else None
        )
        while True:
            unread = believed is not None
            if believed is not None:
                pod, believed = believed, None
            else:
                got = await calls.call("GET", read, None, JSON)
                verdict = classify(got.status, step=step, write=False)
                if verdict == "retry":
                    if (gave_up := await calls.wait_or_give_up(got, pod)) is not None:
                        return gave_up
                    continue
                if verdict == "gone":
                    return done(
                        "gone", got, f"pod {command.namespace}/{command.pod_name} not found"
                    )
                if verdict == "forbidden":
                    return done("forbidden", got, f"get pods denied: {got.message}")
                if verdict != "ok":
                    return done("failed", got, f"reading the pod: {describe(got)}")
                try:
                    pod = parse_pod(got.body)
                except BadPod as exc:
                    return done("failed", got, str(exc))
                if pod.uid != command.pod_uid:
                    return done(
                        "uid-mismatch",
                        got,
                        f"pod {command.namespace}/{command.pod_name} is now uid {pod.uid}, "
                        f"not {command.pod_uid}: not touched",
                    )
                if (disowned := not_owned(command, pod)) is not None:
                    return done(
                        "refused", got, f"refused, not written: {disowned}", refusal="not-owned"
                    )
            action = plan(command, pod)
            if isinstance(action, AlreadyDone):
                return done("applied", got, action.message)
            answer = await calls.call(action.verb, action.path, action.body, action.content_type)
            verdict = classify(answer.status, step=step, write=True)
            if verdict == "ok":
                if unread:  # the pod as written, for its Job's uid (a Status: keep ours)
                    with contextlib.suppress(BadPod):
                        pod = parse_pod(answer.body)
                return done("applied", answer, applied_message(command), wrote=True)
            if verdict == "retry":
                if (gave_up := await calls.wait_or_give_up(answer, pod)) is not None:
                    return gave_up
                continue  # from the GET: a write whose answer was lost may have landed
            if verdict == "recheck":
                # The unread write's refusal is expected (the pod changed since the
                # killer saw it): not counted against the rechecks of read writes.
                if not unread:
                    rechecks += 1
                if rechecks > self.max_rechecks:
                    return done("failed", answer, f"refused: {describe(answer)}")
                continue
            if verdict == "gone":
                return done("gone", answer, answer.message or "not found")
            if verdict == "forbidden":
                verb = "patch" if action.verb == "PATCH" else "delete"
                return done("forbidden", answer, f"{verb} pods denied: {answer.message}")
            return done("failed", answer, describe(answer))

    async def _job_step(self, command: CommandIssued, stopping: asyncio.Event) -> Result:
        """``fail-job``: read the Job, then write ``FailureTarget`` unless the Job's end
        is already decided (module docstring; :mod:`.job`). ``annotate-job``: read the
        Job, then write what it shows of its kill. Always read first: the killer's
        view of a Job's status is not kept precise enough to write blind."""
        calls = _Calls(self, command, stopping)
        rechecks = 0
        where = f"Job {command.namespace}/{command.job_name}"
        read = job_path(command.namespace, command.job_name)
        done = calls.result

        while True:
            got = await calls.call("GET", read, None, JSON)
            verdict = classify(got.status, step=command.step, write=False)
            if verdict == "retry":
                if (gave_up := await calls.wait_or_give_up(got)) is not None:
                    return gave_up
                continue
            if verdict == "gone":
                return done("gone", got, f"{where} not found")
            if verdict == "forbidden":
                return done("forbidden", got, f"get jobs denied: {got.message}")
            if verdict != "ok":
                return done("failed", got, f"reading the Job: {describe(got)}")
            try:
                job: JobView = parse_job(got.body)
            except BadJob as exc:
                return done("failed", got, str(exc))
            if job.uid != command.job_uid:
                return done(
                    "uid-mismatch",
                    got,
                    f"{where} is now uid {job.uid}, not {command.job_uid}: not touched",
                )
            action: StatusPatch | str
            if command.step == "annotate-job":
                action = plan_annotate_job(command, job)
            elif (elsewhere := managed_elsewhere(job)) is not None:
                return done(
                    "refused",
                    got,
                    f"refused, not written: {elsewhere}",
                    refusal="managed-elsewhere",
                )
            else:
                action = plan_fail_job(command, job, self.now())
            if isinstance(action, str):
                return done("applied", got, action)
            answer = await calls.call("PATCH", action.path, action.body, JSON_MERGE_PATCH)
            verdict = classify(answer.status, step=command.step, write=True)
            if verdict == "ok":
                return done("applied", answer, applied_message(command), wrote=True)
            if verdict == "retry":
                if (gave_up := await calls.wait_or_give_up(answer)) is not None:
                    return gave_up
                continue  # from the GET: a write whose answer was lost may have landed
            if verdict == "recheck":
                rechecks += 1
                if rechecks > self.max_rechecks:
                    return done("failed", answer, f"refused: {describe(answer)}")
                continue
            if verdict == "gone":
                return done("gone", answer, answer.message or f"{where} not found")
            if verdict == "forbidden":
                what = "jobs" if command.step == "annotate-job" else "jobs/status"
                return done(
                    "forbidden",
                    answer,
                    f"patch {what} denied: {answer.message} "
                    f"(grant the executor patch on {what} in group batch)",
                )
            return done("failed", answer, describe(answer))


def applied_message(command: CommandIssued) -> str:
    if command.step == "annotate-job":
        return f"the Job shows its kill {command.kill_state} ({KILL_STATE} and the others)"
    if command.step == "fail-job":
        return (
            "FailureTarget written on the Job: the Job controller stops creating pods, "
            "deletes the active ones and marks the Job Failed once none is terminating"
        )
    if command.step == "set-active-deadline":
        return f"activeDeadlineSeconds set to {command.active_deadline_seconds}"
    if command.step == "delete":
        grace = command.grace_period_seconds
        return (
            "deleted with the pod's own grace period"
            if grace is None
            else (f"deleted with grace period {grace}s")
        )
    return "force-deleted (grace period 0): its containers may still be running"


def describe(answer: Answer) -> str:
    if answer.status == 0:
        return f"no answer ({answer.reason}: {answer.message})"
    return f"HTTP {answer.status} {answer.reason}: {answer.message}".rstrip(": ")
