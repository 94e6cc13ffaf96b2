"""When a partition is snapshotted, freezing it meanwhile, and loading one at a rebuild.

The file format and store are :mod:`.snapshots`. A snapshot is taken only where
a partition's state is exactly the log up to its positions plus committed
decisions: at the end of a loop turn, caught up, no transaction open (the loop
calls :meth:`Snapshotter.maybe_freeze` there and nowhere else). Pickling runs in
a thread, so the partition is FROZEN until the pickle is done: what arrives for
it waits in its backlog (folded by the loop once thawed) and it decides nothing.
The checksum and the write run unfrozen. One snapshot at a time: pickling holds
the GIL, so two would only freeze two partitions for twice as long.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from core import KillerState
from services.runtime.logging import get_logger
from services.runtime.topics import TopicNames

from .metrics import KillerMetrics
from .partition import JOB_TOPICS, Partition, Phase
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
from .transport import JobConsumer, TopicPartition

log = get_logger(__name__)


class Snapshotter:
    def __init__(
        self,
        store: SnapshotStore,
        settings: KillerServiceSettings,
        metrics: KillerMetrics,
        names: TopicNames,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.names = names
        self.busy = False
        """A snapshot is being pickled or written."""
        self._tasks: dict[int, asyncio.Task[None]] = {}

    # -- writing ------------------------------------------------------------------

    def maybe_freeze(
        self,
        partition: Partition,
        consumer: JobConsumer,
        global_positions: dict[tuple[str, int], int],
    ) -> None:
        """Freeze ``partition`` and snapshot it in the background if one is due: that
        many records folded or that many seconds since the last, if it folded any."""
        if (
            self.busy
            or partition.phase is not Phase.DECIDING
            or partition.backlog
            or partition.number in self._tasks
            or partition.folded_since_snapshot == 0
        ):
            return
        due = partition.folded_since_snapshot >= self.settings.snapshot_every_records or (
            time.monotonic() - partition.snapshot_at >= self.settings.snapshot_every_s
        )
        if not due:
            return
        partition.enter(Phase.FROZEN)
        self.busy = True
        partition.folded_since_snapshot = 0
        partition.snapshot_at = time.monotonic()
        positions = {topic: partition.positions[(topic, partition.number)] for topic in JOB_TOPICS}
        global_at = {f"{t}/{n}": offset for (t, n), offset in global_positions.items()}
        job_partitions = len(consumer.partitions_for_topic(self.names(JOB_TOPICS[0])) or ())
        self._tasks[partition.number] = asyncio.create_task(
            self._snapshot(partition, partition.state, job_partitions, positions, global_at)
        )

    async def settle(self, partition: Partition) -> None:
        """Let a snapshot in progress finish (at release): it is consistent, and the
        next owner may want it."""
        task = self._tasks.get(partition.number)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _snapshot(
        self,
        partition: Partition,
        state: KillerState,
        job_partitions: int,
        positions: dict[str, int],
        global_positions: dict[str, int],
    ) -> None:
        started = time.monotonic()
        try:
            try:
                payload = await asyncio.to_thread(dump_state, state)
            finally:
                if partition.phase is Phase.FROZEN:
                    partition.enter(Phase.DECIDING)
                self.metrics.snapshot_freeze_seconds.observe(time.monotonic() - started)
            header = make_header(
                prefix=self.names.prefix,
                partition=partition.number,
                job_partitions=job_partitions,
                positions=positions,
                global_positions=global_positions,
                payload=payload,
            )
            size = await asyncio.to_thread(self.store.write, header, payload)
        except Exception as exc:  # a snapshot is an optimisation: never stop deciding
            self.metrics.snapshot_failures.inc()
            log.error("killer.snapshot_failed", partition=partition.number, error=repr(exc))
            return
        finally:
            self._tasks.pop(partition.number, None)
            self.busy = False
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

    # -- loading ------------------------------------------------------------------

    async def load(
        self, partition: Partition, consumer: JobConsumer, tps: list[TopicPartition]
    ) -> tuple[SnapshotHeader, KillerState] | None:
        """The newest snapshot of ``partition`` that passes every check, or None (full
        replay). ``partition.ends`` must be read."""
        job_partitions = len(consumer.partitions_for_topic(tps[0].topic) or ())
        starts = {
            self.names.strip(tp.topic): offset
            for tp, offset in (await consumer.beginning_offsets(tps)).items()
        }
        ends = {self.names.strip(tp.topic): offset for tp, offset in partition.ends.items()}
        for path in await asyncio.to_thread(self.store.candidates, partition.number):
            started = time.monotonic()
            try:
                header, payload = await asyncio.to_thread(
                    self.store.read, path, partition=partition.number, job_partitions=job_partitions
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
