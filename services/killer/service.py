"""The killer's shell: Kafka in, the pure core, Kafka out, on time.

**Partitions.** Every Job-keyed topic has the same partition count and the
killer's group uses the range assignor, so an instance that owns partition
*p* owns it in all five Job-keyed topics (observations, kill requests, and
its own past commands, results and kill events). Nodes and config are read
whole by every instance and folded into every partition's state.

**Rebuild.** On assignment a partition's state starts empty and is rebuilt
by folding its five topic-partitions from the beginning; it decides
nothing until it has folded everything up to the end offsets taken at
assignment. Offsets are never committed: the log is the state. Because the killer's own commands and
kill events are folded back, a rebuilt state re-decides nothing that was
already issued; a step decided but never committed is decided again, with
the same derived command id.

**Snapshots** (``JOBREAPER_KILLER_SNAPSHOT_DIR``, :mod:`.snapshots`). A
partition's state is written, with the positions it reflects, only where it
equals what folding the log up to those positions produces plus committed
decisions: at the end of a loop turn, caught up, after ``decide`` committed
(or had nothing to commit), no transaction open. Pickling runs in a thread
while the partition is *frozen*: its records and node/config changes wait in
a backlog and it decides nothing, so the state cannot change under the
pickler; other partitions go on. On assignment the newest valid snapshot is
loaded, nodes and config are folded into it, and only the tail is read; a
snapshot that fails any check is skipped and the partition replayed in full.
Newly assigned partitions are fenced and loaded concurrently.

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
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from prometheus_client import CollectorRegistry

from core import (
    Decision,
    GlobalInputs,
    KillerState,
    decide,
    event_id,
    evolve,
    new_state,
)
from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.decisions import DecisionRecorded, InputPosition, decision_parts
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
from services.runtime.clock import ApiClock, Probe
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
from .snapshots import (
    SnapshotHeader,
    SnapshotRejected,
    SnapshotStore,
    check_positions,
    dump_state,
    load_state,
    make_header,
)

log = get_logger(__name__)

JOB_TOPICS = (K8S_OBJECTS, KILL_REQUESTS, KILL_COMMANDS, KILL_RESULTS, KILL_EVENTS)
GLOBAL_TOPICS = (K8S_NODES, CONFIG)
LOGGED_COMMANDS = 20
"""Commands named in a ``killer.decided`` line (the total is always there)."""
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
    must_rebuild: bool = False
    """A rebuild failed (Kafka away), or the core raised on a record: the loop rebuilds."""
    hold_until: float = 0.0
    """``time.monotonic()`` before which nothing is decided (``decide`` raised)."""
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """(design topic, partition) -> the next offset to fold: the input position
    a decision records, so that a replay folds exactly what this state holds."""
    state_id: str = ""
    """New (random) for every state built: a replay tells rebuilds apart by it, even
    across restarts of an instance with the same identity (pod name, pid 1)."""
    rebuilt_from: tuple[InputPosition, ...] = ()
    """The global positions when the state was built: it then held only the newest
    node observations and config below them, not their history (a replay must too)."""
    from_snapshot: bool = False
    loading: bool = True
    """Between assignment and the seek to its start: the rebalance callback that
    rebuilds runs concurrently with the loop, which must neither fold records
    fetched before the seek nor call the partition caught up."""
    # snapshots
    folded_since_snapshot: int = 0
    snapshot_at: float = field(default_factory=time.monotonic)
    frozen: bool = False
    """The state is being pickled: fold nothing into it, decide nothing."""
    backlog: list[ConsumerRecord[bytes, bytes] | NodeObserved | ConfigSnapshot] = field(
        default_factory=list
    )
    """What arrived while frozen, in arrival order, folded once thawed."""
    snapshotting: asyncio.Task[None] | None = None


def _source(record: ConsumerRecord[bytes, bytes]) -> str:
    """How a dead letter names the record it holds (and ``dead_lettered`` keeps it)."""
    return f"{record.topic}/{record.partition}@{record.offset}"


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
        clock: ApiClock | None = None,
        clock_probe: Probe | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.clock = clock or ApiClock()
        """``now`` for every decision: the API server's clock when ``clock_probe``
        measures it (services/runtime/clock.py), else this host's."""
        self._clock_probe = clock_probe
        self.names = TopicNames(kafka.topic_prefix)
        self.registry = registry or CollectorRegistry()
        self.metrics = KillerMetrics(self.registry)
        self.source = f"/jobreaper/killer/{settings.identity}"
        self.partitions: dict[int, Partition] = {}
        self.globals = GlobalInputs()
        """Nodes and config, as new partition states are seeded with them."""
        self.global_positions: dict[tuple[str, int], int] = {}
        self.dead_lettered: set[str] = set()  # "topic/partition@offset" of poison records
        self.snapshots = (
            SnapshotStore(Path(settings.snapshot_dir), kafka.topic_prefix)
            if settings.snapshot_dir
            else None
        )
        self._lag_sampled_at = 0.0
        self._snapshotting = False
        self._consumer: AIOKafkaConsumer | None = None
        self._topic_names: dict[str, str] = {}
        self._assigned = False
        self._taking = 0
        self._global_ready = False
        self._stopping = asyncio.Event()

    @property
    def config(self) -> ConfigSnapshot | None:
        """The newest configuration snapshot read."""
        return self.globals.config

    # -- the service protocol -------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def readiness(self) -> tuple[bool, str]:
        if self._clock_probe is not None and not self.clock.measured and not self._global_ready:
            return False, "measuring the API server's clock"
        if not self._global_ready:
            return False, "reading nodes and config"
        if not self._assigned:
            return False, "waiting for partitions"
        if self._taking:
            return False, "taking partitions (fencing their previous owner)"
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
        clock_task = (
            asyncio.create_task(self.clock.run(self._clock_probe))
            if self._clock_probe is not None
            else None
        )
        try:
            if clock_task is not None:
                await self._measure_clock()
            partitions = await topic_partitions(self.kafka, [self.names(t) for t in GLOBAL_TOPICS])
            await read_to_end(global_consumer, partitions, self._fold_global)
            await self._read_dead_letters()
            self._global_ready = True
            await consumer.start()
            self._consumer = consumer
            consumer.subscribe([self.names(t) for t in JOB_TOPICS], listener=_Rebalance(self))
            await self._loop(consumer, global_consumer)
        finally:
            if clock_task is not None:
                clock_task.cancel()
            await consumer.stop()
            await global_consumer.stop()
            await self.release(set(self.partitions))

    async def _measure_clock(self) -> None:
        """Before deciding anything, learn the API server's clock: a killer whose
        own clock runs ahead would otherwise act early on every timeout."""
        timeout = self.settings.clock_first_sample_timeout_s
        if await self.clock.wait_measured(timeout):
            self.metrics.clock_offset.set(self.clock.offset.total_seconds())
            log.info("killer.clock", offset_s=round(self.clock.offset.total_seconds(), 3))
        else:
            log.error(
                "killer.clock_unmeasured",
                detail=f"no answer from the API server within {timeout} s: deciding on this "
                "host's clock until one comes (a skewed host clock acts early or late)",
            )

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

        async def own(number: int) -> None:
            producer = await self._start_producer(number)
            partition = Partition(number, producer)
            self.partitions[number] = partition
            await self._rebuild_or_later(partition)

        # Concurrently: fencing, offsets and snapshot reads are round trips and
        # file I/O (measured: 6 partitions from snapshots, 6.9 s one by one).
        self._taking += 1
        try:
            await asyncio.gather(*(own(n) for n in sorted(numbers - set(self.partitions))))
        finally:
            self._taking -= 1
        # Only now: while producers start, the partitions are not in self.partitions,
        # and readiness would say "deciding" with nothing folded.
        self._assigned = True
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
                transactional_id=transactional_id(
                    self.settings.group_id, self.kafka.topic_prefix, number
                ),
                max_batch_size=TRANSACTION_BATCH_BYTES,
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
                if partition.snapshotting is not None:
                    # Let a snapshot in progress finish: it is consistent, and the
                    # next owner may want it.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(partition.snapshotting)
                await partition.producer.stop()
                with contextlib.suppress(KeyError):
                    self.metrics.consumer_lag.remove(str(number))
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
        partition.loading = True
        partition.caught_up = False
        partition.assigned_at = time.monotonic()
        partition.ends = await self._consumer.end_offsets(tps)
        loaded = await self._load_snapshot(partition, tps) if self.snapshots else None
        if loaded is not None:
            header, partition.state = loaded
            partition.positions = {
                (topic, partition.number): header.positions[topic] for topic in JOB_TOPICS
            }
        else:
            partition.state = new_state()
            partition.positions = {(topic, partition.number): 0 for topic in JOB_TOPICS}
        # A new state (also one loaded from a snapshot: see docs/replay.md).
        partition.state_id = uuid.uuid4().hex[:16]
        partition.rebuilt_from = _positions(self.global_positions)
        # As the live loop does: nodes and config are read whole; folding them again
        # into a loaded state is idempotent (newer versions win).
        self.globals.seed(partition.state)
        for topic, tp in zip(JOB_TOPICS, tps, strict=True):
            self._consumer.seek(tp, partition.positions[(topic, partition.number)])
        partition.backlog.clear()  # what it held is before the positions sought to
        partition.loading = False
        partition.from_snapshot = loaded is not None
        partition.folded_since_snapshot = 0
        partition.snapshot_at = time.monotonic()
        partition.caught_up = all(
            partition.positions[(self.names.strip(tp.topic), tp.partition)] >= end
            for tp, end in partition.ends.items()
        )
        partition.dirty = True
        log.info(
            "killer.rebuilding",
            partition=partition.number,
            snapshot=loaded is not None,
            records=sum(
                end - partition.positions[(self.names.strip(tp.topic), tp.partition)]
                for tp, end in partition.ends.items()
            ),
        )

    async def _load_snapshot(
        self, partition: Partition, tps: list[TopicPartition]
    ) -> tuple[SnapshotHeader, KillerState] | None:
        """The newest snapshot that passes every check, or None (full replay)."""
        assert self._consumer is not None
        assert self.snapshots is not None
        store = self.snapshots
        job_partitions = len(self._consumer.partitions_for_topic(tps[0].topic) or ())
        starts = {
            self.names.strip(tp.topic): offset
            for tp, offset in (await self._consumer.beginning_offsets(tps)).items()
        }
        ends = {self.names.strip(tp.topic): offset for tp, offset in partition.ends.items()}
        for path in await asyncio.to_thread(store.candidates, partition.number):
            started = time.monotonic()
            try:
                header, payload = await asyncio.to_thread(
                    store.read, path, partition=partition.number, job_partitions=job_partitions
                )
                check_positions(header, starts, ends)
                state = await asyncio.to_thread(load_state, payload)
            except SnapshotRejected as exc:
                self.metrics.snapshots_skipped.labels(exc.reason).inc()
                log.warning(
                    "killer.snapshot_skipped",
                    partition=partition.number,
                    path=str(path),
                    reason=exc.reason,
                    detail=exc.detail,
                )
                continue
            self.metrics.snapshots_loaded.inc()
            log.info(
                "killer.snapshot_loaded",
                partition=partition.number,
                path=str(path),
                created_at=header.created_at.isoformat(),
                bytes=header.payload_bytes,
                seconds=round(time.monotonic() - started, 3),
            )
            return header, state
        return None

    def _update_gauges(self) -> None:
        caught_up = sum(1 for p in self.partitions.values() if p.caught_up)
        self.metrics.partitions.labels("ready").set(caught_up)
        self.metrics.partitions.labels("rebuilding").set(len(self.partitions) - caught_up)

    # -- folding ------------------------------------------------------------------

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> Any:
        try:
            return CODEC.decode(
                record.headers, record.value, self._topic_name(record.topic)
            ).message
        except DecodeError as exc:
            self.metrics.undecodable.labels(self.names.strip(record.topic)).inc()
            return exc

    def _fold_global(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.global_positions[(self.names.strip(record.topic), record.partition)] = (
            record.offset + 1
        )
        message = self._decode(record)
        if not isinstance(message, NodeObserved | ConfigSnapshot):
            return
        if not self.globals.fold(message):
            return  # stale: an older config snapshot shown again by compaction, ...
        for partition in self.partitions.values():
            if partition.frozen:
                partition.backlog.append(message)
                continue
            self._evolve_global(partition, message)

    def _evolve_global(self, partition: Partition, message: NodeObserved | ConfigSnapshot) -> None:
        """Fold a node or config record into one partition; if the core raises (see
        ``_refuse``), rebuild the partition, which seeds it from ``self.globals``
        without folding the record through ``evolve``."""
        try:
            evolve(partition.state, message)
        except Exception:  # see _refuse
            self.metrics.core_errors.labels("evolve").inc()
            log.exception("killer.evolve_failed", partition=partition.number, message=repr(message))
            partition.must_rebuild = True
            partition.caught_up = False
        partition.dirty = True

    async def _fold_all(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        """Fold records in order; count them once per topic (a labelled counter per
        record was a tenth of the live loop's CPU)."""
        counts: dict[str, int] = {}
        for record in records:
            folded = self._fold(record)
            if isinstance(folded, DecodeError):
                await self._dead_letter_once(record, folded.reason)
            elif isinstance(folded, str):
                await self._refuse(record, folded)
            elif folded:
                topic = self._topic_name(record.topic)
                counts[topic] = counts.get(topic, 0) + 1
        for topic, count in counts.items():
            self.metrics.folded.labels(topic).inc(count)

    def _fold(self, record: ConsumerRecord[bytes, bytes]) -> bool | DecodeError | str:
        """Fold one record of an owned partition: True if folded, False if not ours
        (or held back while frozen, or dead-lettered before), the error if it is
        poison (to dead-letter), a reason if the core raised on it (to dead-letter, and
        the partition's state, which the core left half-changed, to rebuild)."""
        partition = self.partitions.get(record.partition)
        if partition is None or partition.loading:
            return False  # revoked while the batch was in flight, or fetched before the seek
        position = (self._topic_name(record.topic), record.partition)
        if record.offset < partition.positions[position]:
            return False  # fetched before a seek forward (to a snapshot's positions)
        if partition.frozen:
            partition.backlog.append(record)
            return False
        if not partition.caught_up:
            crash_point("killer.rebuild")
        partition.positions[position] = record.offset + 1
        if self.dead_lettered and _source(record) in self.dead_lettered:
            return False  # a rebuild passing over what was refused before (by anyone)
        message = self._decode(record)
        if isinstance(message, DecodeError):
            return message
        try:
            evolve(partition.state, message)
        except Exception as exc:  # see _refuse
            self.metrics.core_errors.labels("evolve").inc()
            log.exception("killer.evolve_failed", source=_source(record))
            return f"core-error: evolve raised {type(exc).__name__}: {exc}"[:1000]
        partition.dirty = True
        partition.folded_since_snapshot += 1
        return True

    def _topic_name(self, full_name: str) -> str:
        """The design name of a topic (cached: called for every record)."""
        name = self._topic_names.get(full_name)
        if name is None:
            name = self._topic_names[full_name] = self.names.strip(full_name)
        return name

    async def _refuse(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """A record the core raised on. The core is total (its properties feed it
        arbitrary values), so this is the last line of defence against a bug: the
        record is dead-lettered and never folded again, by this instance or another
        (rebuilds skip dead-lettered records), and the partition is rebuilt without it.
        Without this, one record would stop its partition's killer, and every
        restarted one, for the topic's retention."""
        partition = self.partitions.get(record.partition)
        try:
            await self._dead_letter_once(record, reason)
        except KafkaError as exc:  # still skipped here; another instance may fold it again
            log.error("killer.dead_letter_failed", source=_source(record), error=str(exc))
        self.dead_lettered.add(_source(record))
        if partition is not None:
            partition.must_rebuild = True
            partition.caught_up = False

    async def _dead_letter_once(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        partition = self.partitions.get(record.partition)
        source = _source(record)
        if partition is not None and source not in self.dead_lettered:
            # Once, across rebuilds and instances.
            await self._dead_letter(partition, record, reason)
            self.dead_lettered.add(source)

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
            await self._thaw()  # what waited comes before what just arrived
            for records in batches.values():
                await self._fold_all(records)
            for records in (await global_consumer.getmany(timeout_ms=0)).values():
                for record in records:
                    self._fold_global(record)
            for partition in list(self.partitions.values()):
                if partition.must_rebuild:
                    await self._rebuild_or_later(partition)
            await self._check_caught_up(consumer)
            if batches:
                crash_point("killer.after-fold")
            now = self.clock.now()
            for partition in list(self.partitions.values()):
                if (
                    partition.caught_up
                    and partition.hold_until <= time.monotonic()
                    and (
                        partition.dirty
                        or (partition.next_due is not None and partition.next_due <= now)
                    )
                    and not partition.frozen
                ):
                    await self._decide(partition, now)
            # Here every caught-up partition's state is the log up to its positions
            # plus committed decisions (a failed transaction made it rebuild): the
            # one place a snapshot may be taken.
            if self.snapshots is not None:
                for partition in self.partitions.values():
                    self._maybe_snapshot(partition)
            self._sample_lag(consumer)

    def _wait_ms(self) -> int:
        """Until the earliest timer, at most ``max_poll_wait_s`` (10 ms while a partition
        is frozen for a snapshot, to thaw it soon)."""
        wait = self.settings.max_poll_wait_s
        now = self.clock.now()
        for partition in self.partitions.values():
            if partition.frozen or partition.backlog:
                wait = min(wait, 0.01)
            elif partition.caught_up and partition.next_due is not None:
                wait = min(wait, (partition.next_due - now).total_seconds())
        return max(0, int(wait * 1000))

    # -- snapshots --------------------------------------------------------------------

    async def _thaw(self) -> None:
        for partition in list(self.partitions.values()):
            if partition.frozen or not partition.backlog:
                continue
            backlog, partition.backlog = partition.backlog, []
            for item in backlog:
                if isinstance(item, ConsumerRecord):
                    await self._fold_all((item,))
                else:
                    self._evolve_global(partition, item)

    def _maybe_snapshot(self, partition: Partition) -> None:
        if (
            self._snapshotting  # one at a time: pickling holds the GIL, so two would
            # only freeze two partitions for twice as long
            or not partition.caught_up
            or partition.frozen
            or partition.backlog
            or partition.snapshotting is not None
            or partition.folded_since_snapshot == 0
        ):
            return
        due = partition.folded_since_snapshot >= self.settings.snapshot_every_records or (
            time.monotonic() - partition.snapshot_at >= self.settings.snapshot_every_s
        )
        if not due:
            return
        partition.frozen = True
        self._snapshotting = True
        partition.folded_since_snapshot = 0
        partition.snapshot_at = time.monotonic()
        positions = {topic: partition.positions[(topic, partition.number)] for topic in JOB_TOPICS}
        global_positions = {f"{t}/{n}": offset for (t, n), offset in self.global_positions.items()}
        partition.snapshotting = asyncio.create_task(
            self._snapshot(partition, partition.state, positions, global_positions)
        )

    async def _snapshot(
        self,
        partition: Partition,
        state: KillerState,
        positions: dict[str, int],
        global_positions: dict[str, int],
    ) -> None:
        assert self.snapshots is not None
        assert self._consumer is not None
        started = time.monotonic()
        try:
            try:
                payload = await asyncio.to_thread(dump_state, state)
            finally:
                partition.frozen = False
                self.metrics.snapshot_freeze_seconds.observe(time.monotonic() - started)
            header = make_header(
                prefix=self.kafka.topic_prefix,
                partition=partition.number,
                job_partitions=len(
                    self._consumer.partitions_for_topic(self.names(JOB_TOPICS[0])) or ()
                ),
                positions=positions,
                global_positions=global_positions,
                payload=payload,
            )
            size = await asyncio.to_thread(self.snapshots.write, header, payload)
        except Exception as exc:  # a snapshot is an optimisation: never stop deciding
            self.metrics.snapshot_failures.inc()
            log.error("killer.snapshot_failed", partition=partition.number, error=repr(exc))
            return
        finally:
            partition.snapshotting = None
            self._snapshotting = False
        elapsed = time.monotonic() - started
        self.metrics.snapshots_written.inc()
        self.metrics.snapshot_write_seconds.observe(elapsed)
        self.metrics.snapshot_bytes.labels(str(partition.number)).set(size)
        log.info(
            "killer.snapshot_written",
            partition=partition.number,
            bytes=size,
            seconds=round(elapsed, 3),
            positions=positions,
        )

    def _sample_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Consumer lag per partition, at most once a second (cheap: the high
        watermarks come with every fetch response)."""
        now = time.monotonic()
        if now - self._lag_sampled_at < 1.0:
            return
        self._lag_sampled_at = now
        self.metrics.clock_offset.set(self.clock.offset.total_seconds())
        left = 0
        for partition in self.partitions.values():
            if partition.loading:
                continue
            lag = 0
            for topic in JOB_TOPICS:
                tp = TopicPartition(self.names(topic), partition.number)
                high = consumer.highwater(tp)
                if high is None:
                    high = partition.ends.get(tp, 0)
                position = partition.positions.get((topic, partition.number), 0)
                lag += max(0, high - position)
                if not partition.caught_up:
                    left += max(0, partition.ends.get(tp, 0) - position)
            self.metrics.consumer_lag.labels(str(partition.number)).set(lag)
        self.metrics.lag.set(left)

    @staticmethod
    async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        """The consumer's position, or -1 when it has none yet. ``position()`` waits
        for one, which can take a whole group rejoin: the loop must go on meanwhile
        (to notice a stop, to decide for its other partitions)."""
        try:
            return await asyncio.wait_for(consumer.position(tp), timeout=0.5)
        except (TimeoutError, IllegalStateError):
            return -1

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for partition in list(self.partitions.values()):
            if partition.caught_up or partition.loading or partition.must_rebuild:
                continue
            for tp, end in partition.ends.items():
                if await self._position(consumer, tp) < end:
                    break
            else:
                partition.caught_up = True
                elapsed = time.monotonic() - partition.assigned_at
                start = "snapshot" if partition.from_snapshot else "log"
                self.metrics.rebuild_seconds.labels(start).observe(elapsed)
                log.info(
                    "killer.caught_up",
                    partition=partition.number,
                    seconds=round(elapsed, 3),
                    start=start,
                )
                self._update_gauges()

    def _decision_records(
        self, partition: Partition, now: datetime, decision: Decision, event_ids: list[str]
    ) -> list[OutgoingRecord]:
        """What this decision saw and when (DESIGN section 4: the clock is an input):
        one record, or parts of one when it lists more ids than a record holds."""
        positions = {**partition.positions, **self.global_positions}
        record = DecisionRecorded(
            partition=partition.number,
            decided_at=now,
            config_version=self.config.version if self.config is not None else 0,
            inputs=_positions(positions),
            state=partition.state_id,
            rebuilt_from=partition.rebuilt_from,
            killer=self.settings.identity,
        )
        commands = [cmd.command_id for cmd in decision.commands]
        return [
            outgoing(self.names, part, source=self.source, time=now)
            for part in decision_parts(record, commands, event_ids)
        ]

    async def _decide(self, partition: Partition, now: datetime) -> None:
        partition.dirty = False
        try:
            decision = decide(partition.state, now)
        except Exception:  # the last line of defence, as in _refuse
            # No record to blame: rebuild the state (decide may have left it half
            # changed) and hold this partition for a while, so that a decision that
            # keeps failing costs a log line and a rebuild per hold, not a hot loop;
            # the other partitions go on.
            self.metrics.core_errors.labels("decide").inc()
            log.exception("killer.decide_failed", partition=partition.number)
            await self._rebuild_or_later(partition)
            partition.hold_until = time.monotonic() + self.settings.decide_failure_hold_s
            return
        partition.next_due = decision.next_due_at
        if not decision.commands and not decision.kill_events:
            return
        event_ids = [event_id(ev) for ev in decision.kill_events]
        records = [
            outgoing(self.names, cmd, source=self.source, event_id=cmd.command_id, time=now)
            for cmd in decision.commands
        ] + [
            outgoing(self.names, ev, source=self.source, event_id=ev_id, time=now)
            for ev, ev_id in zip(decision.kill_events, event_ids, strict=True)
        ]
        records += self._decision_records(partition, now, decision, event_ids)
        started = time.monotonic()
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
        partition.hold_until = 0.0
        for cmd in decision.commands:
            self.metrics.commands.labels(cmd.step, cmd.trigger).inc()
            self.metrics.decide_lateness.observe(max(0.0, (now - cmd.due_at).total_seconds()))
        for ev in decision.kill_events:
            self.metrics.kill_events.labels(type(ev).__name__).inc()
        events: dict[str, int] = {}
        for ev in decision.kill_events:
            events[type(ev).__name__] = events.get(type(ev).__name__, 0) + 1
        log.info(
            "killer.decided",
            partition=partition.number,
            # Bounded: a decision about a Job of 20,000 pods is one line, not 2 MB.
            commands=[
                f"{c.step}:{c.namespace}/{c.pod_name}" for c in decision.commands[:LOGGED_COMMANDS]
            ],
            commands_total=len(decision.commands),
            events=events,
            records=len(records),
            seconds=round(time.monotonic() - started, 3),
        )
