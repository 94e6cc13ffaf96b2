"""The fault injection of the local stack refuses what it cannot do, in one line, before
it signals or starts anything (a stack on disk, no processes needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.stack import faults
from devtools.stack.errors import StackError
from devtools.stack.launch import Launcher
from devtools.stack.layout import Layout, State, save_state
from devtools.stack.util import say_nothing


def _launcher(tmp_path: Path, *, up: bool, lost: list[str] | None = None) -> Launcher:
    layout = Layout("faults", tmp_path)
    save_state(
        layout,
        State(name="faults", nodes=["kwok-node-0", "kwok-node-1"], up=up, lost=lost or []),
    )
    return Launcher(layout, say_nothing)


def test_a_stack_that_is_not_up_is_named_with_the_command_that_starts_it(
    tmp_path: Path,
) -> None:
    launcher = _launcher(tmp_path, up=False)
    with pytest.raises(StackError, match=r"stack 'faults' is not up \(run: jobreaper-dev stack up"):
        faults.lose_node(launcher, "kwok-node-0")
    with pytest.raises(StackError, match="is not up"):
        faults.compact_etcd(launcher.layout)
    with pytest.raises(StackError, match="is not up"):
        faults.running_state(Layout("none", tmp_path / "none"))


def test_unknown_nodes_and_components_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path, up=True)
    with pytest.raises(StackError, match=r"no such node 'kwok-node-9' \(nodes: kwok-node-0, "):
        faults.lose_node(launcher, "kwok-node-9")
    with pytest.raises(StackError, match="no such node 'kwok-node-9'"):
        faults.restore_node(launcher, "kwok-node-9")
    with pytest.raises(StackError, match=r"no such component 'zookeeper' \(components: kafka, "):
        faults.restart(launcher, "zookeeper")


def test_a_lost_nodes_kwok_is_restored_not_restarted(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path, up=True, lost=["kwok-node-1"])
    with pytest.raises(StackError, match=r"stopped on purpose .* use restore-node"):
        faults.restart(launcher, "kwok-kwok-node-1")


def test_a_component_that_is_not_running_is_not_restarted(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path, up=True)
    with pytest.raises(StackError, match=r"etcd is not running \(run: jobreaper-dev stack up\)"):
        faults.restart(launcher, "etcd")
