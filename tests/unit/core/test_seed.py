"""``GlobalInputs``: a state seeded from what a killer remembers of the nodes and
config topics holds what folding their whole history holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core import GlobalInputs, evolve, new_state
from core.state import KillerState, to_us
from schemas.observations import NodeObserved

from .harness import Harness, at, snapshot

OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"


def node(
    t: float, status: str = "ready", rv: int = 0, *, name: str = "n1", fenced: bool = False
) -> NodeObserved:
    return NodeObserved(
        change="deleted" if status == "gone" else "modified",
        observed_at=at(t),
        resource_version=str(rv),
        name=name,
        uid=f"node-{name}",
        status=status,
        taints=(OUT_OF_SERVICE,) if fenced else (),
    )


def nodes_of(state: KillerState) -> dict[str, tuple[int | None, int]]:
    return {name: (n.lost_us, n.rv) for name, n in state.nodes.items()}


def fences_of(state: KillerState) -> dict[str, int | None]:
    return {name: n.fenced_us for name, n in state.nodes.items()}


def test_a_fence_is_dated_from_its_first_observation_and_lifts_with_the_taint() -> None:
    """The out-of-service taint or a deletion fences a node from the first observation
    that shows it; a newer observation without the taint (and not a deletion) lifts it."""
    state = seeded(node(0, "unreachable", 1), node(5, "unreachable", 2, fenced=True))
    assert fences_of(state) == {"n1": to_us(at(5))}
    state = seeded(node(5, "unreachable", 2, fenced=True), node(7, "not-ready", 3, fenced=True))
    assert fences_of(state) == {"n1": to_us(at(5))}
    assert fences_of(seeded(node(5, "unreachable", 2, fenced=True), node(9, "ready", 3))) == {
        "n1": None
    }
    assert fences_of(seeded(node(0, "unreachable", 1), node(4, "gone", 2))) == {"n1": to_us(at(4))}
    # a stale observation without the taint does not lift it
    assert fences_of(seeded(node(5, "unreachable", 3, fenced=True), node(6, "ready", 2))) == {
        "n1": to_us(at(5))
    }


def seeded(*messages: NodeObserved) -> KillerState:
    memory = GlobalInputs()
    for message in messages:
        memory.fold(message)
    return memory.seed(new_state())


def test_a_loss_is_dated_from_its_first_observation_not_the_newest() -> None:
    # Ready goes Unknown at 5 s; the node controller's taint is a second change at 7 s.
    state = seeded(node(0, rv=1), node(5, "unreachable", 2), node(7, "unreachable", 3))
    assert nodes_of(state) == {"n1": (to_us(at(5)), 3)}


def test_a_node_ready_again_starts_a_new_loss() -> None:
    state = seeded(node(0, "not-ready", 1), node(3, "ready", 2), node(9, "not-ready", 4))
    assert nodes_of(state)["n1"] == (to_us(at(9)), 4)
    assert nodes_of(seeded(node(0, "not-ready", 1), node(3, "ready", 2)))["n1"] == (None, 2)


def test_stale_observations_and_older_config_are_not_remembered() -> None:
    memory = GlobalInputs()
    assert memory.fold(node(0, "ready", 5))
    assert not memory.fold(node(1, "unreachable", 4))  # an older resourceVersion
    assert memory.fold(snapshot(2))
    assert not memory.fold(snapshot(1))
    state = memory.seed(new_state())
    assert nodes_of(state) == {"n1": (None, 5)}
    assert state.config is not None and state.config.version == 2


def test_a_state_loaded_from_a_snapshot_takes_the_newer_node_state() -> None:
    """A loaded state is seeded too: a loss it knew keeps its date, a newer version
    is taken, and its pods are re-examined only when the node was lost or found again
    since what the state knew."""
    h = Harness()
    h.feed(node(0, rv=1), h.b.job(0), h.b.pod(0, node="n1"))
    h.decide(1)
    assert not h.state.dirty
    memory = GlobalInputs()
    for message in (node(0, rv=1), node(5, "unreachable", 2), node(8, "unreachable", 3)):
        memory.fold(message)
    memory.seed(h.state)
    assert nodes_of(h.state) == {"n1": (to_us(at(5)), 3)}
    assert h.state.dirty, "a loss the loaded state did not know: its pods are re-examined"
    h.decide(9)
    assert not h.state.dirty
    memory.fold(node(10, "unreachable", 4))
    memory.seed(h.state)
    assert nodes_of(h.state) == {"n1": (to_us(at(5)), 4)}
    assert not h.state.dirty, "the same loss, a newer version: nothing to re-examine"
    memory.fold(node(11, "ready", 5))
    memory.seed(h.state)
    assert nodes_of(h.state) == {"n1": (None, 5)}
    assert h.state.dirty, "found again: its pods are re-examined"


_statuses = st.sampled_from(["ready", "ready", "not-ready", "unreachable", "gone"])
_steps = st.lists(
    st.tuples(st.sampled_from(["n1", "n2"]), _statuses, st.integers(-3, 3), st.booleans()),
    max_size=25,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_steps, st.data())
def test_a_seeded_state_equals_one_that_folded_the_whole_history(
    steps: list[tuple[str, str, int, bool]], data: st.DataObject
) -> None:
    """Any arrival order of node observations, resourceVersions going back now and
    then (a relist, a re-published record), the out-of-service taint coming and going:
    seeding at any point, then folding the rest, ends where folding everything ends
    (losses and fences alike)."""
    rv = 10
    history = []
    for t, (name, status, jump, fenced) in enumerate(steps):
        rv = max(rv + jump, 0)
        history.append(node(t, status, rv, name=name, fenced=fenced))
    cut = data.draw(st.integers(0, len(history)))
    whole = new_state()
    for message in history:
        evolve(whole, message)
    memory = GlobalInputs()
    for message in history[:cut]:
        memory.fold(message)
    rebuilt = memory.seed(new_state())
    for message in history[cut:]:
        memory.fold(message)
        evolve(rebuilt, message)
    assert nodes_of(rebuilt) == nodes_of(whole)
    assert fences_of(rebuilt) == fences_of(whole)
    assert nodes_of(memory.seed(new_state())) == nodes_of(whole)
    assert fences_of(memory.seed(new_state())) == fences_of(whole)
