"""Decision records: what the killer had seen, and when, each time it decided.

The clock is an input of the pure core (``decide(state, now, config)``). For a
replay to reproduce the killer's commands byte for byte it must feed the same
``now`` after folding the same input records. The killer therefore writes one
``DecisionRecorded`` per committed ``decide`` that produced anything, in the
same Kafka transaction as the commands and kill events it lists.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, NonNegativeInt

from .base import Message, UtcDatetime
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

    def kafka_key(self) -> str:
        return f"partition/{self.partition}"


DECISIONS: tuple[type[Message], ...] = (DecisionRecorded,)

__all__ = ["DECISIONS", "DecisionRecorded", "InputPosition"]
