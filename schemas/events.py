"""The public kill events on ``kill.events``: the stable stream to subscribe to.

Per Job and kill *episode* (a Job may be killed again if Kubernetes creates
new pods after a kill, e.g. a replacement pod under ``backoffLimit``):
``KillStarted`` (one or more: later ones add pods that joined the episode),
``KillStep`` for every command decided, at most one ``ForceDeletionForbidden``
per pod, and ``JobKilled`` once every pod of the episode is done.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from .base import Message, UtcDatetime, job_key
from .commands import Rule, Step, Trigger
from .topics import KILL_EVENTS

PodEnd = Literal["exited", "deleted", "force-deleted", "already-done"]
"""How a pod of a killed Job ended: ``exited`` (its containers stopped, e.g. on the
active deadline), ``deleted`` (gone through a graceful API deletion, ours or
anyone's), ``force-deleted`` (removed with grace period 0: its containers may
still be running), ``already-done`` (it had finished before the kill started)."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class PodRef(_Part):
    """A pod, by name and uid."""

    name: str
    uid: str


class PodEnding(_Part):
    """How one pod of a killed Job ended."""

    name: str
    uid: str
    ended: PodEnd


class KillStarted(Message):
    """The killer started killing (some pods of) a Job."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.kill.started.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    namespace: str
    job_name: str
    job_uid: str | None = None
    episode: PositiveInt = 1
    """Numbers the kills of this Job object; a repeated episode number adds pods."""
    trigger: Trigger
    reason: str
    due_at: UtcDatetime
    """When the trigger fired (e.g. the kill timestamp, the deadline)."""
    decided_at: UtcDatetime
    """``K`` for the pods listed: the time the killer decided to kill them."""
    pods: tuple[PodRef, ...] = ()
    """Pods that are killed from now on."""
    already_done: tuple[PodRef, ...] = ()
    """Pods of the Job that had already finished when this episode started."""

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class KillStep(Message):
    """The killer decided one ladder step on a pod (mirrors a ``CommandIssued``)."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.kill.step.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    namespace: str
    job_name: str
    job_uid: str | None = None
    pod_name: str
    pod_uid: str
    command_id: str
    step: Step
    attempt: PositiveInt = 1
    trigger: Trigger
    reason: str
    rule: Rule
    config_version: NonNegativeInt = 0
    due_at: UtcDatetime
    decided_at: UtcDatetime

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class ForceDeletionForbidden(Message):
    """A pod is stuck in deletion past the force timeout, but force deletion is
    forbidden (``jobreaper.io/forbid-force-deletion: "true"`` on its Job or on
    itself). Emitted once per pod; the killer then waits for the pod to end."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.force-deletion.forbidden.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    namespace: str
    job_name: str
    job_uid: str | None = None
    pod_name: str
    pod_uid: str
    forbidden_by: Literal["job", "pod"]
    trigger: Trigger
    reason: str
    since: UtcDatetime
    """The pod's ``deletionTimestamp``: stuck in deletion since then."""
    due_at: UtcDatetime
    """When the force deletion would have been due."""
    decided_at: UtcDatetime

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class JobKilled(Message):
    """Every pod of a kill episode is done: the Job is killed."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.job.killed.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    namespace: str
    job_name: str
    job_uid: str | None = None
    episode: PositiveInt = 1
    trigger: Trigger
    reason: str
    killed_at: UtcDatetime
    """When the last pod was seen done."""
    decided_at: UtcDatetime
    pods: tuple[PodEnding, ...] = ()

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


KILL_EVENT_TYPES: tuple[type[Message], ...] = (
    KillStarted,
    KillStep,
    ForceDeletionForbidden,
    JobKilled,
)
