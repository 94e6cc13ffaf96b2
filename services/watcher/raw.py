"""The raw Kubernetes JSON we read, reduced to the fields jobreaper uses.

Watch lines are parsed by pydantic-core straight from bytes into these
models; every field we do not name is skipped by the parser, never built.
That is what makes the watcher fast: kubernetes-asyncio's generated models
build every field of every object (see ``bench/bench_parse.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class _Raw(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


ObjectT = TypeVar("ObjectT", bound="Pod | Job | Node")


class OwnerReference(_Raw):
    kind: str
    name: str
    uid: str
    controller: bool | None = None


class ObjectMeta(_Raw):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list, alias="ownerReferences")
    deletion_timestamp: datetime | None = Field(None, alias="deletionTimestamp")
    deletion_grace_period_seconds: int | None = Field(None, alias="deletionGracePeriodSeconds")
    creation_timestamp: datetime | None = Field(None, alias="creationTimestamp")


class StateRunning(_Raw):
    started_at: datetime | None = Field(None, alias="startedAt")


class StateWaiting(_Raw):
    reason: str | None = None


class StateTerminated(_Raw):
    exit_code: int | None = Field(None, alias="exitCode")
    reason: str | None = None
    started_at: datetime | None = Field(None, alias="startedAt")
    finished_at: datetime | None = Field(None, alias="finishedAt")


class ContainerStateRaw(_Raw):
    running: StateRunning | None = None
    waiting: StateWaiting | None = None
    terminated: StateTerminated | None = None


class ContainerStatus(_Raw):
    name: str
    state: ContainerStateRaw = Field(default_factory=ContainerStateRaw)


class Condition(_Raw):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = Field(None, alias="lastTransitionTime")


class PodSpec(_Raw):
    node_name: str | None = Field(None, alias="nodeName")
    active_deadline_seconds: int | None = Field(None, alias="activeDeadlineSeconds")
    termination_grace_period_seconds: int | None = Field(
        None, alias="terminationGracePeriodSeconds"
    )


class PodStatus(_Raw):
    phase: str | None = None
    reason: str | None = None
    start_time: datetime | None = Field(None, alias="startTime")
    conditions: list[Condition] = Field(default_factory=list)
    container_statuses: list[ContainerStatus] = Field(
        default_factory=list, alias="containerStatuses"
    )
    init_container_statuses: list[ContainerStatus] = Field(
        default_factory=list, alias="initContainerStatuses"
    )


class Pod(_Raw):
    metadata: ObjectMeta
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)


class JobSpec(_Raw):
    active_deadline_seconds: int | None = Field(None, alias="activeDeadlineSeconds")
    suspend: bool | None = None
    parallelism: int | None = None
    completions: int | None = None


class JobStatus(_Raw):
    start_time: datetime | None = Field(None, alias="startTime")
    completion_time: datetime | None = Field(None, alias="completionTime")
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    terminating: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Job(_Raw):
    metadata: ObjectMeta
    spec: JobSpec = Field(default_factory=JobSpec)
    status: JobStatus = Field(default_factory=JobStatus)


class Taint(_Raw):
    key: str
    effect: str
    value: str | None = None


class NodeSpec(_Raw):
    taints: list[Taint] = Field(default_factory=list)
    unschedulable: bool | None = None


class NodeStatus(_Raw):
    conditions: list[Condition] = Field(default_factory=list)


class Node(_Raw):
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


class ListMeta(_Raw):
    resource_version: str = Field("", alias="resourceVersion")
    continue_: str | None = Field(None, alias="continue")


class Status(_Raw):
    """The ``ERROR`` object of a watch stream (e.g. ``410 Gone``)."""

    code: int | None = None
    reason: str | None = None
    message: str | None = None


EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


class WatchLine(_Raw, Generic[ObjectT]):
    """One line of a watch stream: ``{"type": ..., "object": ...}``.

    A ``BOOKMARK`` object carries only ``metadata.resourceVersion``, which
    the defaults above accept. An ``ERROR`` object is a Status without
    ``metadata``: it fails here and is read as :class:`ErrorLine`.
    """

    type: EventType
    object: ObjectT


class ErrorLine(_Raw):
    type: Literal["ERROR"]
    object: Status


class ObjectList(_Raw, Generic[ObjectT]):
    """One page of a list response."""

    metadata: ListMeta
    items: list[ObjectT]
