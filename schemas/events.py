"""The public kill events on ``kill.events``: the stable stream to subscribe to.

Per Job and kill *episode* (a Job may be killed again if Kubernetes creates
new pods after a kill, e.g. a replacement pod under ``backoffLimit``):
``KillStarted`` (one or more: later ones add pods that joined the episode),
``KillStep`` for every command decided, at most one ``ForceDeletionForbidden``
per pod, at most one ``ForceDeletionHeld`` per pod and reason it waits, and
``JobKilled`` once every pod of the episode is done.

``KillStarted`` and ``JobKilled`` about more than ``MAX_PODS_PER_PART`` (1,000)
pods are written as several records, ``part`` 1..``parts``, consecutive in the
same partition and transaction, each with the same fields but a slice of the pod
lists (see :mod:`schemas.parts`). A subscriber that ignores ``part``/``parts``
sees each part as an event about fewer pods (a ``JobKilled`` part still means
the whole episode is done); one that wants every pod concatenates the lists of
the parts with the same Job uid, episode and ``decided_at``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from .base import Message, UtcDatetime, job_key
from .commands import Rule, Shadow, Step, Trigger
from .config import ForceDeletePolicy
from .parts import (
    MAX_PODS_PER_PART,
    PART_TARGET_BYTES,
    is_one,
    json_bytes,
    pod_entry_bytes,
    split,
)
from .topics import KILL_EVENTS

PodEnd = Literal["exited", "deleted", "force-deleted", "already-done"]
"""How a pod of a killed Job ended: ``exited`` (its containers stopped, e.g. on the
active deadline), ``deleted`` (gone through a graceful API deletion, ours or
anyone's), ``force-deleted`` (removed with grace period 0: its containers may
still be running), ``already-done`` (it had finished before the kill started)."""


EventPart = Annotated[
    PositiveInt,
    Field(
        exclude_if=is_one,
        description=(
            "Which record of the event this is, 1..parts (absent: 1). An event about more"
            f" than {MAX_PODS_PER_PART:,} pods is split over several records with the same"
            " fields, each listing a slice of the pods, in order."
        ),
    ),
]
"""``part`` of a ``KillStarted`` or ``JobKilled`` split in parts."""
EventParts = Annotated[
    PositiveInt,
    Field(
        exclude_if=is_one,
        description="How many records the event is split over (absent: 1, the whole event).",
    ),
]


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
    part: EventPart = 1
    parts: EventParts = 1
    shadow: Shadow = False

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
    shadow: Shadow = False
    """Mirrors the command's: nothing will be written (shadow mode)."""

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
    forbidden_by: Literal["job", "pod", "policy"]
    """``job`` / ``pod``: the annotation; ``policy``: ``forceDeletePolicy: never``."""
    trigger: Trigger
    reason: str
    since: UtcDatetime
    """The pod's ``deletionTimestamp``: stuck in deletion since then."""
    due_at: UtcDatetime
    """When the force deletion would have been due."""
    decided_at: UtcDatetime
    shadow: Shadow = False
    """In shadow mode: the deletion it waited on was a would-apply one (nothing stuck)."""

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class ForceDeletionHeld(Message):
    """A force deletion is held back: the pod is stuck in deletion and would be
    force-deleted now, but it waits for ``waits_for``:

    * ``fence``: ``forceDeletePolicy: whenFenced`` and its node is not fenced (not
      deleted, no ``node.kubernetes.io/out-of-service`` taint, not unreachable past
      ``fenceUnreachableAfterSeconds``); emitted when the force timeout passes;
    * ``rate-limit``: its killer partition decided its limit of force deletions in
      the last second (``maxForceDeletionsPerSecondPerPartition``); ``until`` says
      when a slot frees;
    * ``guard``: the mass-disruption guard is tripped for its node's zone
      (:class:`ForceDeletionPaused`) and its node is not fenced by an administrator;
      it goes when the guard lifts (nodes back, or ``jobreaper force resume``).
    * ``volume``: it mounts a ReadWriteOnce or ReadWriteOncePod PersistentVolumeClaim,
      its node is not fenced, and neither it nor its Job says
      ``jobreaper.io/safe-to-force-delete: "true"``; emitted when the force deletion
      would have come; released by a fence only.

    Emitted once per pod and ``waits_for``; the release is the ``KillStep`` of its
    ``force-delete`` (rule ``ladder.force-delete-fenced`` when a fence released it)."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.force-deletion.held.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    namespace: str
    job_name: str
    job_uid: str | None = None
    pod_name: str
    pod_uid: str
    node_name: str | None = None
    waits_for: Literal["fence", "rate-limit", "guard", "volume"]
    policy: ForceDeletePolicy
    trigger: Trigger
    reason: str
    since: UtcDatetime
    """The pod's ``deletionTimestamp``: stuck in deletion since then."""
    due_at: UtcDatetime
    """When the force deletion would have been due without the hold."""
    until: UtcDatetime | None = None
    """``rate-limit``: the earliest time it may go; ``fence``, ``volume``: none (the
    fence's)."""
    decided_at: UtcDatetime
    shadow: Shadow = False

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
    part: EventPart = 1
    parts: EventParts = 1
    shadow: Shadow = False

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


FIELDS_BYTES: Final = 400
"""A bound on the bytes of a ``KillStarted``/``JobKilled`` JSON besides its strings,
its ``episode`` and its pod lists: field names, punctuation, ``null``s, two or
three instants (27 characters each at most), ``part`` and ``parts``."""


def fixed_bytes(event: KillStarted | JobKilled) -> int:
    """A bound on the bytes every part of ``event`` repeats: all but its pods. Counted
    from the strings rather than by serializing, so that it never raises (the core
    calls it, and must not raise on any value the edge lets through)."""
    strings = (event.namespace, event.job_name, event.job_uid or "", event.trigger, event.reason)
    return FIELDS_BYTES + sum(json_bytes(text) for text in strings) + len(str(event.episode))


def kill_started_parts(
    event: KillStarted, pods: tuple[PodRef, ...], already_done: tuple[PodRef, ...]
) -> tuple[KillStarted, ...]:
    """``event`` (its ``pods`` and ``already_done`` ignored) about these pods, as one
    record or as parts of at most ``MAX_PODS_PER_PART`` pods and ``PART_TARGET_BYTES``:
    ``pods`` first, then ``already_done``, in the order given."""
    entries = [(True, p) for p in pods] + [(False, p) for p in already_done]
    budget = PART_TARGET_BYTES - fixed_bytes(event)
    slices = split(
        entries,
        lambda e: pod_entry_bytes(e[1].name, e[1].uid),
        max_items=MAX_PODS_PER_PART,
        max_bytes=budget,
    )
    parts = len(slices)
    return tuple(
        event.model_copy(
            update={
                "pods": tuple(p for started, p in chunk if started),
                "already_done": tuple(p for started, p in chunk if not started),
                "part": number,
                "parts": parts,
            }
        )
        for number, chunk in enumerate(slices, 1)
    )


def job_killed_parts(event: JobKilled, pods: tuple[PodEnding, ...]) -> tuple[JobKilled, ...]:
    """``event`` (its ``pods`` ignored) about these pods, as one record or as parts
    (as :func:`kill_started_parts`)."""
    budget = PART_TARGET_BYTES - fixed_bytes(event)
    slices = split(
        pods,
        lambda p: pod_entry_bytes(p.name, p.uid),
        max_items=MAX_PODS_PER_PART,
        max_bytes=budget,
    )
    parts = len(slices)
    return tuple(
        event.model_copy(update={"pods": tuple(chunk), "part": number, "parts": parts})
        for number, chunk in enumerate(slices, 1)
    )


GUARD_KEY: Final = "jobreaper.io/force-guard"
"""The record key of the guard's events (they are about a zone, not a Job)."""
MAX_GUARD_NODES: Final = 100
"""A guard event names at most this many nodes (``silent_nodes`` counts them all)."""


class ForceDeletionPaused(Message):
    """The mass-disruption guard tripped for ``zone``: at least
    ``massDisruptionMinNodes`` of its nodes, and at least ``massDisruptionFraction``
    of them, turned silent (not ready, unreachable) within
    ``massDisruptionWindowSeconds``, and no administrator fenced them. Until it lifts
    (:class:`ForceDeletionResumed`) no pod on a node of the zone is force-deleted
    unless its node is fenced by an administrator (Node deleted, or tainted
    ``node.kubernetes.io/out-of-service``). One per tripping, from killer partition 0
    (every partition decides the guard alike from the node observations, and holds
    its pods: ``ForceDeletionHeld`` ``waits_for: guard``)."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.force-deletion.paused.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    zone: str
    """The ``topology.kubernetes.io/zone`` of the nodes; ``""``: nodes without one
    (the whole cluster when no node carries the label)."""
    tripped_at: UtcDatetime
    """When the threshold was reached: the observation of the silent node that
    reached it (the watcher's clock)."""
    silent_nodes: NonNegativeInt
    """Nodes of the zone silent in the tripping window (not fenced, not resumed)."""
    zone_nodes: NonNegativeInt
    """Nodes of the zone (Node objects not deleted)."""
    nodes: tuple[str, ...] = ()
    """The silent nodes' names, sorted (at most ``MAX_GUARD_NODES``)."""
    min_nodes: NonNegativeInt
    fraction: float
    window_seconds: NonNegativeInt
    config_version: NonNegativeInt
    decided_at: UtcDatetime

    def kafka_key(self) -> str:
        return GUARD_KEY


class ForceDeletionResumed(Message):
    """The guard of ``zone`` lifted: force deletion there goes on (held pods go, within
    the rate limit). ``cause``: ``nodes-returned`` (fewer silent nodes than the
    threshold now: nodes came back, were fenced or deleted, or the configuration
    changed) or ``operator`` (``jobreaper force resume``: ``requested_by``,
    ``requested_at``)."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.force-deletion.resumed.v1"
    TOPIC: ClassVar[str] = KILL_EVENTS

    zone: str
    tripped_at: UtcDatetime
    """The ``tripped_at`` of the ``ForceDeletionPaused`` it ends."""
    cause: Literal["nodes-returned", "operator"]
    requested_by: str | None = None
    requested_at: UtcDatetime | None = None
    decided_at: UtcDatetime

    def kafka_key(self) -> str:
        return GUARD_KEY


KILL_EVENT_TYPES: tuple[type[Message], ...] = (
    KillStarted,
    KillStep,
    ForceDeletionForbidden,
    ForceDeletionHeld,
    JobKilled,
    ForceDeletionPaused,
    ForceDeletionResumed,
)
