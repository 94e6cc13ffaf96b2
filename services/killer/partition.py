"""One owned partition number: its lifecycle as an explicit phase, its state, its producer.

An instance that owns partition *p* owns it in all five Job-keyed topics (the
range assignor; docs/killer.md). Its life, every transition in :data:`TRANSITIONS`::

    TAKING --> STALE --> REBUILDING --> CATCHING_UP --> DECIDING <--> FROZEN
                 ^          |    \\___________________^    |
                 |          |  (nothing to fold)           |
                 +----------+------------------------------+
                  a rebuild failed, the core raised, decide raised, a transaction failed

    any phase --> RELEASED (revoked, fenced, or the killer stops): final

A step that awaited (a rebuild reading offsets, a transaction, a dead letter) may
find its partition released meanwhile by the rebalance callback, which runs beside
the loop: :meth:`Partition.enter` then does nothing and says so, and the step stops.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from core import KillerState, new_state
from schemas.config import ConfigSnapshot
from schemas.decisions import InputPosition
from schemas.observations import NodeObserved
from schemas.requests import ForceResumeRequested
from schemas.topics import (
    CONFIG,
    FORCE_RESUMES,
    K8S_NODES,
    K8S_OBJECTS,
    KILL_COMMANDS,
    KILL_EVENTS,
    KILL_REQUESTS,
    KILL_RESULTS,
)

from .transport import Producer, Record, TopicPartition

JOB_TOPICS = (K8S_OBJECTS, KILL_REQUESTS, KILL_COMMANDS, KILL_RESULTS, KILL_EVENTS)
"""The five Job-keyed topics: partition *p* of each is partition *p*'s state."""
GLOBAL_TOPICS = (K8S_NODES, CONFIG, FORCE_RESUMES)
"""Read whole by every instance and folded into every partition's state (the guard's
resumes too: ``schemas.requests.ForceResumeRequested``)."""


class Phase(enum.Enum):
    TAKING = "taking"
    """Its transactional producer is starting: InitProducerId fences the previous
    owner and ends that owner's open transaction. Records are not folded."""
    STALE = "stale"
    """Ours and fenced, but no state to trust: a rebuild failed (Kafka away), or the
    core raised, or a decision failed. Records are not folded; the loop rebuilds it."""
    REBUILDING = "rebuilding"
    """Reading the end offsets to rebuild to, loading a snapshot, seeking: records
    fetched meanwhile are from before the seek and are not folded."""
    CATCHING_UP = "catching-up"
    """Folding from where the rebuild started up to those end offsets; decides nothing."""
    DECIDING = "deciding"
    """Caught up: decides when its state changed or a timer is due."""
    FROZEN = "frozen"
    """Caught up, its state being pickled for a snapshot: what arrives waits in the
    backlog, nothing is decided, until the pickle is done."""
    RELEASED = "released"
    """Revoked, fenced by a newer owner, or the killer stopped: no longer ours."""


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.TAKING: frozenset({Phase.STALE, Phase.RELEASED}),
    Phase.STALE: frozenset({Phase.REBUILDING, Phase.RELEASED}),
    Phase.REBUILDING: frozenset({Phase.CATCHING_UP, Phase.DECIDING, Phase.STALE, Phase.RELEASED}),
    Phase.CATCHING_UP: frozenset({Phase.DECIDING, Phase.STALE, Phase.RELEASED}),
    Phase.DECIDING: frozenset({Phase.FROZEN, Phase.STALE, Phase.RELEASED}),
    Phase.FROZEN: frozenset({Phase.DECIDING, Phase.RELEASED}),
    Phase.RELEASED: frozenset(),
}
"""Every phase a partition may go to from each phase (see the module doc)."""

FOLDING = frozenset({Phase.CATCHING_UP, Phase.DECIDING})
"""Phases whose state records and node/config changes are folded into."""
CAUGHT_UP = frozenset({Phase.DECIDING, Phase.FROZEN})


class IllegalTransition(RuntimeError):
    """A bug of the shell: a transition :data:`TRANSITIONS` does not allow."""


Backlogged: TypeAlias = "Record | NodeObserved | ConfigSnapshot | ForceResumeRequested"
"""What arrives for a frozen partition: its records, and node and config changes."""


@dataclass
class Partition:
    """One owned partition number: its phase, its state and its transactional producer."""

    number: int
    producer: Producer
    phase: Phase = Phase.TAKING
    state: KillerState = field(default_factory=new_state)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    """The end offsets its rebuild folds up to (read after fencing the previous owner)."""
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """(design topic, partition) -> the next offset to fold: the input position
    a decision records, so that a replay folds exactly what this state holds."""
    assigned_at: float = field(default_factory=time.monotonic)
    """When its current rebuild began (``time.monotonic()``)."""
    dirty: bool = True
    """Its state changed since it last decided."""
    next_due: datetime | None = None
    hold_until: float = 0.0
    """``time.monotonic()`` before which nothing is decided (``decide`` raised)."""
    state_id: str = ""
    """New (random) for every state built: a replay tells rebuilds apart by it, even
    across restarts of an instance with the same identity (pod name, pid 1)."""
    rebuilt_from: tuple[InputPosition, ...] = ()
    """The global positions when the state was built: it then held only the newest
    node observations and config below them, not their history (a replay must too)."""
    from_snapshot: bool = False
    folded_since_snapshot: int = 0
    snapshot_at: float = field(default_factory=time.monotonic)
    backlog: list[Backlogged] = field(default_factory=list)
    """What arrived while frozen, in arrival order, folded once thawed."""

    def enter(self, phase: Phase) -> bool:
        """Go to ``phase``; False (and nothing changes) if the partition was released
        meanwhile. Raises :class:`IllegalTransition` on a transition not allowed."""
        if self.phase is Phase.RELEASED:
            return False
        if phase not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"partition {self.number}: {self.phase.value} -> {phase.value}")
        self.phase = phase
        return True

    @property
    def released(self) -> bool:
        return self.phase is Phase.RELEASED

    @property
    def caught_up(self) -> bool:
        return self.phase in CAUGHT_UP

    def may_decide(self, now: datetime, monotonic: float) -> bool:
        """Deciding, not held, and its state changed or a timer is due."""
        return (
            self.phase is Phase.DECIDING
            and self.hold_until <= monotonic
            and (self.dirty or (self.next_due is not None and self.next_due <= now))
        )


def input_positions(positions: dict[tuple[str, int], int]) -> tuple[InputPosition, ...]:
    """Positions as a decision record lists them: sorted by topic and partition."""
    return tuple(
        InputPosition(topic=topic, partition=number, offset=offset)
        for (topic, number), offset in sorted(positions.items())
    )


def overdue_seconds(partitions: Iterable[Partition], now: datetime) -> float:
    """How long the earliest due decision among ``partitions`` has waited (0 if none is
    due). A partition that cannot decide (held after ``decide`` raised, stale, rebuilding)
    keeps the due instant it last computed, so its wait grows until it decides again."""
    due = [p.next_due for p in partitions if p.next_due is not None and not p.released]
    if not due:
        return 0.0
    return max(0.0, (now - min(due)).total_seconds())


def readiness(partitions: dict[int, Partition], *, assigned: bool) -> tuple[bool, str]:
    """Ready once partitions were assigned and every one taken is caught up."""
    if not assigned:
        return False, "waiting for partitions"
    if any(p.phase is Phase.TAKING for p in partitions.values()):
        return False, "taking partitions (fencing their previous owner)"
    behind = sorted(p.number for p in partitions.values() if not p.caught_up)
    if behind:
        return False, f"rebuilding partitions {behind}"
    return True, f"deciding for partitions {sorted(partitions)}"
