"""Rebuilding a partition's state from the log, and knowing when it has caught up.

A rebuild (on assignment, after the core raised, after a failed transaction)
reads the end offsets of the partition's five topic-partitions (its producer
has fenced the previous owner, so they include every decision that owner will
ever commit), loads the newest valid snapshot if any, seeds the state with the
nodes and config, and seeks the consumer to where folding starts. The
partition decides nothing until the consumer's position reaches those end
offsets. Offsets are never committed: the log is the state.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka.errors import IllegalStateError, KafkaError

from core import new_state
from services.runtime.logging import get_logger
from services.runtime.topics import TopicNames

from .folding import Folder
from .metrics import KillerMetrics
from .partition import CAUGHT_UP, JOB_TOPICS, Partition, Phase, input_positions
from .snapshotting import Snapshotter
from .transport import JobConsumer, TopicPartition

ANNOUNCING_PARTITION = 0
"""The partition whose state raises the guard's ``ForceDeletionPaused``/``Resumed``."""

log = get_logger(__name__)


class Rebuilder:
    def __init__(
        self,
        names: TopicNames,
        folder: Folder,
        snapshotter: Snapshotter | None,
        metrics: KillerMetrics,
    ) -> None:
        self.names = names
        self.folder = folder
        self.snapshotter = snapshotter
        self.metrics = metrics

    async def rebuild_or_later(self, consumer: JobConsumer, partition: Partition) -> None:
        """Rebuild a STALE partition now; if Kafka does not answer (a broker restart),
        it is STALE again and the loop tries again: it decides nothing meanwhile."""
        try:
            await self._rebuild(consumer, partition)
        except KafkaError as exc:
            if partition.enter(Phase.STALE):
                log.warning(
                    "killer.rebuild_deferred",
                    partition=partition.number,
                    error=f"{type(exc).__name__}: {exc}",
                )

    async def _rebuild(self, consumer: JobConsumer, partition: Partition) -> None:
        if not partition.enter(Phase.REBUILDING):
            return
        tps = [TopicPartition(self.names(t), partition.number) for t in JOB_TOPICS]
        partition.assigned_at = time.monotonic()
        partition.ends = await consumer.end_offsets(tps)
        loaded = None
        if self.snapshotter is not None and not partition.released:
            loaded = await self.snapshotter.load(partition, consumer, tps)
        if partition.released:
            return  # revoked meanwhile: its topic-partitions are no longer ours to seek
        if loaded is not None:
            header, partition.state = loaded
            partition.positions = {
                (topic, partition.number): header.positions[topic] for topic in JOB_TOPICS
            }
        else:
            partition.state = new_state()
            partition.positions = {(topic, partition.number): 0 for topic in JOB_TOPICS}
        # Partition 0 raises the mass-disruption guard's alerts (every partition decides
        # the guard alike; one alert per tripping: core.guard).
        partition.state.announces = partition.number == ANNOUNCING_PARTITION
        # A new state (also one loaded from a snapshot: see docs/replay.md).
        partition.state_id = uuid.uuid4().hex[:16]
        partition.rebuilt_from = input_positions(self.folder.global_positions)
        # As the live loop does: nodes and config are read whole; folding them again
        # into a loaded state is idempotent (newer versions win).
        self.folder.globals.seed(partition.state)
        for topic, tp in zip(JOB_TOPICS, tps, strict=True):
            consumer.seek(tp, partition.positions[(topic, partition.number)])
        partition.backlog.clear()  # what it held is before the positions sought to
        partition.from_snapshot = loaded is not None
        partition.folded_since_snapshot = 0
        partition.snapshot_at = time.monotonic()
        partition.dirty = True
        left = self._left(partition)
        partition.enter(Phase.DECIDING if left == 0 else Phase.CATCHING_UP)
        log.info(
            "killer.rebuilding",
            partition=partition.number,
            snapshot=loaded is not None,
            records=left,
        )

    def _left(self, partition: Partition) -> int:
        """Offsets between where folding starts and the end offsets (markers included)."""
        return sum(
            max(0, end - partition.positions[(self.names.strip(tp.topic), tp.partition)])
            for tp, end in partition.ends.items()
        )

    async def check_caught_up(self, consumer: JobConsumer, partitions: list[Partition]) -> bool:
        """Move every CATCHING_UP partition whose consumer positions reached its end
        offsets to DECIDING; True if any did."""
        changed = False
        for partition in partitions:
            if partition.phase is not Phase.CATCHING_UP:
                continue
            for tp, end in partition.ends.items():
                if await _position(consumer, tp) < end:
                    break
            else:
                if not partition.enter(Phase.DECIDING):
                    continue
                changed = True
                elapsed = time.monotonic() - partition.assigned_at
                start = "snapshot" if partition.from_snapshot else "log"
                self.metrics.rebuild_seconds.labels(start).observe(elapsed)
                log.info(
                    "killer.caught_up",
                    partition=partition.number,
                    seconds=round(elapsed, 3),
                    start=start,
                )
        return changed

    def sample_lag(self, consumer: JobConsumer, partitions: list[Partition]) -> None:
        """Records between what each partition folded and the high watermark (cheap:
        the high watermarks come with every fetch response), and what rebuilds have
        left to fold."""
        left = 0
        for partition in partitions:
            if partition.phase not in CAUGHT_UP | {Phase.CATCHING_UP}:
                continue
            lag = 0
            for topic in JOB_TOPICS:
                tp = TopicPartition(self.names(topic), partition.number)
                high = consumer.highwater(tp)
                if high is None:
                    high = partition.ends.get(tp, 0)
                position = partition.positions.get((topic, partition.number), 0)
                lag += max(0, high - position)
                if partition.phase is Phase.CATCHING_UP:
                    left += max(0, partition.ends.get(tp, 0) - position)
            self.metrics.consumer_lag.labels(str(partition.number)).set(lag)
        self.metrics.lag.set(left)


async def _position(consumer: JobConsumer, tp: TopicPartition) -> int:
    """The consumer's position, or -1 when it has none yet. ``position()`` waits
    for one, which can take a whole group rejoin: the loop must go on meanwhile
    (to notice a stop, to decide for its other partitions)."""
    try:
        return await asyncio.wait_for(consumer.position(tp), timeout=0.5)
    except (TimeoutError, IllegalStateError):
        return -1
