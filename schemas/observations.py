"""Observations: the facts the watcher saw in the Kubernetes API.

Pods and Jobs travel on ``k8s.objects`` keyed ``namespace/job-name`` (so one
Job's history stays ordered in one partition); Nodes travel on ``k8s.nodes``
keyed by node name. Each observation carries a *slim* copy of the object:
only what the killer needs, parsed straight from the watch line.

``change`` says how the watcher learned about the object:

* ``added`` / ``modified`` / ``deleted``: a watch event;
* ``synthetic-modified`` / ``synthetic-deleted``: found by a re-list after a
  missed watch window (``410 Gone``), by diffing the list against what the
  watcher knew. For ``synthetic-deleted`` the watcher puts the *list's*
  ``resourceVersion`` in ``resource_version`` (the object's own last version
  is unknowable), so ordering by resource version still holds;
* ``refreshed``: not a change. The newest observation of a live object,
  published again, unchanged (same ``resource_version`` and ``observed_at``),
  because its record on the topic is getting old: the topics delete records
  after their retention, and an object that does not change would otherwise
  vanish from the log while it still exists. A consumer that already folded
  that resource version drops it as a duplicate; one that reads the log after
  the older records expired learns the object from it.

Resource versions are opaque strings in the Kubernetes API; in practice they
are etcd revisions (decimal integers). Consumers compare them as integers
when both are decimal and otherwise treat the order as unknown.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from .base import Message, UtcDatetime, job_key
from .topics import K8S_NODES, K8S_OBJECTS

Change = Literal[
    "added", "modified", "deleted", "synthetic-modified", "synthetic-deleted", "refreshed"
]
"""How an observation was made: a watch event, a re-list diff (``synthetic-*``), or
the newest observation published again before retention deletes it (``refreshed``)."""

DELETED_CHANGES: frozenset[str] = frozenset({"deleted", "synthetic-deleted"})
"""The ``change`` values that mean the object no longer exists."""

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
ContainerStateName = Literal["running", "waiting", "terminated"]
NodeStatus = Literal["ready", "not-ready", "unreachable", "gone"]
ConditionStatus = Literal["True", "False", "Unknown"]


class _Part(BaseModel):
    """A nested, immutable part of a message."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ContainerSummary(_Part):
    """One container's state, from ``status.containerStatuses[]`` (init containers left out)."""

    name: str
    state: ContainerStateName
    """Which of ``state.running`` / ``state.waiting`` / ``state.terminated`` is set."""
    started_at: UtcDatetime | None = None
    """``running.startedAt`` or ``terminated.startedAt``."""
    finished_at: UtcDatetime | None = None
    """``terminated.finishedAt``."""
    exit_code: int | None = None
    """``terminated.exitCode``."""
    reason: str | None = None
    """``waiting.reason`` or ``terminated.reason`` (e.g. ``ImagePullBackOff``, ``Error``)."""


class VolumeClaim(_Part):
    """A PersistentVolumeClaim a pod mounts (``spec.volumes[].persistentVolumeClaim``, or
    the claim of a generic ephemeral volume, ``<pod>-<volume>``), with its access
    modes as the watcher last saw the claim."""

    name: str
    access_modes: tuple[str, ...] = ()
    """The claim's ``status.accessModes`` when bound, else its ``spec.accessModes``
    (``ReadWriteOnce``, ``ReadWriteOncePod``, ``ReadOnlyMany``, ``ReadWriteMany``);
    empty: the watcher has not seen the claim (the core then assumes the worst)."""


class PodObserved(Message):
    """A Pod of a Job was added, modified or deleted."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.pod.observed.v1"
    TOPIC: ClassVar[str] = K8S_OBJECTS

    change: Change
    observed_at: UtcDatetime
    """When the watcher received the event (its clock); for ``refreshed``, when it
    received the event it publishes again."""
    resource_version: str
    """``metadata.resourceVersion`` (see the module doc for ``synthetic-deleted``)."""

    uid: str
    namespace: str
    name: str
    job_name: str
    """The owning Job's name: from the controller owner reference, else the ``job-name`` label."""
    job_uid: str | None = None
    """The controller owner reference's uid; ``None`` for an orphan found by its label."""
    labels: dict[str, str] = Field(default_factory=dict)
    """``jobreaper.io/*`` labels only."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """``jobreaper.io/*`` annotations only (e.g. ``jobreaper.io/forbid-force-deletion``)."""

    creation_timestamp: UtcDatetime | None = None
    """``metadata.creationTimestamp``: the pending timeout counts from here."""
    phase: PodPhase = "Pending"
    reason: str | None = None
    """``status.reason``, e.g. ``DeadlineExceeded`` after an active deadline fired."""
    node_name: str | None = None
    """``spec.nodeName``; ``None`` while the pod is not scheduled."""
    unschedulable: bool = False
    """The ``PodScheduled`` condition is ``False`` with reason ``Unschedulable``."""
    start_time: UtcDatetime | None = None
    """``status.startTime``: set when the kubelet acknowledged the pod."""
    deletion_timestamp: UtcDatetime | None = None
    """``metadata.deletionTimestamp``: set once an API deletion was accepted."""
    deletion_grace_period_seconds: NonNegativeInt | None = None
    active_deadline_seconds: int | None = None
    """``spec.activeDeadlineSeconds``."""
    containers: tuple[ContainerSummary, ...] = ()
    claims: tuple[VolumeClaim, ...] = ()
    """The PersistentVolumeClaims it mounts (a force deletion on a node not fenced
    waits while one is ReadWriteOnce or ReadWriteOncePod, unless the pod opts in)."""

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class JobCondition(_Part):
    """One entry of a Job's ``status.conditions``."""

    type: str
    """E.g. ``Complete``, ``Failed``, ``FailureTarget``, ``SuccessCriteriaMet``, ``Suspended``."""
    status: ConditionStatus
    reason: str | None = None
    last_transition_time: UtcDatetime | None = None


class JobObserved(Message):
    """A Job was added, modified or deleted."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.job.observed.v1"
    TOPIC: ClassVar[str] = K8S_OBJECTS

    change: Change
    observed_at: UtcDatetime
    resource_version: str

    uid: str
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    """All of the Job's labels: configuration overrides select on them."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """``jobreaper.io/*`` annotations only (kill-timestamp, timeouts, forbid-force-deletion)."""

    creation_timestamp: UtcDatetime | None = None
    deletion_timestamp: UtcDatetime | None = None
    active_deadline_seconds: int | None = None
    """``spec.activeDeadlineSeconds``, counted from ``status.startTime``."""
    suspend: bool = False
    """``spec.suspend``."""
    start_time: UtcDatetime | None = None
    """``status.startTime``; Kubernetes resets it when the Job is resumed."""
    conditions: tuple[JobCondition, ...] = ()
    active: NonNegativeInt = 0
    """``status.active``: pods running or pending, not terminating."""
    failed: NonNegativeInt = 0
    succeeded: NonNegativeInt = 0
    terminating: NonNegativeInt | None = None
    """``status.terminating`` (Kubernetes 1.28+); ``None`` when the server does not report it."""

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.name)


class NodeObserved(Message):
    """A Node's readiness changed (or the Node was deleted: ``gone``)."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.node.observed.v1"
    TOPIC: ClassVar[str] = K8S_NODES

    change: Change
    observed_at: UtcDatetime
    resource_version: str

    name: str
    uid: str
    status: NodeStatus
    """``ready``; ``not-ready`` (Ready condition False); ``unreachable`` (Ready Unknown,
    the node controller lost its heartbeat); ``gone`` (the Node object was deleted)."""
    taints: tuple[str, ...] = ()
    """Keys of the relevant taints present, e.g. ``node.kubernetes.io/unreachable``,
    ``node.kubernetes.io/not-ready``."""
    zone: str | None = None
    """The node's ``topology.kubernetes.io/zone`` label, if any: the mass-disruption
    guard counts silent nodes per zone (``core.guard``)."""

    def kafka_key(self) -> str:
        return self.name


OBSERVATIONS: tuple[type[Message], ...] = (PodObserved, JobObserved, NodeObserved)
