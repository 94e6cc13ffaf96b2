"""Decision records: what the killer had seen, and when, each time it decided.

The clock is an input of the pure core (``decide(state, now, config)``). For a
replay to reproduce the killer's commands byte for byte it must feed the same
``now`` after folding the same input records. The killer therefore writes one
``DecisionRecorded`` per committed ``decide`` that produced anything, in the
same Kafka transaction as the commands and kill events it lists.

A decision with more than ``MAX_IDS_PER_DECISION_PART`` (10,000) ids is written
as several records, ``part`` 1..``parts``, consecutive in the same partition and
transaction: each repeats every field but lists a slice of the ids (commands
first, then kill events); :func:`merge_parts` puts them back together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from .base import Message, UtcDatetime
from .parts import MAX_IDS_PER_DECISION_PART, PART_TARGET_BYTES, is_one, json_bytes, split
from .topics import KILL_DECISIONS


class InputPosition(BaseModel):
    """The killer had folded every record of ``topic``/``partition`` below ``offset``."""

    model_config = ConfigDict(frozen=True)

    topic: str
    """The design name of the topic (without the prefix), e.g. ``k8s.objects``."""
    partition: NonNegativeInt
    offset: NonNegativeInt
    """The next offset it would have folded (the consumer position)."""


class DecisionRecorded(Message):
    """One committed ``decide`` of one killer partition."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.decision.recorded.v1"
    TOPIC: ClassVar[str] = KILL_DECISIONS

    partition: NonNegativeInt
    """The Job-keyed partition number the decision was made for."""
    decided_at: UtcDatetime
    """The ``now`` passed to ``decide``."""
    config_version: NonNegativeInt
    """The configuration snapshot version folded at that point (0: built-in defaults)."""
    inputs: tuple[InputPosition, ...]
    """Every topic-partition folded into this partition's state, and how far."""
    command_ids: tuple[str, ...] = ()
    """The commands decided, in order (``kill.commands``, same partition)."""
    event_ids: tuple[str, ...] = ()
    """The CloudEvents ids of the kill events decided, in order (``kill.events``)."""
    killer: str
    """The identity of the killer instance that decided."""
    state: str = ""
    """Which state of this partition decided: a new id (random) each time a killer
    builds the partition's state (at start, after a rebalance, after a failed
    transaction); equal ids, one continuous state. Empty: not recorded (a replay
    then assumes one continuous state from the beginning)."""
    rebuilt_from: tuple[InputPosition, ...] = ()
    """The global positions (``k8s.nodes``, ``config``) when that state was built.
    A state starts from the newest node observation per node and the newest config
    below them, not their history (a node's lost-since time is then its newest
    observation's), then folds the Job-keyed topics from offset 0."""

    part: PositiveInt = Field(
        1,
        exclude_if=is_one,
        description=(
            "Which record of the decision this is, 1..parts (absent: 1). A decision with"
            f" more than {MAX_IDS_PER_DECISION_PART:,} ids is split over several records"
            " with the same fields, each listing a slice of the ids (commands, then events)."
        ),
    )
    parts: PositiveInt = Field(
        1,
        exclude_if=is_one,
        description="How many records the decision is split over (absent: 1).",
    )

    def kafka_key(self) -> str:
        return f"partition/{self.partition}"


def decision_parts(
    record: DecisionRecorded, command_ids: Sequence[str], event_ids: Sequence[str]
) -> tuple[DecisionRecorded, ...]:
    """``record`` (its ids ignored) listing these ids, as one record or as parts of at
    most ``MAX_IDS_PER_DECISION_PART`` ids and ``PART_TARGET_BYTES``."""
    ids = [(True, i) for i in command_ids] + [(False, i) for i in event_ids]
    empty = record.model_copy(
        update={"command_ids": (), "event_ids": (), "part": 99_999, "parts": 99_999}
    )
    slices = split(
        ids,
        lambda entry: json_bytes(entry[1]) + 3,  # quotes and comma
        max_items=MAX_IDS_PER_DECISION_PART,
        max_bytes=PART_TARGET_BYTES - len(empty.model_dump_json().encode()),
    )
    return tuple(
        record.model_copy(
            update={
                "command_ids": tuple(i for command, i in chunk if command),
                "event_ids": tuple(i for command, i in chunk if not command),
                "part": number,
                "parts": len(slices),
            }
        )
        for number, chunk in enumerate(slices, 1)
    )


class IncompleteDecision(ValueError):
    """The parts given are not parts 1..parts of one decision."""


def merge_parts(parts: Sequence[DecisionRecorded]) -> DecisionRecorded:
    """One record with every id of a decision, from its parts in order (a single
    record is returned as is). Raises ``IncompleteDecision`` unless ``parts`` are
    exactly parts 1..n of one decision (same partition, time, state, n)."""
    if len(parts) == 1 and parts[0].parts == 1:
        return parts[0]
    first = parts[0] if parts else None
    if first is None or [p.part for p in parts] != list(range(1, first.parts + 1)):
        numbers = ", ".join(str(p.part) for p in parts)
        total = first.parts if first is not None else 0
        raise IncompleteDecision(f"parts {numbers or 'none'} of {total}")
    for p in parts:
        if (p.partition, p.decided_at, p.state, p.parts) != (
            first.partition,
            first.decided_at,
            first.state,
            first.parts,
        ):
            raise IncompleteDecision(f"part {p.part} is of another decision")
    return first.model_copy(
        update={
            "command_ids": tuple(i for p in parts for i in p.command_ids),
            "event_ids": tuple(i for p in parts for i in p.event_ids),
            "part": 1,
            "parts": 1,
        }
    )


DECISIONS: tuple[type[Message], ...] = (DecisionRecorded,)

__all__ = [
    "DECISIONS",
    "DecisionRecorded",
    "IncompleteDecision",
    "InputPosition",
    "decision_parts",
    "merge_parts",
]
