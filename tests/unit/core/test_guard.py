"""Rule *force.guard*: the mass-disruption guard (``core/guard.py``, ``decide._guard``,
``decide._ladder``)."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core import decide, evolve, new_state
from core.guard import GuardSettings, needed, trips
from core.state import KillerState
from schemas.events import (
    ForceDeletionHeld,
    ForceDeletionPaused,
    ForceDeletionResumed,
    KillStep,
)
from schemas.requests import ForceResumeRequested

from .harness import Harness, at, snapshot

OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
NODES = ("n1", "n2", "n3", "n4", "n5", "n6")


NO_RATE_LIMIT = {"maxForceDeletionsPerSecondPerPartition": 0}
"""The rate limit spaces force deletions (rule force.rate-limit): off here, so each
decision shows every pod the guard lets go."""


def _cluster(announces: bool = True, zone: str | None = "a") -> Harness:
    """Six nodes of one zone, one pod on each stuck in deletion since 30 s (outside any
    kill: the stuck-deletion rule), force-deleted at 930 s without the guard."""
    h = Harness()
    h.state.announces = announces
    h.feed(snapshot(1, **NO_RATE_LIMIT))  # the guard alone decides what goes when
    b = h.b
    for name in NODES:
        h.feed(b.node(0, name, "ready", zone=zone))
    h.feed(b.job(0))
    for i, name in enumerate(NODES, 1):
        h.feed(b.pod(0, f"p{i}", node=name, deletion=30))
    return h


def _lose(
    h: Harness, t: float, *names: str, status: str = "unreachable", zone: str | None = "a"
) -> None:
    for i, name in enumerate(names):
        h.feed(h.b.node(t + i, name, status, zone=zone))


def _forced(d: Any) -> list[str]:
    return sorted(c.pod_name for c in d.commands if c.step == "force-delete")


def _held(d: Any) -> list[tuple[str, str]]:
    return sorted(
        (e.pod_name, e.waits_for) for e in d.kill_events if isinstance(e, ForceDeletionHeld)
    )


def _of(d: Any, kind: type) -> list[Any]:
    return [e for e in d.kill_events if isinstance(e, kind)]


def resume(t: float, zone: str | None = None, by: str = "alice") -> ForceResumeRequested:
    return ForceResumeRequested(
        request_id=f"r{t}", zone=zone, requested_by=by, requested_at=at(t), reason="checked"
    )


# ---- rule cases ---------------------------------------------------------------------


def test_guard_tripped_holds_every_unfenced_node_of_the_zone_and_alerts_once() -> None:
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4")
    d = h.decide(104)
    (paused,) = _of(d, ForceDeletionPaused)
    assert (paused.zone, paused.silent_nodes, paused.zone_nodes) == ("a", 4, 6)
    assert paused.nodes == ("n1", "n2", "n3", "n4")
    # 0.55 * 6 = 3.3: 4 nodes needed (more than min 3): the fourth loss tripped it
    assert paused.tripped_at == at(103)
    d = h.decide(930)
    assert _forced(d) == []
    assert _held(d) == [(f"p{i}", "guard") for i in range(1, 7)]
    assert _of(d, ForceDeletionPaused) == []
    assert h.decide(5000).kill_events == ()  # once per pod, once per tripping


def test_guard_fenced_node_still_proceeds() -> None:
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4", "n5")
    h.decide(930)
    h.feed(h.b.node(1000, "n1", "unreachable", (OUT_OF_SERVICE,), zone="a"))
    d = h.decide(1000)
    assert _forced(d) == ["p1"]
    assert _of(d, ForceDeletionResumed) == []  # 4 of 6 still silent: still tripped
    h.feed(h.b.node(1001, "n2", "unreachable", (OUT_OF_SERVICE,), zone="a"))
    d = h.decide(1001)  # 3 of 6 silent, below 4: the mass loss goes on all the same
    assert _forced(d) == ["p2"]
    assert _of(d, ForceDeletionResumed) == []
    for name in ("n3", "n4", "n5"):
        h.feed(h.b.node(1002, name, "unreachable", (OUT_OF_SERVICE,), zone="a"))
    d = h.decide(1002)  # every node of the mass loss fenced: lifted
    assert _forced(d) == ["p3", "p4", "p5", "p6"]
    assert [e.cause for e in _of(d, ForceDeletionResumed)] == ["nodes-returned"]


def test_guard_lifts_when_the_nodes_return_and_the_held_pods_go() -> None:
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4")
    h.decide(930)
    _lose(h, 1000, "n1", "n2", status="ready")
    d = h.decide(1002)  # 2 back, 2 still away: held (a partition healing node by node)
    assert _forced(d) == [] and _of(d, ForceDeletionResumed) == []
    _lose(h, 1010, "n3", "n4", status="ready")
    d = h.decide(1012)
    (resumed,) = _of(d, ForceDeletionResumed)
    assert resumed.cause == "nodes-returned" and resumed.requested_by is None
    assert _forced(d) == [f"p{i}" for i in range(1, 7)]


def test_guard_needs_the_losses_within_the_window() -> None:
    h = _cluster()
    _lose(h, 100, "n1")
    _lose(h, 220, "n2", "n3", "n4")  # 120 s after n1: outside its window; 3 < 4 needed
    assert _of(h.decide(300), ForceDeletionPaused) == []
    _lose(h, 301, "n5")  # n2..n5 within 120 s: 4 of 6
    (paused,) = _of(h.decide(301), ForceDeletionPaused)
    assert paused.tripped_at == at(301) and paused.silent_nodes == 5
    # n1 and n2 back: n3..n5 still away, their losses began within the window with
    # n2's: still tripped until all of them are back
    _lose(h, 400, "n1", "n2", status="ready")
    assert _forced(h.decide(930)) == []
    h2 = _cluster()
    _lose(h2, 100, "n1")
    _lose(h2, 300, "n2")
    _lose(h2, 500, "n3")
    _lose(h2, 700, "n4")  # slow attrition: never 3 within 120 s
    d = h2.decide(930)
    assert _forced(d) == [f"p{i}" for i in range(1, 7)]


def test_guard_does_not_count_nodes_lost_before_their_first_observation() -> None:
    """A watcher (or killer) starting beside nodes down for days sees them all lost at
    once: when they were lost is unknown, and it is no mass loss."""
    h = Harness()
    h.state.announces = True
    for name in NODES[:4]:
        h.feed(h.b.node(0, name, "unreachable", zone="a"))
    for name in NODES[4:]:
        h.feed(h.b.node(0, name, "ready", zone="a"))
    h.feed(h.b.job(0))
    h.feed(h.b.pod(0, "p1", node="n1", deletion=30))
    d = h.decide(930)
    assert _forced(d) == ["p1"] and _of(d, ForceDeletionPaused) == []
    # Back and lost again: now the onsets are known and they count.
    _lose(h, 1000, "n2", "n3", "n4", status="ready")
    _lose(h, 1100, "n2", "n3", "n4", "n5")
    assert len(_of(h.decide(1104), ForceDeletionPaused)) == 1


def test_guard_counts_per_zone() -> None:
    h = Harness()
    h.state.announces = True
    h.feed(snapshot(1, **NO_RATE_LIMIT))
    for i, name in enumerate(NODES):
        h.feed(h.b.node(0, name, "ready", zone="a" if i < 3 else "b"))
    h.feed(h.b.job(0))
    for i, name in enumerate(NODES, 1):
        h.feed(h.b.pod(0, f"p{i}", node=name, deletion=30))
    for name in ("n1", "n2", "n3"):  # all of zone a
        h.feed(h.b.node(100, name, "unreachable", zone="a"))
    d = h.decide(930)
    assert [p.zone for p in _of(d, ForceDeletionPaused)] == ["a"]
    assert _forced(d) == ["p4", "p5", "p6"]  # zone b is not paused
    assert _held(d) == [("p1", "guard"), ("p2", "guard"), ("p3", "guard")]


def test_guard_threshold_takes_the_count_and_the_fraction() -> None:
    g = GuardSettings(120_000_000, 3, Fraction(11, 20))
    assert [needed(g, n) for n in (1, 2, 3, 5, 6, 20, 100)] == [3, 3, 3, 3, 4, 11, 55]


def test_guard_resumed_by_an_operator_and_trips_again_on_new_losses() -> None:
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4")
    h.decide(930)
    h.feed(resume(1000, by="oncall"))
    d = h.decide(1000)
    (resumed,) = _of(d, ForceDeletionResumed)
    assert (resumed.cause, resumed.requested_by, resumed.requested_at) == (
        "operator",
        "oncall",
        at(1000),
    )
    assert _forced(d) == [f"p{i}" for i in range(1, 7)]
    # The nodes come back, then go silent again: a new tripping, a new alert.
    _lose(h, 2000, "n1", "n2", "n3", "n4", status="ready")
    _lose(h, 3000, "n1", "n2", "n3", "n4")
    d = h.decide(3004)
    assert len(_of(d, ForceDeletionPaused)) == 1


def test_guard_resume_of_another_zone_changes_nothing() -> None:
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4")
    h.decide(930)
    h.feed(resume(1000, zone="b"))
    assert _forced(h.decide(1000)) == []


def test_guard_off_with_a_zero_window_and_in_non_announcing_partitions() -> None:
    h = _cluster(announces=False)
    _lose(h, 100, "n1", "n2", "n3", "n4")
    d = h.decide(930)
    assert _forced(d) == [] and _of(d, ForceDeletionPaused) == []  # held, no alert
    h.feed(snapshot(2, massDisruptionWindowSeconds=0, **NO_RATE_LIMIT))
    assert _forced(h.decide(931)) == [f"p{i}" for i in range(1, 7)]


def test_guard_ignores_the_time_fence_while_tripped() -> None:
    h = _cluster()
    h.feed(snapshot(2, fenceUnreachableAfterSeconds=60, **NO_RATE_LIMIT))
    _lose(h, 100, "n1", "n2", "n3", "n4")
    d = h.decide(200)  # lost for 100 s > 60 s: fenced by time, were it not for the guard
    assert _forced(d) == []


def test_guard_what_if_another_threshold_reports_the_difference() -> None:
    """The same state decided under another snapshot (what the what-if replay does)."""
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4")
    h.decide(104)
    what_if = snapshot(7, massDisruptionMinNodes=5, **NO_RATE_LIMIT)
    assert _forced(decide(h.state, at(930), what_if)) == [f"p{i}" for i in range(1, 7)]
    h2 = _cluster()
    _lose(h2, 100, "n1", "n2", "n3", "n4")
    h2.decide(104)
    assert _forced(h2.decide(930)) == []


def test_guard_a_rebuilt_state_raises_no_second_alert() -> None:
    h = _cluster()
    _lose(h, 100, "n1", "n2", "n3", "n4")
    h.decide(930)
    rebuilt = new_state()
    rebuilt.announces = True
    for ev in h.log:
        evolve(rebuilt, ev)
    d = decide(rebuilt, at(931))
    assert d.kill_events == () and d.commands == ()


# ---- properties ------------------------------------------------------------------------

_STATUSES = st.sampled_from(["ready", "unreachable", "not-ready", "tainted", "gone"])


@st.composite
def _histories(draw: Any) -> tuple[list[list[Any]], list[int]]:
    """Per node: its observations (in its own order); and an interleaving of them."""
    count = draw(st.integers(3, 8))
    zones = draw(st.lists(st.sampled_from(["a", "b", None]), min_size=count, max_size=count))
    h = Harness()
    per_node: list[list[Any]] = []
    for i in range(count):
        name = f"n{i}"
        steps = draw(st.lists(st.tuples(st.integers(0, 300), _STATUSES), min_size=1, max_size=4))
        t = 0
        obs = [h.b.node(0, name, "ready", zone=zones[i])]
        for dt, status in steps:
            t += dt
            taints = (OUT_OF_SERVICE,) if status == "tainted" else ()
            obs.append(
                h.b.node(
                    t, name, "unreachable" if status == "tainted" else status, taints, zones[i]
                )
            )
        per_node.append(obs)
    order = draw(st.permutations([i for i, obs in enumerate(per_node) for _ in obs]))
    return per_node, order


def _interleave(per_node: list[list[Any]], order: list[int]) -> list[Any]:
    cursors = [0] * len(per_node)
    out = []
    for i in order:
        out.append(per_node[i][cursors[i]])
        cursors[i] += 1
    return out


def _state(observations: list[Any]) -> KillerState:
    state = new_state()
    for ev in observations:
        evolve(state, ev)
    return state


@settings(max_examples=150, deadline=None)
@given(_histories(), st.data())
def test_guard_is_the_same_whatever_the_order_of_the_nodes_observations(
    histories: tuple[list[list[Any]], list[int]], data: st.DataObject
) -> None:
    """Every killer partition folds the node observations in its own interleaving
    with the rest; the guard depends on the nodes' states only."""
    per_node, order = histories
    other = data.draw(st.permutations(order))
    g = GuardSettings(120_000_000, 3, Fraction(11, 20))
    a = trips(_state(_interleave(per_node, order)).nodes, g, {})
    b = trips(_state(_interleave(per_node, list(other))).nodes, g, {})
    assert a == b


@settings(max_examples=150, deadline=None)
@given(_histories())
def test_with_the_guard_tripped_no_force_deletion_on_an_unfenced_node_of_its_zone(
    histories: tuple[list[list[Any]], list[int]],
) -> None:
    per_node, order = histories
    h = Harness()
    h.state.announces = True
    names = [obs[0].name for obs in per_node]
    h.feed(h.b.job(0))
    for i, name in enumerate(names):
        h.feed(h.b.pod(0, f"p{i}", node=name, deletion=30))
    seen: dict[str, int] = {}
    for ev in _interleave(per_node, order):
        h.feed(ev)
        seen[ev.name] = seen.get(ev.name, 0) + 1
        t = (ev.observed_at - at(0)) // timedelta(seconds=1) + 900
        d = h.decide(max(t, 930))
        tripped = h.state.guard[2]  # type: ignore[index]
        for c in d.commands:
            if c.step != "force-delete":
                continue
            node = h.state.nodes.get(c.pod_name.replace("p", "n", 1))  # type: ignore[union-attr]
            if node is None:
                continue  # not observed yet: in no zone
            assert node.fenced_us is not None or node.zone not in tripped, (c, tripped)
    # one alert per tripping: never two Paused for a zone without a Resumed between
    open_zones: set[str] = set()
    for e in h.events:
        if isinstance(e, ForceDeletionPaused):
            assert e.zone not in open_zones
            open_zones.add(e.zone)
        elif isinstance(e, ForceDeletionResumed):
            assert e.zone in open_zones
            open_zones.discard(e.zone)
    assert not any(isinstance(e, KillStep) and e.step == "delete" for e in h.events)
