"""``refreshed`` observations (the watcher publishing an unchanged object again before
the topics' retention deletes its record): a duplicate for a state that folded the
original, and enough for a state rebuilt after the original expired."""

from __future__ import annotations

from schemas.observations import JobObserved, NodeObserved, PodObserved
from services.killer.core.evolve import fold_node
from services.killer.core.state import NodeState

from .harness import Harness, at, cmd_tuple, iso

Observation = JobObserved | PodObserved | NodeObserved


def refreshed(obs: Observation) -> Observation:
    return obs.model_copy(update={"change": "refreshed"})


def history(h: Harness) -> list[Observation]:
    """Two Jobs whose objects never change: one with a kill timestamp at 300 s, one
    whose pod gets a running timeout of 200 s from its container start (5 s)."""
    b = h.b
    return [
        b.node(0, "n1"),
        b.job(0, "timed", "job-t", annotations={"jobreaper.io/kill-timestamp": iso(300)}),
        b.pod(1, "timed-a", job="timed", job_uid="job-t"),
        b.job(0, "slow", "job-s", annotations={"jobreaper.io/running-timeout-seconds": "200"}),
        b.pod(1, "slow-a", job="slow", job_uid="job-s", start=5),
    ]


def test_a_refreshed_copy_changes_nothing_in_a_state_that_folded_the_original() -> None:
    h = Harness()
    originals = history(h)
    h.feed(*originals)
    first = h.decide(10)
    assert first.commands == ()
    assert first.next_due_at == at(205)
    h.feed(*(refreshed(o) for o in originals))
    assert not h.state.dirty, "a duplicate marks nothing for decide"
    again = h.decide(150)
    assert again.commands == () and again.kill_events == ()
    assert again.next_due_at == at(205)
    for o in originals:
        if isinstance(o, NodeObserved):
            node = NodeState()
            assert fold_node(node, o) is not None
            assert fold_node(node, refreshed(o)) is None, "the same resource version is stale"


def test_a_state_rebuilt_from_refreshed_copies_only_decides_what_the_continuous_one_did() -> None:
    continuous = Harness()
    originals = history(continuous)
    continuous.feed(*originals)
    continuous.decide(10)
    # Refreshed at 100 s (the originals' records getting old), then the originals expire.
    copies = [refreshed(o) for o in originals]
    continuous.feed(*copies)
    rebuilt = Harness()
    rebuilt.feed(*copies)
    for t in (120, 204.9):
        assert continuous.decide(t).commands == ()
        assert rebuilt.decide(t).commands == (), "nothing early after a rebuild"
    for t in (205, 299.9, 300, 301):
        a, b = continuous.decide(t), rebuilt.decide(t)
        assert [c.model_dump() for c in a.commands] == [c.model_dump() for c in b.commands]
        assert [e.model_dump() for e in a.kill_events] == [e.model_dump() for e in b.kill_events]
    steps = [cmd_tuple(c) for c in rebuilt.commands]
    assert ("set-active-deadline", "slow-a", "ladder.active-deadline", 205.0) in steps
    assert ("set-active-deadline", "timed-a", "ladder.active-deadline", 300.0) in steps
