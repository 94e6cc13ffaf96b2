"""Kubernetes Events on pods whose force deletion is held back or forbidden.

The killer decides a hold (``ForceDeletionHeld``: a fence, the rate limit, the
mass-disruption guard, a ReadWriteOnce volume) or a prohibition
(``ForceDeletionForbidden``) and publishes it on ``kill.events``; no command
follows, so no step of the executor tells the pod's story. This feed does:
``kubectl describe pod`` shows a Warning saying what the force deletion waits
for (issue #21 item 6), written by the executor, the one service allowed to
write to the API server.

At least once, and idempotent: the Event's name is derived from the kill event's
id, so a record read again re-creates the same Event (409, counted ``exists``).
A new consumer group starts at the end of the topic: an install never posts
Events for holds of the past (Kubernetes keeps Events an hour). Creating an
Event never blocks anything: failures are logged and counted, as for the
command Events (:mod:`.events`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.cloudevents import DecodeError
from schemas.events import ForceDeletionForbidden, ForceDeletionHeld
from schemas.topics import KILL_EVENTS
from services.runtime.kafka import client_kwargs
from services.runtime.kill_events import describe
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings

from .events import NAME_LIMIT, NOTE_LIMIT, REPORTING_CONTROLLER, EventRecorder

log = get_logger(__name__)

HELD_REASON = "JobreaperForceDeletionHeld"
FORBIDDEN_REASON = "JobreaperForceDeletionForbidden"
GROUP_SUFFIX = ".held-events"
"""The feed's consumer group: the executor's group id + this (docs/kafka-acls.md)."""


def held_event_body(
    message: ForceDeletionHeld | ForceDeletionForbidden, event_id: str, instance: str
) -> dict[str, Any] | None:
    """The Event on the pod for one hold or prohibition; None for a shadow one (shadow
    mode writes nothing)."""
    if message.shadow:
        return None
    held = isinstance(message, ForceDeletionHeld)
    suffix = f".jr-{event_id.replace('-', '')[:16]}"
    note = describe(message)
    job_ref: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": message.namespace,
        "name": message.job_name,
    }
    if message.job_uid:
        job_ref["uid"] = message.job_uid
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"{message.pod_name[: NAME_LIMIT - len(suffix)]}{suffix}",
            "namespace": message.namespace,
        },
        "eventTime": message.decided_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": "force-delete-held" if held else "force-delete-forbidden",
        "reason": HELD_REASON if held else FORBIDDEN_REASON,
        "type": "Warning",
        "note": note if len(note) <= NOTE_LIMIT else note[: NOTE_LIMIT - 3] + "...",
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": message.namespace,
            "name": message.pod_name,
            "uid": message.pod_uid,
        },
        "related": job_ref,
    }


async def feed_held_events(
    kafka: KafkaSettings,
    topic: str,
    group_id: str,
    recorder: EventRecorder,
    instance: str,
    stopping: asyncio.Event,
) -> None:
    """Read ``kill.events`` (``topic``: its name with the prefix) until ``stopping``,
    posting an Event for each hold and prohibition. Errors of Kafka end the feed
    (the caller restarts it); a record that does not decode is skipped."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(kafka),
        client_id=f"jobreaper-executor-{instance}-held",
        group_id=group_id,
        isolation_level="read_committed",
        enable_auto_commit=True,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for record in records:
                    try:
                        envelope = CODEC.decode(record.headers, record.value, KILL_EVENTS)
                    except DecodeError:
                        continue  # the killer dead-letters nothing here; others read it too
                    message = envelope.message
                    if isinstance(message, ForceDeletionHeld | ForceDeletionForbidden):
                        body = held_event_body(message, envelope.id, instance)
                        if body is not None:
                            recorder.post(body)
    finally:
        await consumer.stop()
        log.info("executor.held_events_stopped", group=group_id)
