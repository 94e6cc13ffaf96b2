"""Commands the killer decided, and what the executor got applying them.

A pod step (``set-active-deadline``, ``delete``, ``force-delete``) targets one
pod and carries a UID precondition (``pod_uid``): a pod re-created under the
same name is never touched by a stale command. The Job step ``fail-job``
targets the Job itself (``job_uid`` is its precondition; no pod): it writes a
``FailureTarget`` condition so the Job controller stops creating pods and ends
the Job ``Failed`` with jobreaper's reason (docs/design/job-level-kill.md).
Command ids are derived from (job uid, pod uid or "", step, attempt), so
re-deciding after a crash reproduces the same ids and the executor drops
duplicates.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from .base import Message, UtcDatetime, job_key
from .topics import KILL_COMMANDS, KILL_RESULTS

Step = Literal["set-active-deadline", "delete", "force-delete", "fail-job", "annotate-job"]
"""A rung of the per-pod escalation ladder, or a Job-level step: ``fail-job`` (the
kill of the Job) or ``annotate-job`` (what the Job shows of its kill, ``core.show``)."""

JOB_STEPS: frozenset[str] = frozenset({"fail-job", "annotate-job"})
"""Steps that target the Job, not a pod: no ``pod_name``/``pod_uid``, ``job_uid`` required."""

Trigger = Literal[
    "Killed",
    "DeadlineExceeded",
    "PendingTimeout",
    "RunningTimeout",
    "JobFinished",
    "Suspended",
    "JobDeleted",
    "StuckTerminating",
    "NodeLost",
]
"""Why a Job (or, for ``StuckTerminating`` and ``NodeLost``, one pod) is being killed.
``NodeLost``: the pod's node was not ready or unreachable for
``deleteOnNodeLostAfterSeconds`` (its Job is not killed). ``JobFinished``:
Kubernetes already finished or failed the Job; the Job's own reason (e.g.
``BackoffLimitExceeded``) is then in the accompanying ``reason``."""

Rule = Literal[
    "ladder.active-deadline",
    "ladder.unscheduled-delete",
    "ladder.delete-method",
    "ladder.delete-after-timeout",
    "ladder.node-lost-delete",
    "ladder.node-lost-timeout",
    "ladder.force-delete",
    "ladder.force-delete-fenced",
    "job.failure-target",
    "job.show-kill",
]
"""Which rule made a command due (see ``core``): a ladder rule,
``job.failure-target`` for ``fail-job``, ``job.show-kill`` for ``annotate-job``."""

KillState = Literal["due", "killing", "killed", "cancelled"]
"""What a Job shows of its kill in its ``jobreaper.io/kill-state`` annotation:
``due`` (a kill time is set and in the future), ``killing`` (written with the
``FailureTarget``), ``killed`` (every pod of the kill ended), ``cancelled`` (a kill
shown due was cancelled or moved out of scope)."""


def is_none(value: object) -> bool:
    """``exclude_if`` of optional fields added after records existed: absent, the
    record is written as before (byte for byte, so a derived event id is unchanged)."""
    return value is None


def is_false(value: bool) -> bool:
    """``exclude_if`` of ``shadow``: a live record is written as before shadow mode
    existed (byte for byte, so a derived event id is unchanged)."""
    return not value


Shadow = Annotated[
    bool,
    Field(
        exclude_if=is_false,
        description=(
            "Decided under enforce: shadow (absent: false). Nothing is written: the"
            " executor records would-apply."
        ),
    ),
]
"""``shadow`` on commands and kill events."""

Outcome = Literal[
    "applied", "gone", "uid-mismatch", "forbidden", "failed", "refused", "would-apply"
]
"""``applied``: the API accepted it; ``gone``: 404, the pod no longer exists;
``uid-mismatch``: 409 on the UID precondition, the name now belongs to another pod;
``forbidden``: 403; ``failed``: anything else (retried with backoff); ``refused``: the
executor would not apply it and wrote nothing: a name that is not a valid Kubernetes
name (no API call at all), a pod not owned by the command's Job, or (``fail-job``) a
Job managed by another controller (``spec.managedBy``) (``message`` says which).
Final: the killer does not re-issue a refused step, nor counts the pod gone. For
``fail-job``, ``gone`` and ``uid-mismatch`` are about the Job.
``would-apply``: a ``shadow`` command, not applied on purpose (no API call at all);
the killer's ladder goes on by its clock as if it had been applied and the pod
had not died."""


def _check_target(
    step: str, job_uid: str | None, pod_name: str | None, pod_uid: str | None
) -> None:
    """A pod step names its pod; the Job step names no pod and pins the Job's uid."""
    if step in JOB_STEPS:
        if pod_name is not None or pod_uid is not None:
            raise ValueError(f"{step} targets the Job: pod_name and pod_uid must be absent")
        if not job_uid:
            raise ValueError(f"{step} requires job_uid (its precondition)")
    elif pod_name is None or pod_uid is None:
        raise ValueError(f"{step} targets a pod: pod_name and pod_uid are required")


class CommandIssued(Message):
    """The killer decided one step against one pod (or, ``fail-job``, its Job)."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.command.issued.v1"
    TOPIC: ClassVar[str] = KILL_COMMANDS

    command_id: str
    """Derived: a short sha256 hex of (job uid, pod uid or "", step, attempt)."""
    step: Step
    namespace: str
    job_name: str
    job_uid: str | None = None
    """Required for ``fail-job``: the UID precondition on the Job."""
    pod_name: str | None = None
    """Required for a pod step; absent for ``fail-job``."""
    pod_uid: str | None = None
    """The UID precondition: the command applies to this pod object only (a pod
    step; absent for ``fail-job``)."""
    pod_resource_version: str | None = None
    """The pod's resourceVersion in the killer's newest observation of it, on
    ``set-active-deadline`` commands. The executor writes with it as a
    precondition without reading the pod first (one API call); if the pod changed
    since, the write is refused and the executor reads the pod and decides from
    what is there. ``None`` (the deletions, whose pods change in ways the watcher
    does not publish): read first."""
    active_deadline_seconds: PositiveInt | None = None
    """For ``set-active-deadline``: the new ``spec.activeDeadlineSeconds`` (only ever lowered)."""
    grace_period_seconds: NonNegativeInt | None = None
    """For ``delete``: ``None`` keeps the pod's own grace period; ``force-delete``: 0."""
    trigger: Trigger
    reason: str
    """The result reason: the trigger's name, or the Job's own reason for ``JobFinished``."""
    rule: Rule
    config_version: NonNegativeInt
    """The configuration snapshot version the decision was made under (0: built-in defaults)."""
    due_at: UtcDatetime
    """When the rule made the step due; kill latency is ``applied_at - due_at``."""
    decided_at: UtcDatetime
    """The ``now`` the core decided with (never earlier than ``due_at``)."""
    attempt: PositiveInt = 1
    """1 for the first try; a ``failed`` result may be retried with ``attempt + 1``."""
    shadow: Shadow = False
    """Decided for a Job under ``enforce: shadow``: the executor makes no API call and
    records ``would-apply``. The id is the one a live run issues for the same step."""
    kill_state: Annotated[KillState | None, Field(exclude_if=is_none)] = None
    """For ``annotate-job``: the state the Job's annotations are to show (for
    ``killed``, ``decided_at`` is when the kill ended)."""
    kill_due_at: Annotated[UtcDatetime | None, Field(exclude_if=is_none)] = None
    """For ``annotate-job``: when the kill is (or was) due. Its ``due_at`` is when the
    step itself was due, as for every command (never after ``decided_at``)."""

    @model_validator(mode="after")
    def _target(self) -> CommandIssued:
        _check_target(self.step, self.job_uid, self.pod_name, self.pod_uid)
        if (self.step == "annotate-job") != (self.kill_state is not None):
            raise ValueError("kill_state is required for annotate-job and only there")
        if (self.kill_state is None) != (self.kill_due_at is None):
            raise ValueError("kill_due_at goes with kill_state")
        return self

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class CommandApplied(Message):
    """The executor applied (or failed to apply) a command."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.command.applied.v1"
    TOPIC: ClassVar[str] = KILL_RESULTS

    command_id: str
    step: Step
    namespace: str
    job_name: str
    job_uid: str | None = None
    pod_name: str | None = None
    """As in the command: absent for ``fail-job``."""
    pod_uid: str | None = None
    attempt: PositiveInt = 1
    """The command's attempt this result is for."""
    outcome: Outcome
    applied_at: UtcDatetime
    http_status: int | None = None
    message: str = ""
    attempts: NonNegativeInt = 1
    """API calls the executor made for this command (its own transient retries);
    0 for a command ``refused`` before any call (an invalid name)."""
    wrote: bool | None = None
    """Whether one of its writes was accepted by the API server; ``False``: the
    effect was already there (nothing written) or the write was refused;
    ``None``: not recorded (results of executors older than this field)."""

    @model_validator(mode="after")
    def _target(self) -> CommandApplied:
        _check_target(self.step, self.job_uid, self.pod_name, self.pod_uid)
        return self

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


COMMANDS: tuple[type[Message], ...] = (CommandIssued, CommandApplied)

__all__ = [
    "COMMANDS",
    "JOB_STEPS",
    "CommandApplied",
    "CommandIssued",
    "KillState",
    "Outcome",
    "Rule",
    "Shadow",
    "Step",
    "Trigger",
]
