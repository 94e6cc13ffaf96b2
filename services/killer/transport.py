"""The killer's Kafka, reduced to the methods the shell uses.

:class:`KillerKafka` makes the three kinds of client the killer needs: a group
consumer of the five Job-keyed topics, readers of whole topics (nodes and
config; the dead letters), and one transactional producer per owned partition.
:class:`AiokafkaClients` is the real one; the unit tests give the shell an
in-memory broker instead (tests/unit/killer/fakes.py), as the executor's tests
give it a scripted API server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from services.runtime.kafka import (
    ensure_topics,
    make_consumer,
    make_producer,
    read_to_end,
    topic_partitions,
)
from services.runtime.settings import KafkaSettings

from .settings import KillerServiceSettings

__all__ = [
    "TRANSACTION_BATCH_BYTES",
    "AiokafkaClients",
    "JobConsumer",
    "KillerKafka",
    "Producer",
    "Record",
    "TopicPartition",
    "TopicReader",
    "transactional_id",
    "transactional_id_prefix",
]

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
"""A record read (aiokafka's ``ConsumerRecord[bytes, bytes]``)."""

TRANSACTION_BATCH_BYTES = 256 * 1024
"""``max_batch_size`` of the partitions' producers. A decision about a Job of 20,000
pods is one transaction of 40,025 records; with aiokafka's 16 KiB batches (about 17
records each, one round trip per batch) writing them took 2.9-3.3 s, with 256 KiB
0.8 s, 1.6 -> 0.6 s of CPU (docs/killer.md, "Jobs of any size"). A quarter of
Kafka's 1 MiB ``message.max.bytes``, which a record batch must not exceed."""


def transactional_id_prefix(group_id: str, topic_prefix: str) -> str:
    """What every transactional id of the killers of one install starts with."""
    return f"{group_id}.{topic_prefix}p"


def transactional_id(group_id: str, topic_prefix: str, partition: int) -> str:
    """The transactional id of partition ``partition``'s producer: its owner fences the last."""
    return f"{transactional_id_prefix(group_id, topic_prefix)}{partition}"


class Producer(Protocol):
    """A partition's transactional producer."""

    async def start(self) -> None:
        """InitProducerId: fences the previous producer of this transactional id and
        completes or aborts its open transaction before returning."""

    async def stop(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """Begin; commit on a normal exit, abort on an exception."""

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Awaitable[Any]:
        """Queue a record; the awaitable returned resolves when it is delivered."""


class JobConsumer(Protocol):
    """The group consumer of the Job-keyed topics (range assignor, read_committed)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...

    async def getmany(self, *, timeout_ms: int) -> dict[TopicPartition, list[Record]]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The last stable offsets (read_committed): no open transaction below them."""

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...


class TopicReader(Protocol):
    """A consumer with no group of every partition of some topics."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def read_to_end(self, handle: Callable[[Record], None]) -> None:
        """Hand every record from the beginning up to the current end to ``handle``."""

    async def getmany(self, *, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        """What was written since (after :meth:`read_to_end`)."""


class KillerKafka(Protocol):
    """Makes the killer's clients."""

    async def ensure_topics(self) -> None: ...

    def reader(self, topics: Sequence[str], *, client_id: str) -> TopicReader: ...

    def consumer(self, *, client_id: str) -> JobConsumer: ...

    def producer(self, partition: int, *, client_id: str) -> Producer: ...


class _Reader:
    def __init__(self, kafka: KafkaSettings, topics: Sequence[str], client_id: str) -> None:
        self._kafka = kafka
        self._topics = list(topics)
        self._consumer = make_consumer(kafka, client_id=client_id, group_id=None)

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read_to_end(self, handle: Callable[[Record], None]) -> None:
        partitions = await topic_partitions(self._kafka, self._topics)
        await read_to_end(self._consumer, partitions, handle)

    async def getmany(self, *, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        batches: dict[TopicPartition, list[Record]] = await self._consumer.getmany(
            timeout_ms=timeout_ms
        )
        return batches


class AiokafkaClients:
    """The real clients: aiokafka, configured from the settings."""

    def __init__(self, kafka: KafkaSettings, settings: KillerServiceSettings) -> None:
        self.kafka = kafka
        self.settings = settings

    async def ensure_topics(self) -> None:
        await ensure_topics(self.kafka, job_partitions=self.kafka.job_partitions)

    def reader(self, topics: Sequence[str], *, client_id: str) -> TopicReader:
        return _Reader(self.kafka, topics, client_id)

    def consumer(self, *, client_id: str) -> JobConsumer:
        consumer: JobConsumer = make_consumer(
            self.kafka,
            client_id=client_id,
            group_id=self.settings.group_id,
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=self.settings.session_timeout_ms,
        )
        return consumer

    def producer(self, partition: int, *, client_id: str) -> Producer:
        producer: Producer = make_producer(
            self.kafka,
            client_id=client_id,
            transactional_id=transactional_id(
                self.settings.group_id, self.kafka.topic_prefix, partition
            ),
            max_batch_size=TRANSACTION_BATCH_BYTES,
        )
        return producer
