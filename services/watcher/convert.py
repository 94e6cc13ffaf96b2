"""Wire structs -> the slim observations published on Kafka.

Speed matters here: the watcher reads a firehose. The structs of
:mod:`services.watcher.wire` already hold typed values, so observations are
built without a second validation pass (:func:`_trusted`).

Also decides what is noise: two observations with the same *content*
(everything but ``change``, ``observed_at`` and ``resource_version``) are
the same fact, so a resourceVersion-only update (a node heartbeat, a
managed-fields touch) is dropped instead of published.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from schemas.annotations import ANNOTATION_PREFIX
from schemas.observations import (
    Change,
    ContainerSummary,
    JobCondition,
    JobObserved,
    NodeObserved,
    NodeStatus,
    PodObserved,
    PodPhase,
    VolumeClaim,
)

from . import wire
from .claims import ClaimModes

Observation = PodObserved | JobObserved | NodeObserved
ModelT = TypeVar("ModelT", bound=BaseModel)

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
"""Labels the Job controller puts on its pods (the first since Kubernetes 1.27)."""

_PHASES = frozenset({"Pending", "Running", "Succeeded", "Failed", "Unknown"})
_CONDITION_STATUSES = frozenset({"True", "False", "Unknown"})
_VOLATILE = frozenset({"change", "observed_at", "resource_version"})


class MalformedObject(ValueError):
    """An object that decodes but cannot be a real one (unknown phase, naive time...)."""


def _trusted(cls: type[ModelT], **values: Any) -> ModelT:
    """Build a model from values already of the right types, every field given.

    ``model_construct`` minus its per-field default and alias handling,
    which costs more than the whole rest of a conversion. The unit tests
    prove that what this builds equals a validated model.
    """
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise MalformedObject(f"timestamp {value.isoformat()} has no timezone")
    return value


def _ours(values: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if k.startswith(ANNOTATION_PREFIX)}


def job_name_of(meta: wire.ObjectMeta) -> tuple[str, str | None] | None:
    """The owning Job's (name, uid), from its label for an orphan; None if no Job's pod."""
    for ref in meta.owner_references:
        if ref.kind == "Job" and ref.controller:
            return ref.name, ref.uid
    for label in JOB_NAME_LABELS:
        name = meta.labels.get(label)
        if name:
            return name, None
    return None


def _container(status: wire.ContainerStatus) -> ContainerSummary:
    state = status.state
    if state.terminated is not None:
        t = state.terminated
        return _trusted(
            ContainerSummary,
            name=status.name,
            state="terminated",
            started_at=_utc(t.started_at),
            finished_at=_utc(t.finished_at),
            exit_code=t.exit_code,
            reason=t.reason,
        )
    if state.running is not None:
        return _trusted(
            ContainerSummary,
            name=status.name,
            state="running",
            started_at=_utc(state.running.started_at),
            finished_at=None,
            exit_code=None,
            reason=None,
        )
    return _trusted(
        ContainerSummary,
        name=status.name,
        state="waiting",
        started_at=None,
        finished_at=None,
        exit_code=None,
        reason=state.waiting.reason if state.waiting else None,
    )


ClaimsOf = Callable[[wire.Pod], tuple[VolumeClaim, ...]]
"""The claims a pod mounts, with their access modes (``claims.ClaimModes.claims_of``)."""


def no_claim_modes(pod: wire.Pod) -> tuple[VolumeClaim, ...]:
    """The claims ``pod`` mounts, with no access modes known (no claim was seen)."""
    return _NO_CLAIMS.claims_of(pod)


_NO_CLAIMS = ClaimModes()


def pod_observation(
    pod: wire.Pod,
    change: Change,
    observed_at: datetime,
    resource_version: str | None = None,
    claims_of: ClaimsOf = no_claim_modes,
) -> PodObserved | None:
    """The observation of a Job's pod; None for a pod that belongs to no Job."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    owner = job_name_of(meta)
    if owner is None:
        return None
    phase = status.phase or "Pending"
    if phase not in _PHASES:
        raise MalformedObject(f"pod {meta.namespace}/{meta.name}: unknown phase {phase!r}")
    unschedulable = any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in status.conditions
    )
    return _trusted(
        PodObserved,
        change=change,
        observed_at=observed_at,
        resource_version=resource_version or meta.resource_version,
        uid=meta.uid,
        namespace=meta.namespace,
        name=meta.name,
        job_name=owner[0],
        job_uid=owner[1],
        labels=_ours(meta.labels),
        annotations=_ours(meta.annotations),
        creation_timestamp=_utc(meta.creation_timestamp),
        phase=cast(PodPhase, phase),
        reason=status.reason,
        node_name=spec.node_name,
        unschedulable=unschedulable,
        start_time=_utc(status.start_time),
        deletion_timestamp=_utc(meta.deletion_timestamp),
        deletion_grace_period_seconds=meta.deletion_grace_period_seconds,
        active_deadline_seconds=spec.active_deadline_seconds,
        containers=tuple(_container(c) for c in status.container_statuses),
        claims=claims_of(pod) if spec.volumes else (),
    )


def job_observation(
    job: wire.Job, change: Change, observed_at: datetime, resource_version: str | None = None
) -> JobObserved:
    meta, status = job.metadata, job.status
    conditions = []
    for c in status.conditions:
        if c.status not in _CONDITION_STATUSES:
            raise MalformedObject(f"job {meta.namespace}/{meta.name}: condition {c.status!r}")
        conditions.append(
            _trusted(
                JobCondition,
                type=c.type,
                status=c.status,
                reason=c.reason,
                last_transition_time=_utc(c.last_transition_time),
            )
        )
    return _trusted(
        JobObserved,
        change=change,
        observed_at=observed_at,
        resource_version=resource_version or meta.resource_version,
        uid=meta.uid,
        namespace=meta.namespace,
        name=meta.name,
        labels=dict(meta.labels),
        annotations=_ours(meta.annotations),
        creation_timestamp=_utc(meta.creation_timestamp),
        deletion_timestamp=_utc(meta.deletion_timestamp),
        active_deadline_seconds=job.spec.active_deadline_seconds,
        suspend=bool(job.spec.suspend),
        start_time=_utc(status.start_time),
        conditions=tuple(conditions),
        active=status.active or 0,
        failed=status.failed or 0,
        succeeded=status.succeeded or 0,
        terminating=status.terminating,
    )


ZONE_LABEL = "topology.kubernetes.io/zone"
"""The well-known zone label: the mass-disruption guard counts silent nodes per zone."""


def node_observation(
    node: wire.Node, change: Change, observed_at: datetime, resource_version: str | None = None
) -> NodeObserved:
    ready = next((c for c in node.status.conditions if c.type == "Ready"), None)
    state: NodeStatus
    if change in ("deleted", "synthetic-deleted"):
        state = "gone"
    elif ready is None or ready.status == "Unknown":
        state = "unreachable"
    elif ready.status == "True":
        state = "ready"
    else:
        state = "not-ready"
    return _trusted(
        NodeObserved,
        change=change,
        observed_at=observed_at,
        resource_version=resource_version or node.metadata.resource_version,
        name=node.metadata.name,
        uid=node.metadata.uid,
        status=state,
        taints=tuple(
            sorted(t.key for t in node.spec.taints if t.key.startswith("node.kubernetes.io/"))
        ),
        zone=node.metadata.labels.get(ZONE_LABEL),
    )


def content(observation: Observation) -> dict[str, Any]:
    """What an observation says about its object, without when and how it was seen."""
    return {k: v for k, v in observation.__dict__.items() if k not in _VOLATILE}


def same_content(a: Observation, b: Observation) -> bool:
    return type(a) is type(b) and content(a) == content(b)
