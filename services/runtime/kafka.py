"""Kafka plumbing every service shares: clients, topic creation, reading a topic to its
end, sending in a transaction, dead letters.

Producers are idempotent with ``acks=all``; consumers read committed data
only and never auto-commit: a service commits what it has durably handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.structs import RecordMetadata

from schemas import topics as t
from schemas.parts import KAFKA_DEFAULT_MAX_BYTES

from .logging import get_logger
from .retry import Backoff
from .settings import KafkaSettings
from .topics import TOPIC_SPECS, TopicNames, TopicSpec, partitions_for

log = get_logger(__name__)

DEADLETTER_REASON_HEADER = "jr_deadletter_reason"
DEADLETTER_SOURCE_HEADER = "jr_deadletter_source"
DEADLETTER_OMITTED_HEADER = "jr_deadletter_value_omitted"
DEADLETTER_MAX_BYTES = KAFKA_DEFAULT_MAX_BYTES - 8 * 1024
"""A dead letter that would be larger (key, value and headers, as the producer counts
them) is written without the original value (and, if still too large, without its
headers): a record the broker took just under its limit is over it with two more
headers, and a dead letter Kafka refuses would stop the consumer that writes it."""
REASON_MAX_CHARS = 2_000


@dataclass(frozen=True)
class OutgoingRecord:
    """A record ready to send: full topic name, key, value, headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection settings shared by producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
        kwargs["ssl_context"] = context
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def make_producer(
    settings: KafkaSettings,
    *,
    client_id: str,
    transactional_id: str | None = None,
    max_batch_size: int = 16_384,
) -> AIOKafkaProducer:
    """An idempotent, acks=all producer; transactional when given an id.

    ``max_request_size`` stays aiokafka's (and Kafka's) 1 MiB: a record larger than
    that fails at ``send``, before anything reaches the broker. ``max_batch_size``
    (records per topic-partition per produce request) is aiokafka's 16 KiB unless a
    caller writes many records at once (the killer: one transaction per decision)."""
    return AIOKafkaProducer(
        **client_kwargs(settings),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        transactional_id=transactional_id,
        linger_ms=5,
        max_batch_size=max_batch_size,
    )


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    client_id: str,
    group_id: str | None,
    auto_offset_reset: str = "earliest",
    **extra: Any,
) -> AIOKafkaConsumer:
    """A read_committed consumer that never commits by itself."""
    return AIOKafkaConsumer(
        *topics,
        **client_kwargs(settings),
        client_id=client_id,
        group_id=group_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        **extra,
    )


async def wait_for_kafka(settings: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Wait until a metadata request succeeds, retrying with capped backoff."""
    deadline = time.monotonic() + timeout_s
    delays = Backoff(0.2, 5.0).delays()
    while True:
        admin = AIOKafkaAdminClient(**client_kwargs(settings), client_id="jobreaper-probe")
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError as exc:
            delay = delays.next()
            if time.monotonic() + delay > deadline:
                raise KafkaConnectionError(
                    f"Kafka at {settings.bootstrap} did not answer within {timeout_s:.0f} s: {exc}"
                ) from exc
            log.warning("kafka.unreachable", bootstrap=settings.bootstrap, retry_in_s=delay)
            await asyncio.sleep(delay)
        finally:
            await admin.close()


async def ensure_topics(
    settings: KafkaSettings,
    *,
    job_partitions: int = 6,
    replication_factor: int = 1,
    specs: Sequence[TopicSpec] = TOPIC_SPECS,
) -> list[str]:
    """Create the missing topics (idempotent); return the names created."""
    names = TopicNames(settings.topic_prefix)
    admin = AIOKafkaAdminClient(**client_kwargs(settings), client_id="jobreaper-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=names(spec.name),
                num_partitions=partitions_for(spec, job_partitions),
                replication_factor=replication_factor,
                topic_configs=spec.configs(),
            )
            for spec in specs
            if names(spec.name) not in existing
        ]
        if not wanted:
            return []
        # Another process may win the race; the topics then exist, which is all we want.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(wanted)
        await _until_served(admin, [topic.name for topic in wanted])
        return [topic.name for topic in wanted]
    finally:
        await admin.close()


async def _until_served(
    admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float = 30
) -> None:
    """Wait until the broker describes every topic with its partitions.

    KRaft answers CreateTopics once the controller has committed the topics; the
    broker serves their metadata a moment later (seconds on a loaded machine). A
    caller reading the partitions at once (the config service) found none and
    took its topic for missing."""
    deadline = time.monotonic() + timeout_s
    delays = Backoff(0.05, 1.0).delays()
    while True:
        described = await admin.describe_topics(topics)
        waiting = sorted(
            d["topic"] for d in described if d.get("error_code", 0) != 0 or not d["partitions"]
        )
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise KafkaError(f"topics created but not served after {timeout_s:.0f} s: {waiting}")
        await asyncio.sleep(delays.next())


@dataclass(frozen=True)
class TopicRetention:
    """How long a topic keeps its records: what a time-based retention reader needs."""

    topic: str
    retention_ms: int
    """``retention.ms``; -1 keeps records for ever."""
    retention_bytes: int
    """``retention.bytes`` per partition; -1 (the default) sets no size limit."""
    cleanup_policy: str
    """``cleanup.policy``: ``delete``, ``compact`` or ``compact,delete``."""

    @property
    def deletes_by_time(self) -> bool:
        """Whether records older than ``retention_ms`` are deleted."""
        return "delete" in self.cleanup_policy.split(",") and self.retention_ms >= 0

    @property
    def deletes_by_size(self) -> bool:
        """Whether records of any age may be deleted to keep a partition under a size."""
        return "delete" in self.cleanup_policy.split(",") and self.retention_bytes >= 0


async def describe_retention(
    settings: KafkaSettings, topics: Sequence[str]
) -> dict[str, TopicRetention]:
    """The retention settings of ``topics`` (full names), read with DescribeConfigs.

    Raises the ``KafkaError`` of the first topic Kafka refuses to describe (e.g.
    ``TopicAuthorizationFailedError`` without the DescribeConfigs ACL,
    ``UnknownTopicOrPartitionError`` for a missing topic).
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings), client_id="jobreaper-configs")
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic,
                    {"retention.ms": None, "retention.bytes": None, "cleanup.policy": None},
                )
                for topic in topics
            ]
        )
    finally:
        await admin.close()
    out: dict[str, TopicRetention] = {}
    for response in responses:
        for error_code, error_message, _type, name, entries in response.resources:
            if error_code:
                raise for_code(error_code)(f"describe configs of topic {name}: {error_message}")
            values = {entry[0]: entry[1] for entry in entries}
            out[name] = TopicRetention(
                topic=name,
                retention_ms=int(values.get("retention.ms") or -1),
                retention_bytes=int(values.get("retention.bytes") or -1),
                cleanup_policy=str(values.get("cleanup.policy") or "delete"),
            )
    missing = [topic for topic in topics if topic not in out]
    if missing:
        raise KafkaError(f"describe configs: no answer for topics {missing}")
    return out


async def topic_partitions(settings: KafkaSettings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (a missing topic has none).

    Raises ``TopicAuthorizationFailedError`` for a topic the principal may not
    describe (no ACL): reading it as empty would hide the missing permission
    (the killer would think nothing was dead-lettered, a reader that the topic
    is missing)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), client_id="jobreaper-metadata")
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    refused = sorted(
        topic["topic"]
        for topic in described
        if topic.get("error_code", 0) == TopicAuthorizationFailedError.errno
    )
    if refused:
        raise TopicAuthorizationFailedError(", ".join(refused))
    return sorted(
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic.get("error_code", 0) == 0
        for partition in topic["partitions"]
    )


async def read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    handle: Callable[[ConsumerRecord[bytes, bytes]], None],
    *,
    batch_timeout_ms: int = 200,
) -> dict[TopicPartition, int]:
    """Read ``partitions`` from their start to their current end.

    ``consumer`` must be started without a group or subscription; it is
    left assigned to those partitions, positioned at the end. Returns the
    end offsets it read up to. With read_committed, the end is the last
    stable offset; transaction markers are skipped by the position moving
    past them.
    """
    consumer.assign(list(partitions))
    if not partitions:
        return {}
    await consumer.seek_to_beginning(*partitions)
    end: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    pending = {tp for tp in partitions if end[tp] > 0}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=batch_timeout_ms)
        for records in batches.values():
            for record in records:
                handle(record)
        for tp in list(pending):
            if await consumer.position(tp) >= end[tp]:
                pending.discard(tp)
    return end


async def read_partitions_to_end(
    settings: KafkaSettings,
    partitions: Sequence[TopicPartition],
    handle: Callable[[ConsumerRecord[bytes, bytes]], None],
    *,
    client_id: str,
) -> dict[TopicPartition, int]:
    """:func:`read_to_end` with a consumer of its own (no group), closed afterwards.

    No partitions: nothing to read, and no consumer started."""
    if not partitions:
        return {}
    consumer = make_consumer(settings, client_id=client_id, group_id=None)
    await consumer.start()
    try:
        return await read_to_end(consumer, partitions, handle)
    finally:
        await consumer.stop()


async def read_topics_to_end(
    settings: KafkaSettings,
    topics: Sequence[str],
    handle: Callable[[ConsumerRecord[bytes, bytes]], None],
    *,
    client_id: str,
) -> dict[TopicPartition, int]:
    """Every partition of ``topics`` (full names; a missing topic has none) read from
    its start to its current end, as :func:`read_partitions_to_end`."""
    partitions = await topic_partitions(settings, topics)
    return await read_partitions_to_end(settings, partitions, handle, client_id=client_id)


async def send_record(
    producer: AIOKafkaProducer, record: OutgoingRecord, *, partition: int | None = None
) -> asyncio.Future[RecordMetadata]:
    """Queue ``record`` (to ``partition``, else the key's partition); the future is its
    acknowledgement."""
    future: asyncio.Future[RecordMetadata] = await producer.send(
        record.topic, record.value, key=record.key, headers=record.headers, partition=partition
    )
    return future


async def publish_one(
    settings: KafkaSettings, record: OutgoingRecord, *, client_id: str, timeout_s: float
) -> RecordMetadata:
    """Send one record with a producer of its own (acks=all, idempotent) and wait for
    its acknowledgement: what a command-line tool publishes (a kill request, a resume)."""
    producer = make_producer(settings, client_id=client_id)
    await asyncio.wait_for(producer.start(), timeout_s)
    try:
        future = await send_record(producer, record)
        return await asyncio.wait_for(future, timeout_s)
    finally:
        await producer.stop()


async def send_in_transaction(
    producer: AIOKafkaProducer,
    records: Sequence[OutgoingRecord],
    *,
    partition: int | None = None,
    offsets: Mapping[TopicPartition, int] | None = None,
    group_id: str | None = None,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Send ``records`` in one transaction of ``producer`` and commit it once each is
    acknowledged, with the consumed ``offsets`` of ``group_id`` if given.

    Any failure aborts the transaction and is raised (``ProducerFenced`` when a newer
    producer took the transactional id). Every send's outcome is retrieved, also
    after a failure: an exception nobody reads is logged by asyncio at a random
    moment. ``before_commit`` runs last inside the transaction (crash points)."""
    futures: list[asyncio.Future[RecordMetadata]] = []
    try:
        async with producer.transaction():
            for record in records:
                futures.append(await send_record(producer, record, partition=partition))
            await asyncio.gather(*futures)
            if offsets:
                await producer.send_offsets_to_transaction(dict(offsets), group_id)
            if before_commit is not None:
                before_commit()
    finally:
        await asyncio.gather(*futures, return_exceptions=True)


def dead_letter_record(
    names: TopicNames,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    reason: str,
) -> OutgoingRecord:
    """The original record, its headers and why it could not be handled.

    The value and headers are kept byte for byte so the record can be
    re-driven once the cause is fixed, unless the dead letter would then be
    larger than ``DEADLETTER_MAX_BYTES``: the value (then the original headers)
    is left out and ``jr_deadletter_value_omitted`` says how large it was; the
    original stays readable at its source for the topic's retention. The reason
    is cut to ``REASON_MAX_CHARS``.
    """
    source = f"{source_topic}/{partition}@{offset}"
    value = value or b""
    ours = [
        (DEADLETTER_REASON_HEADER, reason[:REASON_MAX_CHARS].encode()),
        (DEADLETTER_SOURCE_HEADER, source.encode()),
    ]

    def size(v: bytes, h: Sequence[tuple[str, bytes]]) -> int:
        return len(key or b"") + len(v) + sum(len(k) + len(x) + 8 for k, x in h) + 64

    kept: list[tuple[str, bytes]] = [*headers, *ours]
    if size(value, kept) > DEADLETTER_MAX_BYTES:
        original = f"{len(value)} bytes; the original is at {source}"
        if size(b"", kept) > DEADLETTER_MAX_BYTES:
            original += f" (its {len(headers)} headers too)"
            kept = list(ours)
        kept.append((DEADLETTER_OMITTED_HEADER, original.encode()))
        value = b""
    return OutgoingRecord(topic=names(t.DEADLETTER), key=key, value=value, headers=kept)
