"""The Python API of the local stack, for tests and tools.

info = ensure_stack("test")          # builds if needed, starts or reuses
info.kubeconfig, info.kafka_bootstrap, info.audit_log, info.nodes
lose_node(info, info.nodes[0], wait_not_ready=True)
restore_node(info, info.nodes[0])
restart_component(info, "kafka")     # same ports and data; clients reconnect
stop_stack("test")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from devtools.stack import appimage, config, faults, realnode
from devtools.stack import build as buildmod
from devtools.stack.errors import StackError
from devtools.stack.launch import Launcher
from devtools.stack.layout import Layout, StackInfo, info_from, load_state
from devtools.stack.stack import Stack
from devtools.stack.util import Say, say_stderr

__all__ = [
    "StackError",
    "StackInfo",
    "attach",
    "build_stack",
    "compact_etcd",
    "ensure_jobreaper_image",
    "ensure_stack",
    "freeze_kubelet",
    "lose_node",
    "node_is_lost",
    "real_node_clean_containers",
    "real_node_container_spec",
    "real_node_tasks",
    "restart_component",
    "restore_node",
    "stack_from_env",
    "stop_stack",
    "thaw_kubelet",
]


def ensure_stack(
    name: str = "default",
    *,
    nodes: int = config.DEFAULT_NODE_COUNT,
    real_nodes: int | None = None,
    say: Say = say_stderr,
) -> StackInfo:
    """A running stack called ``name``: reused if healthy, else (built and) started.

    Idempotent and safe to call from several processes at once (a file lock
    serialises them). ``real_nodes`` as :meth:`Stack.up` (None: whatever it has).
    Raises :class:`StackError` with a one-line message.
    """
    return Stack(name, say).up(nodes=nodes, real_nodes=real_nodes)


def stop_stack(name: str = "default", *, purge: bool = False, say: Say = say_stderr) -> bool:
    """Stop the stack's processes (``purge``: delete its folder too). True if any ran."""
    return Stack(name, say).down(purge=purge)


def build_stack(say: Say = say_stderr) -> None:
    """Fetch and build every component (cached builds are reused)."""
    buildmod.ensure_builds(say)


def attach(stack_dir: Path) -> StackInfo:
    """The StackInfo of the running stack whose folder is ``stack_dir``."""
    layout = Layout(stack_dir.name, stack_dir)
    state = load_state(layout)
    if state is None or not state.up:
        raise StackError(f"no running stack in {stack_dir}")
    return info_from(layout, state)


def stack_from_env() -> StackInfo | None:
    """The stack named by ``JOBREAPER_STACK_DIR`` (as ``stack env`` prints), if any."""
    stack_dir = os.environ.get("JOBREAPER_STACK_DIR")
    return attach(Path(stack_dir)) if stack_dir else None


def _launcher(info: StackInfo) -> Launcher:
    if info.stack_dir is None:
        raise StackError("this cluster was not started by devtools.stack: no node control")
    return Launcher(Layout(info.name, info.stack_dir), say_stderr)


def lose_node(
    info: StackInfo, node: str, *, wait_not_ready: bool = False, timeout: float = 60
) -> None:
    """Make ``node`` lost: kwok stops simulating it (its process is killed).

    From then on the node gets no heartbeat (NotReady after the controller
    manager's grace period, 8 s) and nothing happens to its pods: they stay
    Running, and a graceful delete leaves them Terminating for ever; only a
    force delete (grace period 0) removes them. ``wait_not_ready`` waits until
    the node's Ready condition is no longer True.
    """
    faults.lose_node(_launcher(info), node, wait_not_ready=wait_not_ready, timeout=timeout)


def restore_node(
    info: StackInfo, node: str, *, wait_ready: bool = True, timeout: float = 60
) -> None:
    """Bring a lost node back (its kwok restarts; pending deletions then complete)."""
    faults.restore_node(_launcher(info), node, wait_ready=wait_ready, timeout=timeout)


def node_is_lost(info: StackInfo, node: str) -> bool:
    return faults.node_lost(_launcher(info).layout, node)


def restart_component(
    info: StackInfo,
    component: str,
    *,
    kill: bool = False,
    down_s: float = 0.0,
    timeout: float = 120,
) -> float:
    """Stop one process of the stack and start it again on the same ports and data.

    ``component``: ``kafka``, ``etcd``, ``kube-apiserver``,
    ``kube-controller-manager``, ``kube-scheduler`` or ``kwok-<node>``.
    ``kill``: SIGKILL (a crash) rather than SIGTERM (a clean shutdown);
    ``down_s``: stay stopped that long first. Returns once it serves again,
    with the seconds it was unavailable.
    """
    return faults.restart(_launcher(info), component, kill=kill, down_s=down_s, timeout=timeout)


def compact_etcd(info: StackInfo) -> int:
    """Compact etcd's history to its current revision (physically); returns the revision.

    Watches that resume from an older resourceVersion and reach etcd get
    ``410 Gone``. The API server's watch cache keeps serving its own window
    of history until it restarts (:func:`restart_component`).
    """
    return faults.compact_etcd(_launcher(info).layout)


# -- real nodes (``stack up --real-nodes 1``) ---------------------------------------


def _real_node_layout(info: StackInfo, node: str) -> Layout:
    layout = _launcher(info).layout
    if node not in info.real_nodes:
        raise StackError(f"{node!r} is not a real node (real nodes: {list(info.real_nodes)})")
    return layout


def freeze_kubelet(info: StackInfo, node: str) -> None:
    """SIGSTOP the kubelet of real node ``node``: a lost node whose containers keep
    running (no heartbeat, no pod updates, deletions hang). ``stack down`` thaws it."""
    realnode.freeze(_real_node_layout(info, node), node)


def thaw_kubelet(info: StackInfo, node: str) -> None:
    """SIGCONT the kubelet of ``node``: it renews its lease and reconciles its pods."""
    realnode.thaw(_real_node_layout(info, node), node)


def crash_kubelet(info: StackInfo, node: str) -> None:
    """SIGKILL the kubelet of real node ``node``: a lost node by a crash (its containers
    keep running). :func:`revive_kubelet` starts it again."""
    realnode.crash(_real_node_layout(info, node), node)


def revive_kubelet(info: StackInfo, node: str) -> None:
    """Start the crashed kubelet of ``node`` again, with its recorded command line."""
    _real_node_layout(info, node)
    realnode.revive(_launcher(info), node)


def real_node_tasks(info: StackInfo, node: str) -> dict[str, tuple[int, str]]:
    """containerd's tasks on ``node`` (``ctr -n k8s.io tasks ls``): container id ->
    (pid, status: RUNNING, STOPPED, PAUSED...). A pod's container id is its
    ``status.containerStatuses[].containerID`` without ``containerd://``."""
    return realnode.tasks(_real_node_layout(info, node), node)


def real_node_clean_containers(info: StackInfo, node: str) -> list[str]:
    """Kill and remove every container in ``node``'s containerd (the kubelet is not
    asked): for a test that must leave no orphan behind. Returns their ids."""
    return realnode.clean_containers(_real_node_layout(info, node), node)


def ensure_jobreaper_image(info: StackInfo, node: str, say: Say = say_stderr) -> str:
    """The jobreaper image of this checkout, built without Docker (cached; see
    ``devtools/stack/appimage.py``) and imported into real node ``node``'s
    containerd; returns its reference (``jobreaper.local/jobreaper:<key>``)."""
    image = appimage.ensure_image(say)
    appimage.import_image(_real_node_layout(info, node), node, image)
    return image.ref


def real_node_container_spec(info: StackInfo, node: str, container_id: str) -> dict[str, Any]:
    """The OCI runtime spec containerd runs container ``container_id`` of ``node``
    with (``ctr containers info``'s ``Spec``): process args, user, env, root."""
    raw = realnode.ctr(_real_node_layout(info, node), node, "containers", "info", container_id)
    spec: dict[str, Any] = json.loads(raw)["Spec"]
    return spec
