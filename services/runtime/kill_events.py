"""Kill events for people and for other systems: one line saying what an event
means, and the CloudEvent as JSON. Shared by ``jobreaper events`` and ``notify``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.base import Message
from schemas.cloudevents import Envelope, format_time
from schemas.events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    ForceDeletionPaused,
    ForceDeletionResumed,
    JobKilled,
    KillStarted,
    KillStep,
)

NAMED_PODS = 10
"""Pods named in one line; the rest are counted (a Job may have thousands)."""


def pod_list(names: Sequence[str], limit: int = NAMED_PODS) -> str:
    """``a, b, c`` or ``a, b, ... and 990 more``."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit:,} more"


def part_of(message: KillStarted | JobKilled) -> str:
    """`` (part 2/4)`` for one record of an event split in parts, else nothing."""
    return f" (part {message.part}/{message.parts})" if message.parts > 1 else ""


def describe(message: Message) -> str:
    """One line saying what a kill event means, for people (and Slack); an event of
    shadow mode says so first (nothing was or will be written)."""
    line = _describe(message)
    return f"[shadow, would-apply] {line}" if getattr(message, "shadow", False) else line


def _zone(zone: str) -> str:
    return f"zone {zone}" if zone else "the nodes without a zone"


def _describe(message: Message) -> str:
    if isinstance(message, ForceDeletionPaused):
        return (
            f"force deletion paused in {_zone(message.zone)}: {message.silent_nodes} of "
            f"{message.zone_nodes} nodes went silent within {message.window_seconds} s "
            f"(threshold {message.min_nodes} nodes and {message.fraction:g} of the zone), "
            f"tripped at {format_time(message.tripped_at)}: "
            f"{pod_list(list(message.nodes))}. Pods there are force-deleted only once their "
            "node is fenced (Node deleted, or tainted node.kubernetes.io/out-of-service); "
            "`jobreaper force resume` lifts the pause"
        )
    if isinstance(message, ForceDeletionResumed):
        why = (
            f"resumed by {message.requested_by or '?'} at "
            f"{format_time(message.requested_at) if message.requested_at else '?'}"
            if message.cause == "operator"
            else "the nodes returned"
        )
        return (
            f"force deletion resumed in {_zone(message.zone)} (paused since "
            f"{format_time(message.tripped_at)}): {why}"
        )
    job = f"{getattr(message, 'namespace', '?')}/{getattr(message, 'job_name', '?')}"
    if isinstance(message, KillStarted):
        pods = pod_list([p.name for p in message.pods]) or "no pods"
        count = f"{len(message.pods):,} " if len(message.pods) > NAMED_PODS else ""
        return (
            f"{job}: kill started{part_of(message)} ({message.trigger}: {message.reason}); "
            f"{count}pods {pods}"
        )
    if isinstance(message, KillStep):
        late = (message.decided_at - message.due_at).total_seconds()
        retry = f" attempt {message.attempt}" if message.attempt > 1 else ""
        return (
            f"{job}: {message.step}{retry} on pod {message.pod_name} "
            f"({message.rule}, due {format_time(message.due_at)}, decided +{late:.3f}s)"
        )
    if isinstance(message, ForceDeletionForbidden):
        by = (
            "the policy (forceDeletePolicy: never)"
            if message.forbidden_by == "policy"
            else f"the {message.forbidden_by}"
        )
        return (
            f"{job}: pod {message.pod_name} stuck in deletion since "
            f"{format_time(message.since)}, but force deletion is forbidden by "
            f"{by}: a person must look"
        )
    if isinstance(message, ForceDeletionHeld):
        node = message.node_name or "no node"
        if message.waits_for == "fence":
            why = (
                f"waits for a fence of node {node} (forceDeletePolicy: {message.policy}; "
                "delete the Node or taint it node.kubernetes.io/out-of-service)"
            )
        elif message.waits_for == "guard":
            why = (
                f"waits for the mass-disruption guard of node {node}'s zone to lift (too "
                "many nodes went silent at once; or fence the node, or "
                "`jobreaper force resume`)"
            )
        elif message.waits_for == "volume":
            why = (
                f"it mounts a ReadWriteOnce volume claim: waits for a fence of node {node} "
                "(delete the Node or taint it node.kubernetes.io/out-of-service), or "
                'jobreaper.io/safe-to-force-delete: "true" on the Job or pod'
            )
        else:
            until = format_time(message.until) if message.until is not None else "?"
            why = f"waits for the force-deletion rate limit (until {until})"
        return (
            f"{job}: force deletion of pod {message.pod_name} held back: stuck in deletion "
            f"since {format_time(message.since)}, {why}"
        )
    if isinstance(message, JobKilled):
        ends = pod_list([f"{p.name} {p.ended}" for p in message.pods])
        if len(message.pods) > NAMED_PODS:
            counts: dict[str, int] = {}
            for p in message.pods:
                counts[p.ended] = counts.get(p.ended, 0) + 1
            ends = (
                f"{len(message.pods):,} pods ("
                + ", ".join(f"{n:,} {ended}" for ended, n in sorted(counts.items()))
                + f"): {ends}"
            )
        return (
            f"{job}: killed at {format_time(message.killed_at)}{part_of(message)} "
            f"({message.trigger}); {ends}"
        )
    return f"{job}: {type(message).__name__}"


def event_json(envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "type": envelope.type,
        "source": envelope.source,
        "time": format_time(envelope.time),
        "data": envelope.message.model_dump(mode="json"),
    }
