"""Reading the recorded history: every topic a killer partition folds, plus its
decision records, as plain in-memory streams (no Kafka past this module).

Records are kept raw (bytes and headers) and decoded once, separately, so that a
benchmark can tell decoding from the walk, and so that the replay can compare the
recorded commands and kill events byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from schemas.cloudevents import DecodeError
from schemas.decisions import DecisionRecorded, IncompleteDecision, merge_parts
from schemas.topics import (
    CONFIG,
    FORCE_RESUMES,
    K8S_NODES,
    K8S_OBJECTS,
    KILL_COMMANDS,
    KILL_DECISIONS,
    KILL_EVENTS,
    KILL_REQUESTS,
    KILL_RESULTS,
)
from services.runtime.kafka import read_partitions_to_end, topic_partitions
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

JOB_TOPICS = (K8S_OBJECTS, KILL_REQUESTS, KILL_COMMANDS, KILL_RESULTS, KILL_EVENTS)
"""The Job-keyed topics a killer partition folds (the same list as the killer's)."""
GLOBAL_TOPICS = (K8S_NODES, CONFIG, FORCE_RESUMES)
"""Read whole by every killer instance and folded into every partition."""
RANK = {topic: rank for rank, topic in enumerate((*GLOBAL_TOPICS, *JOB_TOPICS))}
"""Tie-break between topics for records with the same timestamp."""


@dataclass(slots=True)
class Rec:
    """One record of one topic-partition (topic: the design name, without prefix)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    message: Any = None
    """The decoded message, a :class:`DecodeError`, or None until :func:`decode_all`."""

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    def header(self, name: str) -> str | None:
        for key, raw in self.headers:
            if key == name:
                return raw.decode(errors="replace")
        return None


Stream = list[Rec]
"""The records of one topic-partition, in offset order."""


@dataclass
class History:
    """The streams of some killer partitions and the global topics."""

    streams: dict[tuple[str, int], Stream] = field(default_factory=dict)

    def stream(self, topic: str, partition: int) -> Stream:
        return self.streams.get((topic, partition), [])

    def global_streams(self) -> dict[tuple[str, int], Stream]:
        return {k: v for k, v in self.streams.items() if k[0] in GLOBAL_TOPICS}

    def partitions(self) -> list[int]:
        """The Job-keyed partition numbers with at least one decision record."""
        return sorted({p for (t, p), s in self.streams.items() if t == KILL_DECISIONS and s})

    def records(self) -> Iterable[Rec]:
        for stream in self.streams.values():
            yield from stream

    def add(self, rec: Rec) -> None:
        self.streams.setdefault((rec.topic, rec.partition), []).append(rec)


def decode(rec: Rec) -> Any:
    """Decode one record once (undecodable: the :class:`DecodeError`, skipped by the walk
    as the killer skips it)."""
    if rec.message is None:
        try:
            rec.message = CODEC.decode(rec.headers, rec.value, rec.topic).message
        except DecodeError as exc:
            rec.message = exc
    return rec.message


@dataclass(frozen=True)
class RecordedDecision:
    """One decision as the killer recorded it: its parts put back together."""

    rec: Rec
    """Its (first) record in ``kill.decisions``."""
    record: DecisionRecorded
    """Every id of the decision (``parts`` 1)."""
    incomplete: str | None = None
    """Which parts were found, when not all of them were (the ids are then those of
    the parts found): a log cut by retention, or damaged."""


def decisions(stream: Stream) -> Iterator[RecordedDecision]:
    """The decisions of a ``kill.decisions`` stream in order, each once: a decision
    written in parts (``part`` 1..``parts``, consecutive records of one transaction)
    is merged into one record."""
    pending: list[tuple[Rec, DecisionRecorded]] = []

    def flush() -> Iterator[RecordedDecision]:
        if not pending:
            return
        parts = [m for _, m in pending]
        try:
            yield RecordedDecision(pending[0][0], merge_parts(parts))
        except IncompleteDecision as exc:
            merged = parts[0].model_copy(
                update={
                    "command_ids": tuple(i for p in parts for i in p.command_ids),
                    "event_ids": tuple(i for p in parts for i in p.event_ids),
                    "part": 1,
                    "parts": 1,
                }
            )
            yield RecordedDecision(pending[0][0], merged, str(exc))
        pending.clear()

    for rec in stream:
        message = decode(rec)
        if not isinstance(message, DecisionRecorded):
            continue
        if pending:
            first = pending[0][1]
            if message.part == 1 or (message.decided_at, message.state, message.parts) != (
                first.decided_at,
                first.state,
                first.parts,
            ):
                yield from flush()
        pending.append((rec, message))
        if message.part >= message.parts:
            yield from flush()
    yield from flush()


def decode_all(history: History) -> int:
    """Decode every record; returns how many were undecodable."""
    bad = 0
    for rec in history.records():
        if isinstance(decode(rec), DecodeError):
            bad += 1
    return bad


async def read_history(kafka: KafkaSettings, partitions: Sequence[int] | None = None) -> History:
    """Read the Job-keyed topics (partitions ``partitions``, default all) and the global
    topics to their end offsets, committed records only (as the killer reads them)."""
    names = TopicNames(kafka.topic_prefix)
    job = await topic_partitions(kafka, [names(t) for t in (*JOB_TOPICS, KILL_DECISIONS)])
    whole = await topic_partitions(kafka, [names(t) for t in GLOBAL_TOPICS])
    wanted = None if partitions is None else set(partitions)
    tps: list[TopicPartition] = [
        tp for tp in job if wanted is None or tp.partition in wanted
    ] + list(whole)
    history = History()

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        history.add(
            Rec(
                names.strip(record.topic),
                record.partition,
                record.offset,
                record.timestamp,
                record.value,
                list(record.headers),
            )
        )

    await read_partitions_to_end(kafka, tps, keep, client_id="jobreaper-replay")
    for stream in history.streams.values():
        stream.sort(key=lambda rec: rec.offset)
    return history


__all__ = [
    "GLOBAL_TOPICS",
    "JOB_TOPICS",
    "RANK",
    "History",
    "Rec",
    "RecordedDecision",
    "Stream",
    "decisions",
    "decode",
    "decode_all",
    "read_history",
]
