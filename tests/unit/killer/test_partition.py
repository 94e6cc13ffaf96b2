"""A partition's phase: only the transitions of the table, RELEASED final, readiness."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from services.killer.partition import (
    TRANSITIONS,
    IllegalTransition,
    Partition,
    Phase,
    overdue_seconds,
    readiness,
)

from .fakes import T0, FakeKafka


def partition(phase: Phase, number: int = 0) -> Partition:
    p = Partition(number, FakeKafka().producer(number, client_id="t"))
    p.phase = phase
    return p


ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in targets]
REFUSED = [
    (a, b)
    for a, b in itertools.product(Phase, Phase)
    if b not in TRANSITIONS[a] and a is not Phase.RELEASED
]


def test_the_life_of_a_partition_is_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert set(ALLOWED) == {
        (Phase.TAKING, Phase.STALE),
        (Phase.STALE, Phase.REBUILDING),
        (Phase.REBUILDING, Phase.CATCHING_UP),
        (Phase.REBUILDING, Phase.DECIDING),
        (Phase.REBUILDING, Phase.STALE),
        (Phase.CATCHING_UP, Phase.DECIDING),
        (Phase.CATCHING_UP, Phase.STALE),
        (Phase.DECIDING, Phase.FROZEN),
        (Phase.DECIDING, Phase.STALE),
        (Phase.FROZEN, Phase.DECIDING),
    } | {(a, Phase.RELEASED) for a in Phase if a is not Phase.RELEASED}


@pytest.mark.parametrize(("before", "after"), ALLOWED, ids=lambda p: p.value)
def test_an_allowed_transition_happens(before: Phase, after: Phase) -> None:
    p = partition(before)
    assert p.enter(after) is True
    assert p.phase is after


@pytest.mark.parametrize(("before", "after"), REFUSED, ids=lambda p: p.value)
def test_any_other_transition_is_a_bug_and_raises(before: Phase, after: Phase) -> None:
    p = partition(before)
    with pytest.raises(IllegalTransition, match=f"{before.value} -> {after.value}"):
        p.enter(after)
    assert p.phase is before


@pytest.mark.parametrize("after", list(Phase), ids=lambda p: p.value)
def test_a_released_partition_stays_released(after: Phase) -> None:
    """A step that awaited (a rebuild, a transaction) finds its partition released
    meanwhile: its transition does nothing and says so."""
    p = partition(Phase.RELEASED)
    assert p.enter(after) is False
    assert p.phase is Phase.RELEASED


def test_only_a_deciding_partition_decides_and_not_while_held() -> None:
    now = T0
    p = partition(Phase.DECIDING)
    p.dirty = False
    assert not p.may_decide(now, 100.0)
    p.next_due = now + timedelta(seconds=1)
    assert not p.may_decide(now, 100.0)
    assert p.may_decide(now + timedelta(seconds=1), 100.0)
    p.dirty = True
    p.hold_until = 101.0
    assert not p.may_decide(now, 100.0)
    assert p.may_decide(now, 101.0)
    for phase in set(Phase) - {Phase.DECIDING}:
        p.phase = phase
        assert not p.may_decide(now, 200.0), phase


def test_ready_only_once_every_partition_taken_is_caught_up() -> None:
    assert readiness({}, assigned=False) == (False, "waiting for partitions")
    assert readiness({}, assigned=True) == (True, "deciding for partitions []")
    owned = {n: partition(Phase.DECIDING, n) for n in range(3)}
    owned[2].phase = Phase.FROZEN  # caught up: being pickled does not make it unready
    assert readiness(owned, assigned=True) == (True, "deciding for partitions [0, 1, 2]")
    for phase in (Phase.STALE, Phase.REBUILDING, Phase.CATCHING_UP):
        owned[1].phase = phase
        assert readiness(owned, assigned=True) == (False, "rebuilding partitions [1]")
    owned[0].phase = Phase.TAKING
    assert readiness(owned, assigned=True) == (
        False,
        "taking partitions (fencing their previous owner)",
    )


def test_overdue_is_how_long_the_earliest_due_timer_has_waited() -> None:
    owned = [partition(Phase.DECIDING, n) for n in range(3)]
    assert overdue_seconds(owned, T0) == 0.0, "no timer at all"
    owned[0].next_due = T0 + timedelta(seconds=5)
    assert overdue_seconds(owned, T0) == 0.0, "a timer in the future is not overdue"
    owned[1].next_due = T0 - timedelta(seconds=3)
    owned[2].next_due = T0 - timedelta(seconds=7)
    owned[2].phase = Phase.STALE  # cannot decide: its wait counts all the same
    assert overdue_seconds(owned, T0) == 7.0
    owned[2].phase = Phase.RELEASED  # another instance owns it now
    assert overdue_seconds(owned, T0) == 3.0
