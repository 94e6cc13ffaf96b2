"""The Kubernetes JSON the watcher reads, as msgspec structs of only the
fields jobreaper uses.

msgspec decodes a watch line straight from bytes into these structs and
skips every other field (``managedFields``, container specs, ...) without
building it: about 6 us for a 3.7 KB pod line, against ~750 us for
kubernetes-asyncio's generated ``V1Pod`` (``bench/bench_parse.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

import msgspec


class _Wire(msgspec.Struct, rename="camel", frozen=True):
    pass


class OwnerReference(_Wire, frozen=True):
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


class ObjectMeta(_Wire, frozen=True):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    owner_references: tuple[OwnerReference, ...] = ()
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    deletion_grace_period_seconds: int | None = None


class StateRunning(_Wire, frozen=True):
    started_at: datetime | None = None


class StateWaiting(_Wire, frozen=True):
    reason: str | None = None


class StateTerminated(_Wire, frozen=True):
    exit_code: int | None = None
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ContainerState(_Wire, frozen=True):
    running: StateRunning | None = None
    waiting: StateWaiting | None = None
    terminated: StateTerminated | None = None


class ContainerStatus(_Wire, frozen=True):
    name: str = ""
    state: ContainerState = ContainerState()


class Condition(_Wire, frozen=True):
    type: str = ""
    status: str = ""
    reason: str | None = None
    last_transition_time: datetime | None = None


class ClaimSource(_Wire, frozen=True):
    claim_name: str = ""


class EphemeralSource(_Wire, frozen=True):
    pass


class Volume(_Wire, frozen=True):
    name: str = ""
    persistent_volume_claim: ClaimSource | None = None
    ephemeral: EphemeralSource | None = None
    """A generic ephemeral volume: its claim is named ``<pod>-<volume>``."""


class PodSpec(_Wire, frozen=True):
    node_name: str | None = None
    active_deadline_seconds: int | None = None
    volumes: tuple[Volume, ...] = ()


class ClaimSpec(_Wire, frozen=True):
    access_modes: tuple[str, ...] = ()


class ClaimStatus(_Wire, frozen=True):
    access_modes: tuple[str, ...] = ()


class PersistentVolumeClaim(_Wire, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: ClaimSpec = ClaimSpec()
    status: ClaimStatus = ClaimStatus()


class PodStatus(_Wire, frozen=True):
    phase: str | None = None
    reason: str | None = None
    start_time: datetime | None = None
    conditions: tuple[Condition, ...] = ()
    container_statuses: tuple[ContainerStatus, ...] = ()


class Pod(_Wire, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec = PodSpec()
    status: PodStatus = PodStatus()


class JobSpec(_Wire, frozen=True):
    active_deadline_seconds: int | None = None
    suspend: bool | None = None


class JobStatus(_Wire, frozen=True):
    start_time: datetime | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    terminating: int | None = None
    conditions: tuple[Condition, ...] = ()


class Job(_Wire, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: JobSpec = JobSpec()
    status: JobStatus = JobStatus()


class Taint(_Wire, frozen=True):
    key: str = ""
    effect: str = ""


class NodeSpec(_Wire, frozen=True):
    taints: tuple[Taint, ...] = ()


class NodeStatus(_Wire, frozen=True):
    conditions: tuple[Condition, ...] = ()


class Node(_Wire, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: NodeSpec = NodeSpec()
    status: NodeStatus = NodeStatus()


ObjectT = TypeVar("ObjectT", Pod, Job, Node, PersistentVolumeClaim)


class WatchLine(msgspec.Struct, Generic[ObjectT], frozen=True):
    """``{"type": ..., "object": ...}``; a BOOKMARK object has only metadata."""

    type: str
    object: ObjectT


class ListMeta(_Wire, frozen=True):
    resource_version: str = ""
    continue_: str | None = msgspec.field(default=None, name="continue")


class ObjectList(msgspec.Struct, Generic[ObjectT], frozen=True):
    metadata: ListMeta = ListMeta()
    items: tuple[ObjectT, ...] = ()


class Status(msgspec.Struct, frozen=True):
    """The object of an ``ERROR`` watch line (e.g. ``410 Expired``)."""

    code: int | None = None
    reason: str | None = None
    message: str | None = None


class ErrorLine(msgspec.Struct, frozen=True):
    type: str
    object: Status


DecodeError = (msgspec.DecodeError, msgspec.ValidationError)
"""What a decoder raises for bytes that are not the expected JSON."""
