"""An in-memory Kafka for the killer's shell (:class:`services.killer.transport.KillerKafka`).

What it keeps of Kafka, because the shell depends on it:

- per topic-partition a log of offsets; a transaction's records are in the log
  from ``send`` on, invisible to read_committed readers until committed, and
  every commit or abort appends a marker, which takes an offset (so a consumer's
  position, not the last record's offset, tells that it reached an end offset);
- ``end_offsets`` is the last stable offset: the first offset of an open
  transaction, else the log's end;
- transactional ids have epochs: starting a producer bumps its id's epoch and
  aborts the open transaction of the previous one, whose ``send`` and commit
  then raise ``ProducerFenced``;
- a group consumer gets partitions only when the test rebalances it
  (:meth:`FakeKafka.rebalance`): revoked, then assigned, through the listener.

Faults are injected by the test: ``fail_commits``, ``fail_end_offsets``,
``fail_producer_starts``, ``fail_dead_letters``; and gates (``asyncio.Event``)
hold a producer start, the end offsets, or fetching from some partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaError, ProducerFenced

from schemas import topics as t
from schemas.base import Message
from services.killer.partition import JOB_TOPICS
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.killer.transport import transactional_id
from services.runtime.clock import ApiClock
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

PREFIX = "t."
GROUP = "g"
NAMES = TopicNames(PREFIX)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Transaction:
    transactional_id: str
    epoch: int
    state: str = "open"  # open, committed, aborted
    offsets: list[tuple[TopicPartition, int]] = field(default_factory=list)


@dataclass
class Entry:
    record: ConsumerRecord[bytes, bytes] | None
    """None: a transaction marker."""
    txn: Transaction | None = None

    @property
    def visible(self) -> bool:
        """Read by a read_committed consumer (a marker or an aborted record is not)."""
        return self.record is not None and (self.txn is None or self.txn.state == "committed")


class FakeKafka:
    """The broker, and the client factory the killer is given."""

    def __init__(self, partitions: int = 3) -> None:
        self.job_partitions = partitions
        self.logs: dict[TopicPartition, list[Entry]] = {}
        self.epochs: dict[str, int] = {}
        self.open: dict[str, Transaction] = {}
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []
        self.fail_commits = 0
        self.fail_end_offsets = 0
        self.fail_producer_starts = 0
        self.fail_dead_letters = 0
        """Sends to the dead-letter topic that raise (Kafka away, say)."""
        self.producer_gate: asyncio.Event | None = None
        self.end_offsets_gate: asyncio.Event | None = None
        self.held: set[int] = set()
        """Job-keyed partition numbers a group consumer does not fetch from."""
        self.illegal_seeks: list[TopicPartition] = []
        self.changed = asyncio.Event()

    # -- the log --------------------------------------------------------------------

    def partitions_of(self, topic: str) -> int:
        return self.job_partitions if NAMES.strip(topic) in (*JOB_TOPICS, t.KILL_DECISIONS) else 1

    def log(self, tp: TopicPartition) -> list[Entry]:
        return self.logs.setdefault(tp, [])

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        txn: Transaction | None = None,
    ) -> int:
        tp = TopicPartition(topic, partition)
        log = self.log(tp)
        offset = len(log)
        record = ConsumerRecord(
            topic, partition, offset, 0, 0, key, value, None, 0, len(value), tuple(headers)
        )
        log.append(Entry(record, txn))
        if txn is not None:
            txn.offsets.append((tp, offset))
        self.changed.set()
        return offset

    def end(self, txn: Transaction, state: str) -> None:
        """Commit or abort: the records' fate, and one marker per partition touched."""
        txn.state = state
        for tp in {tp for tp, _ in txn.offsets}:
            self.log(tp).append(Entry(None, txn))
        self.open.pop(txn.transactional_id, None)
        self.changed.set()

    def last_stable(self, tp: TopicPartition) -> int:
        log = self.log(tp)
        for offset, entry in enumerate(log):
            if entry.record is not None and entry.txn is not None and entry.txn.state == "open":
                return offset
        return len(log)

    def committed(self, topic: str, partition: int | None = None) -> list[Any]:
        """The messages a read_committed reader sees on a design topic, in log order."""
        full = NAMES(topic)
        out = []
        for number in range(self.partitions_of(full)) if partition is None else [partition]:
            for entry in self.log(TopicPartition(full, number)):
                if entry.visible and entry.record is not None:
                    out.append(
                        CODEC.decode(entry.record.headers, entry.record.value, topic).message
                    )
        return out

    def dead_letters(self) -> list[ConsumerRecord[bytes, bytes]]:
        return [
            e.record
            for e in self.log(TopicPartition(NAMES(t.DEADLETTER), 0))
            if e.visible and e.record is not None
        ]

    def publish(self, message: Message, partition: int = 0) -> int:
        """Write ``message`` as another service would (not in a transaction)."""
        record = outgoing(NAMES, message, source="/test", time=T0)
        number = partition if self.partitions_of(record.topic) > 1 else 0
        return self.append(record.topic, number, record.value, record.key, record.headers)

    def publish_raw(self, topic: str, value: bytes, partition: int = 0) -> int:
        return self.append(NAMES(topic), partition, value, None, [])

    # -- the group ------------------------------------------------------------------

    async def rebalance(self, consumer: FakeConsumer, numbers: set[int]) -> None:
        """Give ``consumer`` these partition numbers of every subscribed topic (eager:
        all revoked first, as aiokafka's listener sees it)."""
        assert consumer.listener is not None, "not subscribed"
        revoked = sorted(consumer.assigned)
        if revoked:
            await consumer.listener.on_partitions_revoked(revoked)
        consumer.assigned = {
            TopicPartition(topic, n) for topic in consumer.topics for n in sorted(numbers)
        }
        consumer.positions = {tp: 0 for tp in consumer.assigned}
        await consumer.listener.on_partitions_assigned(sorted(consumer.assigned))

    async def subscribed(self, index: int = 0) -> FakeConsumer:
        """The ``index``-th group consumer made (one per killer run), once it subscribed."""
        for _ in range(500):
            if len(self.consumers) > index and self.consumers[index].listener is not None:
                return self.consumers[index]
            await asyncio.sleep(0.01)
        raise AssertionError("no consumer subscribed")

    # -- the client factory (KillerKafka) ---------------------------------------------

    async def ensure_topics(self) -> None:
        return None

    def reader(self, topics: Sequence[str], *, client_id: str) -> FakeReader:
        return FakeReader(self, topics)

    def consumer(self, *, client_id: str) -> FakeConsumer:
        consumer = FakeConsumer(self)
        self.consumers.append(consumer)
        return consumer

    def producer(self, partition: int, *, client_id: str) -> FakeProducer:
        producer = FakeProducer(self, transactional_id(GROUP, PREFIX, partition))
        self.producers.append(producer)
        return producer

    async def wait_changed(self, timeout_s: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)


class FakeProducer:
    def __init__(self, kafka: FakeKafka, transactional_id: str) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.epoch: int | None = None
        self.stopped = False
        self.txn: Transaction | None = None

    @property
    def fenced(self) -> bool:
        return self.epoch is not None and self.kafka.epochs[self.transactional_id] != self.epoch

    async def start(self) -> None:
        if self.kafka.producer_gate is not None:
            await self.kafka.producer_gate.wait()
        if self.kafka.fail_producer_starts:
            self.kafka.fail_producer_starts -= 1
            raise KafkaConnectionError("the broker is away")
        # InitProducerId: a new epoch; the previous one's open transaction is aborted.
        self.epoch = self.kafka.epochs.get(self.transactional_id, 0) + 1
        self.kafka.epochs[self.transactional_id] = self.epoch
        previous = self.kafka.open.get(self.transactional_id)
        if previous is not None:
            self.kafka.end(previous, "aborted")

    async def stop(self) -> None:
        self.stopped = True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self.fenced:
            raise ProducerFenced()
        assert self.epoch is not None and not self.stopped, "producer not started"
        txn = self.txn = Transaction(self.transactional_id, self.epoch)
        self.kafka.open[self.transactional_id] = txn
        try:
            yield
        except BaseException:
            if not self.fenced:
                self.kafka.end(txn, "aborted")
            raise
        finally:
            self.txn = None
        if self.fenced:
            raise ProducerFenced()
        if self.kafka.fail_commits:
            self.kafka.fail_commits -= 1
            self.kafka.end(txn, "aborted")
            raise KafkaError("the commit failed")
        self.kafka.end(txn, "committed")

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Awaitable[int]:
        if self.fenced:
            raise ProducerFenced()
        assert self.txn is not None, "send outside a transaction"
        if self.kafka.fail_dead_letters and topic.endswith(t.DEADLETTER):
            self.kafka.fail_dead_letters -= 1
            raise KafkaError("the dead letter could not be written")
        if partition is None:
            partition = (
                0 if self.kafka.partitions_of(topic) == 1 else hash(key) % self.kafka.job_partitions
            )
        offset = self.kafka.append(topic, partition, value, key, headers or [], self.txn)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(offset)
        return future


def _read(
    kafka: FakeKafka, positions: dict[TopicPartition, int], tp: TopicPartition, limit: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """Up to ``limit`` visible records from the position, below the last stable
    offset; the position moves past markers and aborted records too."""
    out: list[ConsumerRecord[bytes, bytes]] = []
    stable = kafka.last_stable(tp)
    log = kafka.log(tp)
    while positions[tp] < stable and len(out) < limit:
        entry = log[positions[tp]]
        positions[tp] += 1
        if entry.visible and entry.record is not None:
            out.append(entry.record)
    return out


class FakeConsumer:
    BATCH = 4
    """Records per partition per fetch: small, so that a rebuild takes several turns."""

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.topics: list[str] = []
        self.listener: ConsumerRebalanceListener | None = None
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.held: set[int] = set()
        """Partition numbers this consumer does not fetch from (and ``FakeKafka.held``)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.topics = list(topics)
        self.listener = listener

    def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batches = {}
        for tp in sorted(self.assigned):
            if tp.partition in self.kafka.held or tp.partition in self.held:
                continue
            records = _read(self.kafka, self.positions, tp, self.BATCH)
            if records:
                batches[tp] = records
        return batches

    async def getmany(
        self, *, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batches = self._fetch()
        if not batches and timeout_ms > 0:
            await self.kafka.wait_changed(timeout_ms / 1000)
            batches = self._fetch()
        if not batches:
            await asyncio.sleep(0)
        return batches

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition not in self.assigned:
            self.kafka.illegal_seeks.append(partition)
            raise IllegalStateError(f"No current assignment for partition {partition}")
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    async def position(self, partition: TopicPartition) -> int:
        if partition not in self.assigned:
            raise IllegalStateError(f"No current assignment for partition {partition}")
        return self.positions[partition]

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.kafka.end_offsets_gate is not None:
            await self.kafka.end_offsets_gate.wait()
        if self.kafka.fail_end_offsets:
            self.kafka.fail_end_offsets -= 1
            raise KafkaConnectionError("the broker is away")
        return {tp: self.kafka.last_stable(tp) for tp in partitions}

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in partitions}

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.kafka.log(partition))

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.kafka.partitions_of(topic)))


class FakeReader:
    def __init__(self, kafka: FakeKafka, topics: Sequence[str]) -> None:
        self.kafka = kafka
        self.tps = [
            TopicPartition(topic, n) for topic in topics for n in range(kafka.partitions_of(topic))
        ]
        self.positions = {tp: 0 for tp in self.tps}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def read_to_end(self, handle: Callable[[ConsumerRecord[bytes, bytes]], None]) -> None:
        for tp in self.tps:
            for record in _read(self.kafka, self.positions, tp, 1 << 30):
                handle(record)

    async def getmany(
        self, *, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batches = {}
        for tp in self.tps:
            records = _read(self.kafka, self.positions, tp, 1 << 30)
            if records:
                batches[tp] = records
        return batches


class FakeTime:
    """The killer's clock (``ApiClock(local=...)``), moved by the test."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def eventually(
    what: str, check: Callable[[], Any], *, timeout_s: float = 5.0, task: Any = None
) -> Any:
    """Poll ``check`` until truthy; fail naming ``what`` (and re-raise a crashed task's error)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"the killer stopped before: {what}")
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.005)


def killer(
    kafka: FakeKafka,
    *,
    identity: str = "k1",
    time: FakeTime | None = None,
    **settings: Any,
) -> Killer:
    """A killer on ``kafka``, deciding at ``time`` (T0 + 10 s by default)."""
    return Killer(
        KafkaSettings(bootstrap="fake:9092", topic_prefix=PREFIX, create_topics=False),
        KillerServiceSettings(group_id=GROUP, identity=identity, **settings),
        clock=ApiClock(local=time or FakeTime(T0 + timedelta(seconds=10))),
        clients=kafka,
    )


@contextlib.asynccontextmanager
async def running(k: Killer) -> AsyncIterator[asyncio.Task[None]]:
    """``k.run()`` as a task, stopped (and its error, if any, raised) at the end."""
    task = asyncio.create_task(k.run())
    try:
        yield task
    finally:
        k.stop()
        await asyncio.wait_for(task, 5)
