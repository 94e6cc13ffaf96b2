"""Commands the killer decided, and what the executor got applying them.

A command targets one pod and carries a UID precondition (``pod_uid``): a pod
re-created under the same name is never touched by a stale command. Command
ids are derived from (job uid, pod uid, step, attempt), so re-deciding after a
crash reproduces the same ids and the executor drops duplicates.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import NonNegativeInt, PositiveInt

from .base import Message, UtcDatetime, job_key
from .topics import KILL_COMMANDS, KILL_RESULTS

Step = Literal["set-active-deadline", "delete", "force-delete"]
"""A rung of the escalation ladder."""

Trigger = Literal[
    "Killed",
    "DeadlineExceeded",
    "PendingTimeout",
    "RunningTimeout",
    "JobFinished",
    "Suspended",
    "JobDeleted",
    "StuckTerminating",
]
"""Why a Job (or, for ``StuckTerminating``, one pod) is being killed. ``JobFinished``:
Kubernetes already finished or failed the Job; the Job's own reason (e.g.
``BackoffLimitExceeded``) is then in the accompanying ``reason``."""

Rule = Literal[
    "ladder.active-deadline",
    "ladder.unscheduled-delete",
    "ladder.delete-method",
    "ladder.delete-after-timeout",
    "ladder.node-lost-delete",
    "ladder.force-delete",
]
"""Which ladder rule made a command due (see ``core``)."""

Outcome = Literal["applied", "gone", "uid-mismatch", "forbidden", "failed", "refused"]
"""``applied``: the API accepted it; ``gone``: 404, the pod no longer exists;
``uid-mismatch``: 409 on the UID precondition, the name now belongs to another pod;
``forbidden``: 403; ``failed``: anything else (retried with backoff); ``refused``: the
executor would not apply it and wrote nothing: a name that is not a valid Kubernetes
name (no API call at all), or a pod not owned by the command's Job (``message`` says
which). Final: the killer does not re-issue a refused step, nor counts the pod gone."""


class CommandIssued(Message):
    """The killer decided one step against one pod."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.command.issued.v1"
    TOPIC: ClassVar[str] = KILL_COMMANDS

    command_id: str
    """Derived: a short sha256 hex of (job uid, pod uid, step, attempt)."""
    step: Step
    namespace: str
    job_name: str
    job_uid: str | None = None
    pod_name: str
    pod_uid: str
    """The UID precondition: the command applies to this pod object only."""
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
    pod_name: str
    pod_uid: str
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

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


COMMANDS: tuple[type[Message], ...] = (CommandIssued, CommandApplied)

__all__ = [
    "COMMANDS",
    "CommandApplied",
    "CommandIssued",
    "Outcome",
    "Rule",
    "Step",
    "Trigger",
]
