"""The stack manager itself: a second stack beside the test stack, idempotent up,
restart of a broken stack, and down stopping only its own processes."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from devtools.stack import process
from devtools.stack.api import ensure_stack, lose_node, restore_node, stop_stack
from devtools.stack.layout import kwok_proc
from devtools.stack.stack import Stack
from devtools.stack.util import say_nothing
from tests.integration.lossy_nodes import every_lossy_node_held

if TYPE_CHECKING:
    from devtools.stack.api import StackInfo

pytestmark = pytest.mark.stack


def pids(name: str) -> dict[str, int]:
    stack = Stack(name, say_nothing)
    state = stack.state()
    assert state is not None
    return {n: r.pid for n, r in stack.processes(state).items() if r is not None}


def test_second_stack_up_twice_broken_and_down(stack: StackInfo) -> None:
    if stack.stack_dir is None:
        pytest.skip("needs a stack started by devtools.stack beside this one")
    # The shared stack's processes must keep their pids, but a test that loses a node
    # restarts its kwok: no test may lose one meanwhile (they run concurrently).
    with every_lossy_node_held(stack):
        _second_stack_beside(stack)


def _second_stack_beside(stack: StackInfo) -> None:
    other = Stack(stack.name, say_nothing, root=stack.stack_dir)
    other_state = other.state()
    assert other_state is not None
    other_pids = {n: r.pid for n, r in other.processes(other_state).items() if r is not None}

    name = f"lc-{uuid.uuid4().hex[:8]}"
    try:
        first = ensure_stack(name, nodes=1, say=say_nothing)
        assert first.kafka_bootstrap != stack.kafka_bootstrap
        assert first.api_server != stack.api_server
        assert first.nodes == ("kwok-node-0",)
        running = pids(name)
        assert len(running) == 6  # kafka, etcd, apiserver, kcm, scheduler, 1 kwok

        # Up again: the same stack, the same processes.
        again = ensure_stack(name, nodes=1, say=say_nothing)
        assert again == first
        assert pids(name) == running

        # A lost node is not a broken stack.
        lose_node(first, "kwok-node-0")
        assert ensure_stack(name, nodes=1, say=say_nothing) == first
        assert pids(name) == {k: v for k, v in running.items() if k != kwok_proc("kwok-node-0")}
        restore_node(first, "kwok-node-0")

        # A dead API server: up starts the whole stack afresh.
        os.kill(pids(name)["kube-apiserver"], signal.SIGKILL)
        time.sleep(0.5)
        restarted = ensure_stack(name, nodes=1, say=say_nothing)
        new = pids(name)
        assert len(new) == 6
        assert not set(new.values()) & set(running.values())
        for pid in running.values():
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"{pid} left running"
        assert restarted.kubeconfig == first.kubeconfig
    finally:
        stopped = stop_stack(name, purge=True, say=say_nothing)
    assert stopped
    # The other stack was not touched.
    assert {n: r.pid for n, r in other.processes(other_state).items() if r is not None} == (
        other_pids
    )
    assert process.running(other.layout.pid("kube-apiserver")) is not None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
