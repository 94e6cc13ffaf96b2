"""The Job-level steps: the Job as far as they care, and their one write each.

``fail-job`` writes the kill on the Job's status; ``annotate-job`` (rule
*job.show-kill*, ``core.show``) writes what the Job shows of its kill in its
annotations (``fail-job`` writes the ``killing`` ones in the same status write: the
status subresource of a Job keeps metadata changes).

jobreaper does not own ``batch/v1`` Jobs, so it does not end them itself: it
writes a ``FailureTarget`` condition on the Job's status and the Job controller
does the rest (stops creating pods, deletes the active ones, and writes
``Failed`` with our reason once no pod is terminating). Why this call and not a
spec change, a suspension or a deletion: docs/design/job-level-kill.md.

Pure: :func:`parse_job` reads a GET's body, :func:`plan_fail_job` decides the
write (or that there is none); the loop is :class:`~.apply.Applier`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.commands import CommandIssued

JSON_MERGE_PATCH = "application/merge-patch+json"

JOB_CONTROLLER = "kubernetes.io/job-controller"
"""The ``spec.managedBy`` value (or its absence) under which the Job controller acts."""

FINISHING_CONDITIONS = frozenset({"FailureTarget", "SuccessCriteriaMet", "Complete", "Failed"})
"""Conditions after which the Job's end is decided: never written over (a merge of
ours would replace the controller's reason, measured), and 422 if we tried on a
succeeding Job."""

REASON_PREFIX = "JobReaper"

KILL_STATE = "jobreaper.io/kill-state"
KILL_TRIGGER = "jobreaper.io/kill-trigger"
KILL_DUE_AT = "jobreaper.io/kill-due-at"
KILLED_AT = "jobreaper.io/killed-at"
SHOWN = (KILL_STATE, KILL_TRIGGER, KILL_DUE_AT, KILLED_AT)
"""What a Job shows of its kill (docs/user-guide.md). jobreaper writes them and never
reads them back: a user editing them changes nothing but what the Job shows."""


def rfc3339(value: datetime) -> str:
    """UTC, to the microsecond when there are any (a due time shown to the second would
    read earlier than it is)."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{value.microsecond:06d}Z" if value.microsecond else f"{text}Z"


def shown_annotations(command: CommandIssued) -> dict[str, str | None]:
    """The annotations for the kill state the command carries (``fail-job``: killing).
    ``None`` removes one (a merge patch's null)."""
    state = command.kill_state or "killing"
    due = command.kill_due_at or command.due_at
    return {
        KILL_STATE: state,
        KILL_TRIGGER: command.trigger,
        KILL_DUE_AT: rfc3339(due),
        KILLED_AT: rfc3339(command.decided_at) if state == "killed" else None,
    }


@dataclass(frozen=True)
class JobView:
    uid: str
    resource_version: str | None
    managed_by: str | None
    conditions: tuple[dict[str, Any], ...]
    """``status.conditions`` as read, kept whole: a merge patch replaces the list."""

    def finishing(self) -> dict[str, Any] | None:
        """The first condition that already decides the Job's end, if any."""
        for cond in self.conditions:
            if cond.get("type") in FINISHING_CONDITIONS and cond.get("status") == "True":
                return cond
        return None


class BadJob(ValueError):
    """A GET answered with something that is not a Job."""


def parse_job(body: bytes) -> JobView:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadJob(f"the Job is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadJob("the Job is not a JSON object")
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict) or not isinstance(status, dict):
        raise BadJob("the Job's metadata, spec or status is not an object")
    uid = meta.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadJob("the Job has no metadata.uid")
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise BadJob("the Job's status.conditions is not a list of objects")
    rv = meta.get("resourceVersion")
    managed_by = spec.get("managedBy")
    return JobView(
        uid=uid,
        resource_version=rv if isinstance(rv, str) else None,
        managed_by=managed_by if isinstance(managed_by, str) and managed_by else None,
        conditions=tuple(conditions),
    )


def job_path(namespace: str, name: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"


def condition_reason(trigger: str) -> str:
    """The condition's reason, an interface users see in ``kubectl`` and may match on:
    ``JobReaper`` + the trigger (``JobReaperKilled``, ``JobReaperPendingTimeout``,
    ``JobReaperRunningTimeout``): CamelCase, as Kubernetes requires of a reason."""
    return REASON_PREFIX + trigger


def condition_message(command: CommandIssued) -> str:
    due = command.due_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    why = (
        command.trigger
        if command.reason == command.trigger
        else (f"{command.trigger}: {command.reason}")
    )
    return f"killed by jobreaper: {why} (due {due}, command {command.command_id})"


def managed_elsewhere(job: JobView) -> str | None:
    """Why the Job controller would never act on our condition, or None."""
    if job.managed_by is None or job.managed_by == JOB_CONTROLLER:
        return None
    return (
        f"spec.managedBy is {job.managed_by!r}: the Job controller ignores this Job, "
        "so a FailureTarget would never end it (the pod ladder alone acts)"
    )


@dataclass(frozen=True)
class StatusPatch:
    path: str
    body: dict[str, Any]


def plan_fail_job(command: CommandIssued, job: JobView, now: datetime) -> StatusPatch | str:
    """The status write that fails ``job`` (uid matched, managed by the Job
    controller), or why none is needed (its end is already decided).

    A merge patch replaces ``status.conditions`` whole: it carries the conditions
    as read plus ours, and ``metadata.resourceVersion`` as a precondition, so a
    condition the controller added since is never dropped (409, read again)."""
    already = job.finishing()
    if already is not None:
        return (
            f"the Job already has {already.get('type')}=True "
            f"(reason {already.get('reason') or '-'}): not written"
        )
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    ours = {
        "type": "FailureTarget",
        "status": "True",
        "reason": condition_reason(command.trigger),
        "message": condition_message(command),
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }
    return StatusPatch(
        path=job_path(command.namespace, command.job_name) + "/status",
        body={
            "metadata": _shown_at_version(command, job),
            "status": {"conditions": [*job.conditions, ours]},
        },
    )


def _shown_at_version(command: CommandIssued, job: JobView) -> dict[str, Any]:
    """The metadata both Job writes carry: what the Job shows of its kill, and the
    version read as a precondition (a Job changed since: 409, read again)."""
    metadata: dict[str, Any] = {"annotations": shown_annotations(command)}
    if job.resource_version is not None:
        metadata["resourceVersion"] = job.resource_version
    return metadata


def plan_annotate_job(command: CommandIssued, job: JobView) -> StatusPatch:
    """``annotate-job``: the annotations of the command's kill state, on the Job read
    (its uid matched), at the version read (409: read again). Also on a Job managed
    by another controller: annotations are not the Job controller's business."""
    return StatusPatch(
        path=job_path(command.namespace, command.job_name),
        body={"metadata": _shown_at_version(command, job)},
    )
