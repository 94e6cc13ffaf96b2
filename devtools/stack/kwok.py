"""kwok: one process per fake node (``--manage-single-node``), so that one node can be
lost (its kwok stopped) while the others keep their heartbeats."""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.stack import config
from devtools.stack.build import Build
from devtools.stack.certs import Pki
from devtools.stack.errors import StackError
from devtools.stack.kuberest import KubeRest, KubeRestError
from devtools.stack.launch import Launcher, wait_for
from devtools.stack.layout import Layout, State, kwok_proc
from devtools.stack.util import elapsed

KWOK_NODE_LABEL = "jobreaper.test/kwok-node"


def node_ready(rest: KubeRest, node: str) -> bool | None:
    """True/False from the node's Ready condition; None if unknown or unreachable."""
    try:
        obj: Any = rest.json("GET", f"/api/v1/nodes/{node}")
    except (KubeRestError, OSError, http.client.HTTPException, ValueError):
        return None
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return None


def ready_check(rest: KubeRest, node: str) -> Callable[[], bool]:
    """The node kwok simulates is Ready."""
    return lambda: node_ready(rest, node) is True


def _config(layout: Layout) -> Path:
    """kwok's stages (``stack/kwok/stages.yaml``), copied into the stack's conf/."""
    src = config.stack_sources() / "kwok" / "stages.yaml"
    dest = layout.conf / "kwok.yaml"
    if not dest.exists() or dest.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dest)
    return dest


def create_node(rest: KubeRest, node: str, index: int) -> None:
    """The Node object kwok takes over (already there is fine)."""
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                KWOK_NODE_LABEL: "true",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {
            "podCIDR": f"10.244.{index}.0/24",
            "podCIDRs": [f"10.244.{index}.0/24"],
        },
    }
    try:
        rest.json("POST", "/api/v1/nodes", body)
    except KubeRestError as e:
        if e.status != 409:
            raise StackError(str(e), step=f"create node {node}") from None


def start(launcher: Launcher, state: State, kwok: Build, node: str) -> None:
    """Start the kwok of ``node`` (it does not wait: see ``ready_check``)."""
    index = state.nodes.index(node)
    launcher.spawn(
        kwok_proc(node),
        [
            str(kwok.bin("kwok")),
            f"--kubeconfig={launcher.layout.component_kubeconfig('kwok')}",
            f"--config={_config(launcher.layout)}",
            f"--manage-single-node={node}",
            f"--node-lease-duration-seconds={config.NODE_LEASE_SECONDS}",
            f"--node-ip=10.10.0.{index + 1}",
            f"--cidr=10.244.{index}.0/24",
        ],
    )


def start_nodes(launcher: Launcher, state: State, kwok: Build, pki: Pki) -> None:
    """Create every node and start its kwok; wait until all are Ready."""
    t0 = time.monotonic()
    rest = KubeRest(state.ports["apiserver"], pki)
    for index, node in enumerate(state.nodes):
        create_node(rest, node, index)
        start(launcher, state, kwok, node)
    for node in state.nodes:
        wait_for(
            f"node {node} Ready",
            ready_check(rest, node),
            timeout=60,
            proc=(kwok_proc(node), launcher.layout),
        )
    names = ", ".join(state.nodes)
    launcher.say(f"  kwok {kwok.version}: nodes {names} Ready ({elapsed(t0)})")
