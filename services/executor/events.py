"""Kubernetes Events (``events.k8s.io/v1``) telling a pod's and its Job's story.

``kubectl describe job`` and ``kubectl describe pod`` then show what jobreaper
did and why. Names are derived from the command id, so a redelivered command
re-creates the same Event (409 AlreadyExists, ignored) instead of a second one.
Creating an Event never blocks nor fails the command: failures are logged and
counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from schemas.commands import CommandIssued
from services.runtime.logging import get_logger

from .apply import Answer, Result, Transport, describe
from .metrics import ExecutorMetrics

log = get_logger(__name__)

REPORTING_CONTROLLER = "jobreaper.io/executor"
NOTE_LIMIT = 1024
NAME_LIMIT = 253

REASONS = {
    "set-active-deadline": "JobreaperActiveDeadlineSet",
    "delete": "JobreaperDeleted",
    "force-delete": "JobreaperForceDeleted",
    "fail-job": "JobreaperFailureTarget",
}
SHOWN_REASONS = {
    "due": "JobreaperKillDue",
    "cancelled": "JobreaperKillCancelled",
    "killed": "JobreaperKilled",
}
"""``annotate-job``: one Event per kill state shown, so ``kubectl describe job`` tells the
kill's story in order (killing: the ``fail-job`` Event)."""
FAILED_REASON = "JobreaperKillFailed"
FORBIDDEN_REASON = "JobreaperKillForbidden"


def micro_time(result: Result) -> str:
    return result.applied_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(object_name: str, command_id: str) -> str:
    suffix = f".jr-{command_id[:16]}"
    return f"{object_name[: NAME_LIMIT - len(suffix)]}{suffix}"


def reason_for(command: CommandIssued, result: Result) -> tuple[str, str] | None:
    """(reason, type) of the Event for a result, or None when there is nothing to tell."""
    if result.outcome == "applied":
        if command.step == "annotate-job":
            return SHOWN_REASONS.get(command.kill_state or "", "JobreaperKillShown"), "Normal"
        kind = "Warning" if command.step == "force-delete" else "Normal"
        return REASONS[command.step], kind
    if result.outcome == "failed":
        return FAILED_REASON, "Warning"
    if result.outcome == "forbidden":
        return FORBIDDEN_REASON, "Warning"
    # gone, uid-mismatch: the pod this was about no longer exists. refused: the
    # command named something that is not a valid name, or a pod that is not its
    # Job's: no Event on an object the command had no business with (whoever can
    # write kill.commands must not be able to post Events anywhere); the result,
    # the executor.refused log and jobreaper_executor_refused_total tell it.
    return None


def note(command: CommandIssued, result: Result) -> str:
    text = (
        f"{command.step} {result.outcome}: {result.message} "
        f"[trigger {command.trigger}, reason {command.reason}, rule {command.rule}, "
        f"config v{command.config_version}, command {command.command_id}, "
        f"attempt {command.attempt}, "
        + (f"pod {command.pod_name}]" if command.pod_name is not None else "Job-level]")
    )
    return text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - 3] + "..."


def event_bodies(command: CommandIssued, result: Result, instance: str) -> list[dict[str, Any]]:
    """The Events for one result: one on the pod, one on its Job (``fail-job``: one,
    on the Job)."""
    kind = reason_for(command, result)
    if kind is None:
        return []
    reason, event_type = kind
    job_uid = command.job_uid or (result.pod.job_uid if result.pod else None)
    job_ref: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": command.namespace,
        "name": command.job_name,
    }
    if job_uid:
        job_ref["uid"] = job_uid
    common = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "eventTime": micro_time(result),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": command.step,
        "reason": reason,
        "type": event_type,
        "note": note(command, result),
    }
    targets: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        (command.job_name, job_ref, None)
    ]
    if command.pod_name is not None:
        pod_ref: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": command.namespace,
            "name": command.pod_name,
            "uid": command.pod_uid,
        }
        targets = [(command.pod_name, pod_ref, job_ref), (command.job_name, job_ref, pod_ref)]
    return [
        {
            **common,
            "metadata": {
                "name": event_name(name, command.command_id),
                "namespace": command.namespace,
            },
            "regarding": regarding,
            **({"related": related} if related is not None else {}),
        }
        for name, regarding, related in targets
    ]


@dataclass
class EventRecorder:
    """Creates Events in the background, a bounded number at a time."""

    transport: Transport
    metrics: ExecutorMetrics
    instance: str
    timeout_s: float = 5.0
    max_pending: int = 1000

    def __post_init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(8)

    def record(self, command: CommandIssued, result: Result) -> None:
        for body in event_bodies(command, result, self.instance):
            self.post(body)

    def post(self, body: dict[str, Any]) -> None:
        """Create one Event in the background (dropped, and counted, when too many wait)."""
        if len(self._tasks) >= self.max_pending:
            self.metrics.events.labels("dropped").inc()
            return
        task = asyncio.create_task(self._create(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        async with self._slots:
            try:
                answer: Answer = await self.transport(
                    "POST", path, body, "application/json", self.timeout_s
                )
            except Exception as exc:  # never let an Event hurt a command
                answer = Answer(0, type(exc).__name__, str(exc))
        if 200 <= answer.status < 300:
            self.metrics.events.labels("created").inc()
        elif answer.status == 409:
            self.metrics.events.labels("exists").inc()
        else:
            self.metrics.events.labels("failed").inc()
            hint = (
                " (grant the executor create on events.events.k8s.io)"
                if answer.status == 403
                else ""
            )
            log.warning(
                "executor.event_failed",
                k8s_event=body["metadata"]["name"],
                namespace=namespace,
                error=describe(answer) + hint,
            )

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) for the Events in flight, e.g. at shutdown."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
