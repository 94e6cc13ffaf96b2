"""Faults injected into a running stack on purpose: a lost node, a restarted (or
crashed) component, a compacted etcd history. The tests and the demo use them
(through ``devtools.stack.api``), and so does ``jobreaper-dev stack``."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from devtools.stack import apiserver, build, controllers, etcd, kafka, kwok, process
from devtools.stack.certs import Pki
from devtools.stack.errors import StackError
from devtools.stack.kuberest import KubeRest
from devtools.stack.launch import Launcher, wait_for
from devtools.stack.layout import (
    Layout,
    State,
    kwok_proc,
    load_state,
    locked,
    process_names,
    save_state,
)

# How long a restart waits after SIGTERM before SIGKILL. The API server's
# graceful shutdown waits 60 s for open watch connections to end
# ("Failed to shutdown server: context deadline exceeded"): not worth waiting for.
STOP_GRACE_S = {"kube-apiserver": 5.0}


def running_state(layout: Layout) -> State:
    """The state of a stack that is up, or a StackError saying it is not."""
    state = load_state(layout)
    if state is None or not state.up:
        raise StackError(f"stack '{layout.name}' is not up (run: jobreaper-dev stack up)")
    return state


def _rest(layout: Layout, state: State) -> KubeRest:
    return KubeRest(state.ports["apiserver"], Pki(layout.pki_dir))


def lose_node(
    launcher: Launcher, node: str, *, wait_not_ready: bool = False, timeout: float = 60
) -> None:
    """Make ``node`` lost: its kwok stops (no heartbeat, no pod updates, no deletions)."""
    layout = launcher.layout
    with locked(layout):
        state = running_state(layout)
        if node not in state.nodes:
            raise StackError(f"no such node {node!r} (nodes: {', '.join(state.nodes)})")
        process.stop(layout.pid(kwok_proc(node)), sig=signal.SIGKILL)
        if node not in state.lost:
            state.lost.append(node)
            save_state(layout, state)
    if wait_not_ready:
        rest = _rest(layout, state)
        wait_for(
            f"node {node} NotReady",
            lambda: kwok.node_ready(rest, node) is False,
            timeout=timeout,
            interval=0.5,
        )


def restore_node(
    launcher: Launcher, node: str, *, wait_ready: bool = True, timeout: float = 60
) -> None:
    """Bring a lost node back: its kwok starts again and takes the node over."""
    layout = launcher.layout
    with locked(layout):
        state = running_state(layout)
        if node not in state.nodes:
            raise StackError(f"no such node {node!r} (nodes: {', '.join(state.nodes)})")
        if process.running(layout.pid(kwok_proc(node))) is None:
            kwok_build = build.build_for("kwok")
            if not kwok_build.complete:
                raise StackError("kwok is not built (run: jobreaper-dev stack build)")
            kwok.start(launcher, state, kwok_build, node)
        if node in state.lost:
            state.lost.remove(node)
            save_state(layout, state)
    if wait_ready:
        wait_for(
            f"node {node} Ready",
            kwok.ready_check(_rest(layout, state), node),
            timeout=timeout,
            proc=(kwok_proc(node), layout),
            interval=0.5,
        )


def node_lost(layout: Layout, node: str) -> bool:
    """Whether the kwok of ``node`` is stopped (a StackError if the stack is not up)."""
    running_state(layout)
    return process.running(layout.pid(kwok_proc(node))) is None


def ready_check(component: str, state: State, layout: Layout) -> Callable[[], bool]:
    """How to tell that ``component`` serves again: the check its start waited on."""
    ports = state.ports
    if component == "kafka":
        return kafka.ready_check(ports)
    if component == "etcd":
        return etcd.ready_check(ports)
    if component == "kube-apiserver":
        return apiserver.ready_check(ports, Pki(layout.pki_dir))
    if component in controllers.CONTROLLERS:
        return controllers.ready_check(component, ports)
    node = component[len("kwok-") :]
    return kwok.ready_check(_rest(layout, state), node)


def restart(
    launcher: Launcher,
    component: str,
    *,
    kill: bool = False,
    down_s: float = 0.0,
    timeout: float = 120,
) -> float:
    """Stop one process of the stack and start it again, same command line.

    Same ports, same data folder, same certificates: clients reconnect to
    the same address and find what they left (Kafka keeps its topics,
    offsets and transactions; etcd its keys and revision). The command line
    is the one recorded in the process's pid file, so nothing is re-derived.
    ``kill`` stops it with SIGKILL (a crash) instead of SIGTERM (a clean
    shutdown); ``down_s`` keeps it stopped that long. Waits until the
    component is ready again; returns how long it was unavailable (s).
    """
    layout = launcher.layout
    with locked(layout):
        state = running_state(layout)
        names = process_names(state)
        if component not in names:
            raise StackError(f"no such component {component!r} (components: {', '.join(names)})")
        if component.startswith("kwok-") and component[len("kwok-") :] in state.lost:
            raise StackError(f"{component} is stopped on purpose (node lost): use restore-node")
        pid_file = layout.pid(component)
        record = process.running(pid_file)
        if record is None:
            raise StackError(f"{component} is not running (run: jobreaper-dev stack up)")
        t0 = time.monotonic()
        grace = STOP_GRACE_S.get(component, 30.0)
        process.stop(pid_file, sig=signal.SIGKILL if kill else signal.SIGTERM, timeout=grace)
        if down_s > 0:
            time.sleep(down_s)
        launcher.spawn(component, record.argv)
        wait_for(
            f"restart {component}",
            ready_check(component, state, layout),
            timeout=timeout,
            proc=(component, layout),
            interval=0.1,
        )
        took = time.monotonic() - t0
    launcher.say(f"  {component} restarted: unavailable for {took:.1f}s")
    return took


def compact_etcd(layout: Layout) -> int:
    """Compact etcd's history up to its current revision (physically); returns it.

    A watch from an older resourceVersion that reaches etcd then gets
    ``410 Gone``.
    """
    return etcd.compact(running_state(layout).ports["etcd"])
