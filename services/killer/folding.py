"""Folding records into the partitions' states, and what cannot be folded.

A record of an owned partition is decoded and folded with the core's ``evolve``.
A record that is not a message we understand is copied to ``deadletter`` (once,
across rebuilds and instances: the dead letters are read at start). A record
the core raises on (the core is total, so this is the last line of defence
against a bug) is dead-lettered too, never folded again, and its partition is
rebuilt without it, since ``evolve`` may have left the state half changed.
Nodes and config are read whole and folded into every partition's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.errors import KafkaError

from core import GlobalInputs, evolve
from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.observations import NodeObserved
from schemas.requests import ForceResumeRequested
from services.runtime.faults import crash_point
from services.runtime.kafka import (
    DEADLETTER_SOURCE_HEADER,
    dead_letter_record,
    send_in_transaction,
)
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC
from services.runtime.topics import TopicNames

from .metrics import KillerMetrics
from .partition import FOLDING, Partition, Phase
from .transport import Record

log = get_logger(__name__)


def source(record: Record) -> str:
    """How a dead letter names the record it holds (and ``dead_lettered`` keeps it)."""
    return f"{record.topic}/{record.partition}@{record.offset}"


class Folder:
    """Folds what the consumers read into the owned partitions' states."""

    def __init__(
        self, names: TopicNames, metrics: KillerMetrics, partitions: dict[int, Partition]
    ) -> None:
        self.names = names
        self.metrics = metrics
        self.partitions = partitions
        self.globals = GlobalInputs()
        """Nodes and config, as new partition states are seeded with them."""
        self.global_positions: dict[tuple[str, int], int] = {}
        self.dead_lettered: set[str] = set()
        """``topic/partition@offset`` of the records dead-lettered, by anyone."""
        self._topic_names: dict[str, str] = {}

    def topic_name(self, full_name: str) -> str:
        """The design name of a topic (cached: called for every record)."""
        name = self._topic_names.get(full_name)
        if name is None:
            name = self._topic_names[full_name] = self.names.strip(full_name)
        return name

    def decode(self, record: Record) -> Any:
        try:
            return CODEC.decode(record.headers, record.value, self.topic_name(record.topic)).message
        except DecodeError as exc:
            self.metrics.undecodable.labels(self.names.strip(record.topic)).inc()
            return exc

    def remember_dead_letter(self, record: Record) -> None:
        """A record of the dead-letter topic: the source it names is handled."""
        dead = dict(record.headers).get(DEADLETTER_SOURCE_HEADER)
        if dead:
            self.dead_lettered.add(dead.decode(errors="replace"))

    # -- nodes and config ---------------------------------------------------------

    def fold_global(self, record: Record) -> None:
        self.global_positions[(self.names.strip(record.topic), record.partition)] = (
            record.offset + 1
        )
        message = self.decode(record)
        if not isinstance(message, NodeObserved | ConfigSnapshot | ForceResumeRequested):
            return
        if not self.globals.fold(message):
            return  # stale: an older config snapshot shown again by compaction, ...
        for partition in self.partitions.values():
            if partition.phase is Phase.FROZEN:
                partition.backlog.append(message)
            else:
                self.evolve_global(partition, message)

    def evolve_global(
        self, partition: Partition, message: NodeObserved | ConfigSnapshot | ForceResumeRequested
    ) -> None:
        """Fold a node or config record into one partition. A partition whose state is
        to be (re)built gets it from ``self.globals`` when seeded; if the core raises
        (see :meth:`_refuse`), the partition is rebuilt, seeded without ``evolve``."""
        if partition.phase not in FOLDING:
            return
        try:
            evolve(partition.state, message)
        except Exception:  # see _refuse
            self.metrics.core_errors.labels("evolve").inc()
            log.exception("killer.evolve_failed", partition=partition.number, message=repr(message))
            partition.enter(Phase.STALE)
        partition.dirty = True

    # -- the Job-keyed topics ---------------------------------------------------------

    async def fold_all(self, records: Iterable[Record]) -> None:
        """Fold records in order; count them once per topic (a labelled counter per
        record was a tenth of the live loop's CPU)."""
        counts: dict[str, int] = {}
        for record in records:
            folded = self._fold(record)
            if isinstance(folded, DecodeError):
                await self._poison(record, folded.reason)
            elif isinstance(folded, str):
                await self._refuse(record, folded)
            elif folded:
                topic = self.topic_name(record.topic)
                counts[topic] = counts.get(topic, 0) + 1
        for topic, count in counts.items():
            self.metrics.folded.labels(topic).inc(count)

    async def thaw(self) -> None:
        """Fold what waited while its partition was frozen, before anything newer."""
        for partition in list(self.partitions.values()):
            if partition.phase is Phase.FROZEN or not partition.backlog:
                continue
            backlog, partition.backlog = partition.backlog, []
            for item in backlog:
                if isinstance(item, NodeObserved | ConfigSnapshot | ForceResumeRequested):
                    self.evolve_global(partition, item)
                else:
                    await self.fold_all((item,))

    def _fold(self, record: Record) -> bool | DecodeError | str:
        """Fold one record of an owned partition: True if folded, False if not ours
        (or held back while frozen, or dead-lettered before), the error if it is
        poison (to dead-letter), a reason if the core raised on it (to dead-letter, and
        the partition's state, which the core left half-changed, to rebuild)."""
        partition = self.partitions.get(record.partition)
        if partition is None or partition.phase not in FOLDING | {Phase.FROZEN}:
            return False  # revoked while the batch was in flight, fetched before the seek, ...
        position = (self.topic_name(record.topic), record.partition)
        if record.offset < partition.positions[position]:
            return False  # fetched before a seek forward (to a snapshot's positions)
        if partition.phase is Phase.FROZEN:
            partition.backlog.append(record)
            return False
        if partition.phase is Phase.CATCHING_UP:
            crash_point("killer.rebuild")
        partition.positions[position] = record.offset + 1
        if self.dead_lettered and source(record) in self.dead_lettered:
            return False  # a rebuild passing over what was refused before (by anyone)
        message = self.decode(record)
        if isinstance(message, DecodeError):
            return message
        try:
            evolve(partition.state, message)
        except Exception as exc:  # see _refuse
            self.metrics.core_errors.labels("evolve").inc()
            log.exception("killer.evolve_failed", source=source(record))
            return f"core-error: evolve raised {type(exc).__name__}: {exc}"[:1000]
        partition.dirty = True
        partition.folded_since_snapshot += 1
        return True

    async def _poison(self, record: Record, reason: str) -> None:
        """A record that does not decode: dead-lettered once, and skipped. If the dead
        letter cannot be written (Kafka away, the producer fenced), the partition is
        rebuilt, which meets the record again and tries again: the failure neither
        escapes the loop (which would stop every partition's decisions) nor loses the
        record."""
        try:
            await self._dead_letter_once(record, reason)
        except KafkaError as exc:
            log.error("killer.dead_letter_failed", source=source(record), error=str(exc))
            partition = self.partitions.get(record.partition)
            if partition is not None and partition.phase in FOLDING:
                partition.enter(Phase.STALE)

    async def _refuse(self, record: Record, reason: str) -> None:
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
            log.error("killer.dead_letter_failed", source=source(record), error=str(exc))
        self.dead_lettered.add(source(record))
        if partition is not None:
            partition.enter(Phase.STALE)

    async def _dead_letter_once(self, record: Record, reason: str) -> None:
        partition = self.partitions.get(record.partition)
        if partition is not None and source(record) not in self.dead_lettered:
            # Once, across rebuilds and instances.
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
            await send_in_transaction(partition.producer, [dead])
            log.warning(
                "killer.dead_lettered", source=f"{record.topic}@{record.offset}", reason=reason
            )
            self.dead_lettered.add(source(record))
