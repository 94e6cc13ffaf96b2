"""Kill events for people and for other systems: one line saying what an event
means, and the CloudEvent as JSON. Shared by ``jobreaper events`` and ``notify``."""

from __future__ import annotations

from typing import Any

from schemas.base import Message
from schemas.cloudevents import Envelope, format_time
from schemas.events import ForceDeletionForbidden, JobKilled, KillStarted, KillStep


def describe(message: Message) -> str:
    """One line saying what a kill event means, for people (and Slack)."""
    job = f"{getattr(message, 'namespace', '?')}/{getattr(message, 'job_name', '?')}"
    if isinstance(message, KillStarted):
        pods = ", ".join(p.name for p in message.pods) or "no pods"
        return f"{job}: kill started ({message.trigger}: {message.reason}); pods {pods}"
    if isinstance(message, KillStep):
        late = (message.decided_at - message.due_at).total_seconds()
        retry = f" attempt {message.attempt}" if message.attempt > 1 else ""
        return (
            f"{job}: {message.step}{retry} on pod {message.pod_name} "
            f"({message.rule}, due {format_time(message.due_at)}, decided +{late:.3f}s)"
        )
    if isinstance(message, ForceDeletionForbidden):
        return (
            f"{job}: pod {message.pod_name} stuck in deletion since "
            f"{format_time(message.since)}, but force deletion is forbidden by the "
            f"{message.forbidden_by}: a person must look"
        )
    if isinstance(message, JobKilled):
        ends = ", ".join(f"{p.name} {p.ended}" for p in message.pods)
        return f"{job}: killed at {format_time(message.killed_at)} ({message.trigger}); {ends}"
    return f"{job}: {type(message).__name__}"


def event_json(envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "type": envelope.type,
        "source": envelope.source,
        "time": format_time(envelope.time),
        "data": envelope.message.model_dump(mode="json"),
    }
