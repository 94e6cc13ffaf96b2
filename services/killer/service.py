"""The killer's shell: Kafka in, the pure core, Kafka out, on time.

**Partitions.** Every Job-keyed topic has the same partition count and the
killer's group uses the range assignor, so an instance that owns partition
*p* owns it in all five Job-keyed topics (observations, kill requests, and
its own past commands, results and kill events). Nodes and config are read
whole by every instance and folded into every partition's state.

**Rebuild.** On assignment a partition's state starts empty and is rebuilt
by folding its five topic-partitions from the beginning; it decides
nothing until it has folded everything up to the end offsets taken at
assignment. Offsets are never committed: the log is the state (snapshots
will shorten the replay, issue 8). Because the killer's own commands and
kill events are folded back, a rebuilt state re-decides nothing that was
already issued; a step decided but never committed is decided again, with
the same derived command id.

**Transactions and fencing.** Each owned partition has its own
transactional producer, ``transactional.id = <group>.<prefix>p<N>``: the
classic remedy for aiokafka's missing KIP-447. A new owner's producer init
fences the previous owner's (a zombie can no longer commit) and completes
or aborts its open transaction *before* the new owner reads the end offsets
it rebuilds to, so it sees every committed decision. The commands and kill
events of one ``decide`` are written in one transaction, to partition *p*.
A failed transaction resets the partition to a rebuild: the state (which
``decide`` already updated) is never trusted past what the log holds.

**Timers.** ``decide`` returns when it next needs to run; the loop waits for
records at most until the earliest of those instants, so a step happens at
its due time, not at the next event or resync.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import CollectorRegistry

from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.decisions import DecisionRecorded, InputPosition
from schemas.observations import NodeObserved
from schemas.topics import (
    CONFIG,
    DEADLETTER,
    K8S_NODES,
    K8S_OBJECTS,
    KILL_COMMANDS,
    KILL_EVENTS,
    KILL_REQUESTS,
    KILL_RESULTS,
)
from services.killer.core import Decision, KillerState, decide, event_id, evolve, new_state
from services.runtime.faults import crash_point
from services.runtime.kafka import (
    DEADLETTER_SOURCE_HEADER,
    OutgoingRecord,
    dead_letter_record,
    ensure_topics,
    make_consumer,
    make_producer,
    read_to_end,
    topic_partitions,
)
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

from .metrics import KillerMetrics
from .settings import KillerServiceSettings

log = get_logger(__name__)

JOB_TOPICS = (K8S_OBJECTS, KILL_REQUESTS, KILL_COMMANDS, KILL_RESULTS, KILL_EVENTS)
GLOBAL_TOPICS = (K8S_NODES, CONFIG)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Partition:
    """One owned partition number: its state and its transactional producer."""

    number: int
    producer: AIOKafkaProducer
    state: KillerState = field(default_factory=new_state)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    assigned_at: float = field(default_factory=time.monotonic)
    caught_up: bool = False
    dirty: bool = True
    next_due: datetime | None = None
    must_rebuild: bool = False  # a rebuild failed (Kafka away): the loop retries it
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """(design topic, partition) -> the next offset to fold: the input position
    a decision records, so that a replay folds exactly what this state holds."""
    state_id: str = ""
    """New (random) for every state built: a replay tells rebuilds apart by it, even
    across restarts of an instance with the same identity (pod name, pid 1)."""
    rebuilt_from: tuple[InputPosition, ...] = ()
    """The global positions when the state was built: it then held only the newest
    node observations and config below them, not their history (a replay must too)."""


def _positions(positions: dict[tuple[str, int], int]) -> tuple[InputPosition, ...]:
    return tuple(
        InputPosition(topic=topic, partition=number, offset=offset)
        for (topic, number), offset in sorted(positions.items())
    )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, killer: Killer) -> None:
        self.killer = killer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.killer.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.killer.take({tp.partition for tp in assigned})


class Killer:
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: KillerServiceSettings,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.names = TopicNames(kafka.topic_prefix)
        self.registry = registry or CollectorRegistry()
        self.metrics = KillerMetrics(self.registry)
        self.source = f"/jobreaper/killer/{settings.identity}"
        self.partitions: dict[int, Partition] = {}
        self.nodes: dict[str, NodeObserved] = {}
        self.config: ConfigSnapshot | None = None
        self.global_positions: dict[tuple[str, int], int] = {}
        self.dead_lettered: set[str] = set()  # "topic/partition@offset" of poison records
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned = False
        self._global_ready = False
        self._stopping = asyncio.Event()

    # -- the service protocol -------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def readiness(self) -> tuple[bool, str]:
        if not self._global_ready:
            return False, "reading nodes and config"
        if not self._assigned:
            return False, "waiting for partitions"
        behind = sorted(p.number for p in self.partitions.values() if not p.caught_up)
        if behind:
            return False, f"rebuilding partitions {behind}"
        owned = sorted(self.partitions)
        return True, f"deciding for partitions {owned}"

    async def run(self) -> None:
        if self.kafka.create_topics:
            await ensure_topics(self.kafka, job_partitions=self.kafka.job_partitions)
        global_consumer = make_consumer(
            self.kafka, client_id=f"jobreaper-killer-{self.settings.identity}", group_id=None
        )
        await global_consumer.start()
        consumer = make_consumer(
            self.kafka,
            client_id=f"jobreaper-killer-{self.settings.identity}",
            group_id=self.settings.group_id,
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=self.settings.session_timeout_ms,
        )
        try:
            partitions = await topic_partitions(self.kafka, [self.names(t) for t in GLOBAL_TOPICS])
            await read_to_end(global_consumer, partitions, self._fold_global)
            await self._read_dead_letters()
            self._global_ready = True
            await consumer.start()
            self._consumer = consumer
            consumer.subscribe([self.names(t) for t in JOB_TOPICS], listener=_Rebalance(self))
            await self._loop(consumer, global_consumer)
        finally:
            await consumer.stop()
            await global_consumer.stop()
            await self.release(set(self.partitions))

    async def _read_dead_letters(self) -> None:
        """Which records were dead-lettered already, by anyone: a rebuild folds every
        poison record again, and must neither drop it silently nor repeat it."""

        def keep(record: ConsumerRecord[bytes, bytes]) -> None:
            source = dict(record.headers).get(DEADLETTER_SOURCE_HEADER)
            if source:
                self.dead_lettered.add(source.decode(errors="replace"))

        reader = make_consumer(
            self.kafka, client_id=f"jobreaper-killer-{self.settings.identity}-dlq", group_id=None
        )
        await reader.start()
        try:
            partitions = await topic_partitions(self.kafka, [self.names(DEADLETTER)])
            await read_to_end(reader, partitions, keep)
        finally:
            await reader.stop()

    # -- partitions -------------------------------------------------------------

    async def take(self, numbers: set[int]) -> None:
        """Own these partition numbers: fence the old owner, then rebuild from the log."""
        self._assigned = True
        for number in sorted(numbers - set(self.partitions)):
            producer = await self._start_producer(number)
            partition = Partition(number, producer)
            self.partitions[number] = partition
            await self._rebuild_or_later(partition)
        self._update_gauges()

    async def _start_producer(self, number: int) -> AIOKafkaProducer:
        """The partition's transactional producer, started: init_transactions fences
        the previous owner. Retried while the broker is away (a restart): an
        exception here would only be logged by aiokafka's rebalance machinery, and
        the partition would stay assigned but never decided for."""
        delay = 0.5
        while True:
            producer = make_producer(
                self.kafka,
                client_id=f"jobreaper-killer-{self.settings.identity}-p{number}",
                transactional_id=f"{self.settings.group_id}.{self.kafka.topic_prefix}p{number}",
            )
            try:
                await producer.start()
                return producer
            except KafkaError as exc:
                await producer.stop()  # or aiokafka warns about an unclosed producer
                if self._stopping.is_set():
                    raise
                log.warning(
                    "killer.producer_start_failed",
                    partition=number,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def release(self, numbers: set[int]) -> None:
        for number in numbers:
            partition = self.partitions.pop(number, None)
            if partition is not None:
                await partition.producer.stop()
        self._update_gauges()

    async def _rebuild_or_later(self, partition: Partition) -> None:
        """Rebuild now; if Kafka does not answer (a broker restart), the loop tries
        again: the partition decides nothing until a rebuild has succeeded."""
        try:
            await self._rebuild(partition)
            partition.must_rebuild = False
        except KafkaError as exc:
            partition.must_rebuild = True
            partition.caught_up = False
            log.warning(
                "killer.rebuild_deferred",
                partition=partition.number,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def _rebuild(self, partition: Partition) -> None:
        assert self._consumer is not None
        tps = [TopicPartition(self.names(t), partition.number) for t in JOB_TOPICS]
        partition.state = new_state()
        partition.state_id = uuid.uuid4().hex[:16]
        partition.rebuilt_from = _positions(self.global_positions)
        for node in self.nodes.values():
            evolve(partition.state, node)
        if self.config is not None:
            evolve(partition.state, self.config)
        partition.positions = {(topic, partition.number): 0 for topic in JOB_TOPICS}
        partition.ends = await self._consumer.end_offsets(tps)
        await self._consumer.seek_to_beginning(*tps)
        partition.assigned_at = time.monotonic()
        partition.caught_up = all(end == 0 for end in partition.ends.values())
        partition.dirty = True
        log.info(
            "killer.rebuilding",
            partition=partition.number,
            records=sum(partition.ends.values()),
        )

    def _update_gauges(self) -> None:
        caught_up = sum(1 for p in self.partitions.values() if p.caught_up)
        self.metrics.partitions.labels("ready").set(caught_up)
        self.metrics.partitions.labels("rebuilding").set(len(self.partitions) - caught_up)

    # -- folding ------------------------------------------------------------------

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> Any:
        try:
            return CODEC.decode(record.headers, record.value).message
        except DecodeError as exc:
            self.metrics.undecodable.labels(self.names.strip(record.topic)).inc()
            return exc

    def _fold_global(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.global_positions[(self.names.strip(record.topic), record.partition)] = (
            record.offset + 1
        )
        message = self._decode(record)
        if isinstance(message, NodeObserved):
            self.nodes[message.name] = message
        elif isinstance(message, ConfigSnapshot):
            if self.config is not None and message.version <= self.config.version:
                return  # compaction and replays can show an older snapshot again
            self.config = message
        else:
            return
        for partition in self.partitions.values():
            evolve(partition.state, message)
            partition.dirty = True

    async def _fold(self, record: ConsumerRecord[bytes, bytes]) -> None:
        partition = self.partitions.get(record.partition)
        if partition is None:
            return  # revoked while the batch was in flight
        if not partition.caught_up:
            crash_point("killer.rebuild")
        partition.positions[(self.names.strip(record.topic), record.partition)] = record.offset + 1
        message = self._decode(record)
        if isinstance(message, DecodeError):
            source = f"{record.topic}/{record.partition}@{record.offset}"
            if source not in self.dead_lettered:  # once, across rebuilds and instances
                await self._dead_letter(partition, record, message.reason)
                self.dead_lettered.add(source)
            return
        evolve(partition.state, message)
        partition.dirty = True
        self.metrics.folded.labels(self.names.strip(record.topic)).inc()

    async def _dead_letter(
        self, partition: Partition, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> None:
        dead = dead_letter_record(
            self.names,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
            reason=reason,
        )
        async with partition.producer.transaction():
            sent = await partition.producer.send(
                dead.topic, dead.value, key=dead.key, headers=dead.headers
            )
            await sent
        log.warning("killer.dead_lettered", source=f"{record.topic}@{record.offset}", reason=reason)

    # -- the loop -------------------------------------------------------------------

    async def _loop(self, consumer: AIOKafkaConsumer, global_consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=self._wait_ms())
            for records in batches.values():
                for record in records:
                    await self._fold(record)
            for records in (await global_consumer.getmany(timeout_ms=0)).values():
                for record in records:
                    self._fold_global(record)
            for partition in list(self.partitions.values()):
                if partition.must_rebuild:
                    await self._rebuild_or_later(partition)
            await self._check_caught_up(consumer)
            if batches:
                crash_point("killer.after-fold")
            now = _now()
            for partition in list(self.partitions.values()):
                if partition.caught_up and (
                    partition.dirty
                    or (partition.next_due is not None and partition.next_due <= now)
                ):
                    await self._decide(partition, now)

    def _wait_ms(self) -> int:
        """Until the earliest timer, at most ``max_poll_wait_s``."""
        wait = self.settings.max_poll_wait_s
        now = _now()
        for partition in self.partitions.values():
            if partition.caught_up and partition.next_due is not None:
                wait = min(wait, (partition.next_due - now).total_seconds())
        return max(0, int(wait * 1000))

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for partition in self.partitions.values():
            if partition.caught_up or partition.must_rebuild:
                continue
            for tp, end in partition.ends.items():
                if await consumer.position(tp) < end:
                    break
            else:
                partition.caught_up = True
                elapsed = time.monotonic() - partition.assigned_at
                self.metrics.rebuild_seconds.observe(elapsed)
                log.info("killer.caught_up", partition=partition.number, seconds=round(elapsed, 3))
                self._update_gauges()

    def _decision_record(
        self, partition: Partition, now: datetime, decision: Decision
    ) -> OutgoingRecord:
        """What this decision saw and when (DESIGN section 4: the clock is an input)."""
        positions = {**partition.positions, **self.global_positions}
        record = DecisionRecorded(
            partition=partition.number,
            decided_at=now,
            config_version=self.config.version if self.config is not None else 0,
            inputs=_positions(positions),
            state=partition.state_id,
            rebuilt_from=partition.rebuilt_from,
            command_ids=tuple(cmd.command_id for cmd in decision.commands),
            event_ids=tuple(event_id(ev) for ev in decision.kill_events),
            killer=self.settings.identity,
        )
        return outgoing(self.names, record, source=self.source, time=now)

    async def _decide(self, partition: Partition, now: datetime) -> None:
        partition.dirty = False
        decision = decide(partition.state, now)
        partition.next_due = decision.next_due_at
        if not decision.commands and not decision.kill_events:
            return
        records = [
            outgoing(self.names, cmd, source=self.source, event_id=cmd.command_id, time=now)
            for cmd in decision.commands
        ] + [
            outgoing(self.names, ev, source=self.source, event_id=event_id(ev), time=now)
            for ev in decision.kill_events
        ]
        records.append(self._decision_record(partition, now, decision))
        try:
            async with partition.producer.transaction():
                sent = [
                    await partition.producer.send(
                        record.topic,
                        record.value,
                        key=record.key,
                        headers=record.headers,
                        partition=partition.number,
                    )
                    for record in records
                ]
                # Retrieve every delivery: a fenced producer fails them, and an
                # exception nobody reads is logged by asyncio at a random moment.
                await asyncio.gather(*sent)
                crash_point("killer.before-commit")
        except ProducerFenced:
            log.warning("killer.fenced", partition=partition.number)
            await self.release({partition.number})
            return
        except KafkaError as exc:
            log.error("killer.transaction_failed", partition=partition.number, error=str(exc))
            await self._rebuild_or_later(partition)
            return
        crash_point("killer.after-commit")
        for cmd in decision.commands:
            self.metrics.commands.labels(cmd.step, cmd.trigger).inc()
            self.metrics.decide_lateness.observe(max(0.0, (now - cmd.due_at).total_seconds()))
        for ev in decision.kill_events:
            self.metrics.kill_events.labels(type(ev).__name__).inc()
        log.info(
            "killer.decided",
            partition=partition.number,
            commands=[f"{c.step}:{c.namespace}/{c.pod_name}" for c in decision.commands],
            events=[type(e).__name__ for e in decision.kill_events],
        )
