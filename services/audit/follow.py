"""``jobreaper events --follow``: a live tail of the public kill events.

Also the reference subscriber for other systems; everything a subscriber
needs is in :func:`follow`:

1. a consumer with ``isolation_level=read_committed`` (``make_consumer``): the
   killer writes kill events in transactions, and only committed ones happened;
2. every record decoded with the shared CloudEvents ``CODEC`` (headers + JSON);
3. a type this build does not know (a newer producer) is skipped with a note,
   never a crash: the stream is meant to grow.

This tail uses no consumer group (it reads every partition, from the end or
the beginning); a subscriber that must not miss events uses a group and
commits after handling, like ``jobreaper notify``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from aiokafka import ConsumerRecord

from schemas.cloudevents import DecodeError, Envelope, format_time
from schemas.topics import KILL_EVENTS
from services.runtime.kafka import make_consumer, topic_partitions
from services.runtime.kill_events import describe, event_json
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames


async def follow(
    kafka: KafkaSettings,
    handle: Callable[[Envelope], None],
    *,
    namespace: str | None = None,
    from_beginning: bool = False,
    note: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> None:
    """Call ``handle`` with every committed kill event as it arrives (forever)."""
    topic = TopicNames(kafka.topic_prefix)(KILL_EVENTS)
    partitions = await topic_partitions(kafka, [topic])
    if not partitions:
        raise LookupError(f"topic {topic} does not exist (wrong --topic-prefix?)")
    consumer = make_consumer(kafka, client_id="jobreaper-events", group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolved now, so "following" means following
        note(f"following {topic} ({len(partitions)} partitions); Ctrl-C to stop")
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    envelope = _decode(record, note)
                    if envelope is None:
                        continue
                    if namespace and getattr(envelope.message, "namespace", None) != namespace:
                        continue
                    handle(envelope)
    finally:
        await consumer.stop()


def _decode(record: ConsumerRecord[bytes, bytes], note: Callable[[str], None]) -> Envelope | None:
    try:
        return CODEC.decode(record.headers, record.value, KILL_EVENTS)
    except DecodeError as exc:
        note(f"skipped {record.topic}/{record.partition}@{record.offset}: {exc.reason}")
        return None


def print_line(envelope: Envelope) -> None:
    print(f"{format_time(envelope.time)}  {describe(envelope.message)}", flush=True)


def print_json(envelope: Envelope) -> None:
    print(json.dumps(event_json(envelope), sort_keys=True), flush=True)
