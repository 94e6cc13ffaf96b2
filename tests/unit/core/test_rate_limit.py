"""The force-deletion rate limit (rule *force.rate-limit*), as properties: whatever
pods get stuck when, and whenever ``decide`` is called, no one-second window holds
more force deletions than the limit, every stuck pod is force-deleted in the end,
each held pod says so once, and a state rebuilt from the log at any point (inputs
and the core's own output, each topic in its own order) decides what the continuous
one decides."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from core import Event, decide, evolve, new_state
from schemas.commands import CommandIssued
from schemas.events import ForceDeletionHeld

from .harness import Builder, at, snapshot

FORCE_TIMEOUT_S = 10

stuck = st.lists(st.integers(0, 40), min_size=1, max_size=30)
"""Per pod: its deletionTimestamp, in tenths of a second."""
ticks = st.lists(st.integers(1, 15), min_size=1, max_size=60)
"""Gaps between decisions, in tenths of a second."""


def inputs(deletions: list[int], limit: int) -> list[Event]:
    b = Builder()
    events: list[Event] = [
        snapshot(
            1,
            forceDeleteTaskTimeoutSeconds=FORCE_TIMEOUT_S,
            maxForceDeletionsPerSecondPerPartition=limit,
        ),
        b.job(0),
    ]
    events += [b.pod(0, f"p{i:02d}", deletion=d / 10) for i, d in enumerate(deletions)]
    return events


@settings(max_examples=150, deadline=None, derandomize=True)
@given(stuck, st.integers(1, 5), ticks, st.data())
def test_force_deletions_never_exceed_the_limit_and_a_rebuild_decides_the_same(
    deletions: list[int], limit: int, gaps: list[int], data: st.DataObject
) -> None:
    state = new_state()
    log: list[Event] = []
    for ev in inputs(deletions, limit):
        evolve(state, ev)
        log.append(ev)
    cut = data.draw(st.integers(0, len(gaps)))
    t = FORCE_TIMEOUT_S * 10 - 5  # tenths: just before the first can be due
    forces: list[CommandIssued] = []
    held: list[ForceDeletionHeld] = []
    rebuilt = None
    for i, gap in enumerate([*gaps, *([10] * 40)]):  # then long enough for every pod
        t += gap
        now = at(t / 10)
        if i == cut:
            # A state rebuilt from the log so far: inputs first, then our own output.
            rebuilt = new_state()
            for ev in sorted(log, key=lambda e: isinstance(e, CommandIssued | ForceDeletionHeld)):
                evolve(rebuilt, ev)
        d = decide(state, now)
        if rebuilt is not None:
            again = decide(rebuilt, now)
            assert again.commands == d.commands
            assert again.kill_events == d.kill_events
            for ev in (*again.commands, *again.kill_events):
                evolve(rebuilt, ev)
        for ev in (*d.commands, *d.kill_events):
            evolve(state, ev)
            log.append(ev)
        forces += [c for c in d.commands if c.step == "force-delete"]
        held += [e for e in d.kill_events if isinstance(e, ForceDeletionHeld)]
        for c in d.commands:
            window = c.decided_at - timedelta(seconds=1)
            assert sum(1 for f in forces if f.decided_at > window) <= limit
    # Every stuck pod force-deleted once; each held one said so once, with its slot.
    assert sorted(c.pod_name or "" for c in forces) == [f"p{i:02d}" for i in range(len(deletions))]
    assert len({e.pod_uid for e in held}) == len(held)
    for e in held:
        assert e.waits_for == "rate-limit" and e.until is not None and e.until > e.decided_at
    if len(deletions) > limit and len(set(deletions)) == 1:
        assert held, "more pods due at once than the limit: some were held"
