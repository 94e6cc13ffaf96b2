"""The killer's shell: Kafka in, the pure core, Kafka out, on time.

This module is the loop and the wiring; each concern has its module
(docs/killer.md, "Modules"):

- :mod:`.partition`: a partition's lifecycle, one explicit :class:`~.partition.Phase`
  and its transitions (TAKING -> STALE -> REBUILDING -> CATCHING_UP -> DECIDING
  <-> FROZEN; RELEASED);
- :mod:`.rebuilding`: a partition's state rebuilt from the log (or a snapshot) up
  to the end offsets read after fencing its previous owner;
- :mod:`.folding`: records folded into the states, dead letters, core errors;
- :mod:`.committing`: one decision, one transaction of the partition's producer;
- :mod:`.snapshotting`: when a partition is frozen and written, and loading;
- :mod:`.transport`: the Kafka clients behind the few methods used.

**Transactions and fencing.** Each owned partition has its own
transactional producer, ``transactional.id = <group>.<prefix>p<N>``: the
classic remedy for aiokafka's missing KIP-447. A new owner's producer init
fences the previous owner's (a zombie can no longer commit) and completes
or aborts its open transaction *before* the new owner reads the end offsets
it rebuilds to, so it sees every committed decision.

**Timers.** ``decide`` returns when it next needs to run; the loop waits for
records at most until the earliest of those instants, so a step happens at
its due time, not at the next event or resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from core import GlobalInputs, decide
from schemas.config import ConfigSnapshot
from schemas.topics import DEADLETTER
from services.runtime.clock import ApiClock, Probe
from services.runtime.faults import crash_point
from services.runtime.logging import get_logger
from services.runtime.retry import Backoff
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

from .committing import Committer, Outcome
from .folding import Folder
from .metrics import KillerMetrics
from .partition import (
    CAUGHT_UP,
    GLOBAL_TOPICS,
    JOB_TOPICS,
    Partition,
    Phase,
    overdue_seconds,
    readiness,
)
from .rebuilding import Rebuilder
from .settings import KillerServiceSettings
from .snapshots import SnapshotStore
from .snapshotting import Snapshotter
from .transport import (
    AiokafkaClients,
    JobConsumer,
    KillerKafka,
    Producer,
    TopicPartition,
    TopicReader,
)

log = get_logger(__name__)

PRODUCER_START_BACKOFF = Backoff(initial_s=0.5, max_s=10.0)
"""Between tries to start a partition's producer while the broker is away."""


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
        clients: KillerKafka | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.clients = clients or AiokafkaClients(kafka, settings)
        self.clock = clock or ApiClock()
        """``now`` for every decision: the API server's clock when ``clock_probe``
        measures it (services/runtime/clock.py), else this host's."""
        self._clock_probe = clock_probe
        self.names = TopicNames(kafka.topic_prefix)
        self.registry = registry or CollectorRegistry()
        self.metrics = KillerMetrics(self.registry)
        self.source = f"/jobreaper/killer/{settings.identity}"
        self.partitions: dict[int, Partition] = {}
        # At scrape time: an alert on it needs no loop iteration to see a stuck loop.
        self.metrics.decision_overdue.set_function(
            lambda: overdue_seconds(self.partitions.values(), self.clock.now())
        )
        self.folder = Folder(self.names, self.metrics, self.partitions)
        self.snapshotter = (
            Snapshotter(
                SnapshotStore(Path(settings.snapshot_dir), kafka.topic_prefix),
                settings,
                self.metrics,
                self.names,
            )
            if settings.snapshot_dir
            else None
        )
        self.rebuilder = Rebuilder(self.names, self.folder, self.snapshotter, self.metrics)
        self.committer = Committer(
            self.names, self.metrics, source=self.source, identity=settings.identity
        )
        self._consumer: JobConsumer | None = None
        self._lag_sampled_at = 0.0
        self._assigned = False
        self._global_ready = False
        self._stopping = asyncio.Event()

    @property
    def config(self) -> ConfigSnapshot | None:
        """The newest configuration snapshot read."""
        return self.folder.globals.config

    @property
    def globals(self) -> GlobalInputs:
        """Nodes and config as read, what new partition states are seeded with."""
        return self.folder.globals

    def _client_id(self, suffix: str = "") -> str:
        return f"jobreaper-killer-{self.settings.identity}{suffix}"

    # -- the service protocol -------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def readiness(self) -> tuple[bool, str]:
        if self._clock_probe is not None and not self.clock.measured and not self._global_ready:
            return False, "measuring the API server's clock"
        if not self._global_ready:
            return False, "reading nodes and config"
        return readiness(self.partitions, assigned=self._assigned)

    async def run(self) -> None:
        if self.kafka.create_topics:
            await self.clients.ensure_topics()
        global_reader = self.clients.reader(
            [self.names(t) for t in GLOBAL_TOPICS], client_id=self._client_id()
        )
        await global_reader.start()
        consumer = self.clients.consumer(client_id=self._client_id())
        clock_task = (
            asyncio.create_task(self.clock.run(self._clock_probe))
            if self._clock_probe is not None
            else None
        )
        try:
            if clock_task is not None:
                await self._measure_clock()
            await global_reader.read_to_end(self.folder.fold_global)
            await self._read_dead_letters()
            self._global_ready = True
            await consumer.start()
            self._consumer = consumer
            consumer.subscribe([self.names(t) for t in JOB_TOPICS], listener=_Rebalance(self))
            await self._loop(consumer, global_reader)
        finally:
            if clock_task is not None:
                clock_task.cancel()
            await consumer.stop()
            await global_reader.stop()
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
        reader = self.clients.reader([self.names(DEADLETTER)], client_id=self._client_id("-dlq"))
        await reader.start()
        try:
            await reader.read_to_end(self.folder.remember_dead_letter)
        finally:
            await reader.stop()

    # -- taking and releasing partitions (the rebalance callback, beside the loop) ----

    async def take(self, numbers: set[int]) -> None:
        """Own these partition numbers: fence the old owner, then rebuild from the log."""
        assert self._consumer is not None
        consumer = self._consumer

        async def own(number: int) -> None:
            partition = Partition(number, self._producer(number))
            self.partitions[number] = partition
            await self._start_producer(partition)
            if partition.enter(Phase.STALE):
                await self.rebuilder.rebuild_or_later(consumer, partition)
            self._update_gauges()

        # Concurrently: fencing, offsets and snapshot reads are round trips and
        # file I/O (measured: 6 partitions from snapshots, 6.9 s one by one).
        await asyncio.gather(*(own(n) for n in sorted(numbers - set(self.partitions))))
        # Only now: readiness says "waiting for partitions" until the first take.
        self._assigned = True
        self._update_gauges()

    def _producer(self, number: int) -> Producer:
        return self.clients.producer(number, client_id=self._client_id(f"-p{number}"))

    async def _start_producer(self, partition: Partition) -> None:
        """Start the partition's transactional producer: InitProducerId fences the
        previous owner. Retried while the broker is away (a restart): an exception
        here would only be logged by aiokafka's rebalance machinery, and the
        partition would stay assigned but never decided for. A partition released
        meanwhile stops its producer here (release leaves a starting one alone)."""
        delays = PRODUCER_START_BACKOFF.delays()
        while True:
            try:
                await partition.producer.start()
            except KafkaError as exc:
                await partition.producer.stop()  # or aiokafka warns about an unclosed producer
                if self._stopping.is_set():
                    raise
                if partition.released:
                    return
                delay = delays.next()
                log.warning(
                    "killer.producer_start_failed",
                    partition=partition.number,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                if partition.released:
                    return
                partition.producer = self._producer(partition.number)
                continue
            if partition.released:
                await partition.producer.stop()
            return

    async def release(self, numbers: set[int]) -> None:
        for number in numbers:
            partition = self.partitions.pop(number, None)
            if partition is None:
                continue
            starting = partition.phase is Phase.TAKING
            partition.enter(Phase.RELEASED)
            if self.snapshotter is not None:
                await self.snapshotter.settle(partition)
            if not starting:
                await partition.producer.stop()
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(str(number))
        self._update_gauges()

    def _update_gauges(self) -> None:
        caught_up = sum(1 for p in self.partitions.values() if p.phase in CAUGHT_UP)
        self.metrics.partitions.labels("ready").set(caught_up)
        self.metrics.partitions.labels("rebuilding").set(len(self.partitions) - caught_up)

    # -- the loop -------------------------------------------------------------------

    async def _loop(self, consumer: JobConsumer, global_reader: TopicReader) -> None:
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=self._wait_ms())
            await self.folder.thaw()  # what waited comes before what just arrived
            for records in batches.values():
                await self.folder.fold_all(records)
            for records in (await global_reader.getmany(timeout_ms=0)).values():
                for record in records:
                    self.folder.fold_global(record)
            for partition in list(self.partitions.values()):
                if partition.phase is Phase.STALE:
                    await self.rebuilder.rebuild_or_later(consumer, partition)
            if await self.rebuilder.check_caught_up(consumer, list(self.partitions.values())):
                self._update_gauges()
            if batches:
                crash_point("killer.after-fold")
            now = self.clock.now()
            for partition in list(self.partitions.values()):
                if partition.may_decide(now, time.monotonic()):
                    await self._decide(partition, now)
            # Here every caught-up partition's state is the log up to its positions
            # plus committed decisions (a failed transaction made it rebuild): the
            # one place a snapshot may be taken.
            if self.snapshotter is not None:
                for partition in list(self.partitions.values()):
                    self.snapshotter.maybe_freeze(partition, consumer, self.folder.global_positions)
            self._sample_lag(consumer)

    def _wait_ms(self) -> int:
        """Until the earliest timer, at most ``max_poll_wait_s`` (10 ms while a partition
        is frozen for a snapshot, to thaw it soon)."""
        wait = self.settings.max_poll_wait_s
        now = self.clock.now()
        for partition in self.partitions.values():
            if partition.phase is Phase.FROZEN or partition.backlog:
                wait = min(wait, 0.01)
            elif partition.phase is Phase.DECIDING and partition.next_due is not None:
                wait = min(wait, (partition.next_due - now).total_seconds())
        return max(0, int(wait * 1000))

    def _sample_lag(self, consumer: JobConsumer) -> None:
        """At most once a second."""
        now = time.monotonic()
        if now - self._lag_sampled_at < 1.0:
            return
        self._lag_sampled_at = now
        self.metrics.clock_offset.set(self.clock.offset.total_seconds())
        self.rebuilder.sample_lag(consumer, list(self.partitions.values()))

    async def _decide(self, partition: Partition, now: datetime) -> None:
        assert self._consumer is not None
        partition.dirty = False
        try:
            decision = decide(partition.state, now)
        except Exception:  # the last line of defence, as in Folder._refuse
            # No record to blame: rebuild the state (decide may have left it half
            # changed) and hold this partition for a while, so that a decision that
            # keeps failing costs a log line and a rebuild per hold, not a hot loop;
            # the other partitions go on.
            self.metrics.core_errors.labels("decide").inc()
            log.exception("killer.decide_failed", partition=partition.number)
            partition.enter(Phase.STALE)
            await self.rebuilder.rebuild_or_later(self._consumer, partition)
            partition.hold_until = time.monotonic() + self.settings.decide_failure_hold_s
            return
        partition.next_due = decision.next_due_at
        if not decision.commands and not decision.kill_events:
            return
        config = self.config
        outcome = await self.committer.commit(
            partition,
            now,
            decision,
            config_version=config.version if config is not None else 0,
            global_positions=self.folder.global_positions,
        )
        if outcome is Outcome.FENCED:
            if self.partitions.get(partition.number) is partition:
                await self.release({partition.number})
        elif outcome is Outcome.FAILED:
            if partition.enter(Phase.STALE):
                await self.rebuilder.rebuild_or_later(self._consumer, partition)
        else:
            partition.hold_until = 0.0
