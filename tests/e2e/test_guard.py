"""The mass-disruption guard on the real stack (issue #21): lose 4 of 6 kwok nodes of
one zone at once; no force deletion, exactly one alert; restore them: the graceful
deletions complete, nothing is force-deleted.

The test brings six nodes of its own, in a zone of its own
(``topology.kubernetes.io/zone``): Node objects, each simulated by a kwok process
started here as the stack starts its own (``--manage-single-node``), labelled lossy
so that other tests' pods stay off them. Losing a node is stopping its kwok, as
``jobreaper-dev stack lose-node`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.stack import build, config
from devtools.stack.api import StackInfo
from devtools.stack.layout import Layout
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.events import ForceDeletionHeld, ForceDeletionPaused, ForceDeletionResumed
from services.replay.history import read_history
from services.replay.report import replay, what_if
from tests.e2e.harness import System
from tests.e2e.test_fences import FAST, force_deletes
from tests.e2e.test_ladder import job_manifest, kill_now, running
from tests.integration.helpers import eventually
from tests.integration.lossy_nodes import LOSSY_LABEL

pytestmark = pytest.mark.stack

ZONE_LABEL = "topology.kubernetes.io/zone"
NODES = 6
LOST = 4


class Fleet:
    """Nodes of a zone of their own, each simulated by a kwok started here."""

    def __init__(self, stack: StackInfo, zone: str) -> None:
        if stack.stack_dir is None:
            pytest.skip("needs a stack started by devtools.stack (its kwok build)")
        self.layout = Layout(stack.name, stack.stack_dir)
        kwok = build.build_for("kwok")
        if not kwok.complete:
            pytest.skip("kwok is not built")
        self.kwok = kwok.bin("kwok")
        self.zone = zone
        self.nodes = [f"{zone}-{i}" for i in range(NODES)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = Path(self.layout.logs)

    def node_body(self, i: int, node: str) -> client.V1Node:
        return client.V1Node(
            metadata=client.V1ObjectMeta(
                name=node,
                labels={
                    "type": "kwok",
                    "kubernetes.io/hostname": node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    ZONE_LABEL: self.zone,
                    LOSSY_LABEL: "true",
                },
                annotations={"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            ),
            spec=client.V1NodeSpec(pod_cidr=f"10.250.{i}.0/24", pod_cidrs=[f"10.250.{i}.0/24"]),
        )

    def start(self, node: str) -> None:
        i = self.nodes.index(node)
        # The child keeps its own copy of the descriptor: ours is closed at once.
        with (self.logs / f"test-kwok-{node}.log").open("ab") as log:
            self.procs[node] = self._spawn(node, i, log)

    def _spawn(self, node: str, i: int, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(self.kwok),
                f"--kubeconfig={self.layout.component_kubeconfig('kwok')}",
                f"--config={self.layout.conf / 'kwok.yaml'}",
                f"--manage-single-node={node}",
                f"--node-lease-duration-seconds={config.NODE_LEASE_SECONDS}",
                f"--node-ip=10.10.1.{i + 1}",
                f"--cidr=10.250.{i}.0/24",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def lose(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for node in list(self.procs):
            self.lose(node)


async def ready(core: client.CoreV1Api, node: str) -> bool | None:
    found = await core.read_node(node)
    for cond in found.status.conditions or []:
        if cond.type == "Ready":
            return bool(cond.status == "True")
    return None


@pytest.mark.exclusive(
    "loses 4 nodes at once: the node lifecycle controller's zone state, and the force "
    "deletions of other tests would show in the audit log's count"
)
async def test_losing_4_of_6_nodes_at_once_pauses_force_deletion_with_one_alert(
    system: System, kube_api: client.ApiClient, namespace: str, stack: StackInfo
) -> None:
    zone = f"guard-{uuid.uuid4().hex[:6]}"
    fleet = Fleet(stack, zone)
    core = client.CoreV1Api(kube_api)
    try:
        for i, node in enumerate(fleet.nodes):
            await core.create_node(fleet.node_body(i, node))
            fleet.start(node)
        for node in fleet.nodes:
            await eventually(f"{node} Ready", _is(core, node, True), timeout=60)
        # The guard with its defaults: 3 nodes and 0.55 of the zone within 120 s.
        await system.start(**FAST)
        lost = fleet.nodes[:LOST]
        jobs = [f"g{i}" for i in range(LOST)]
        batch = client.BatchV1Api(kube_api)
        for job, node in zip(jobs, lost, strict=True):
            await batch.create_namespaced_job(namespace, job_manifest(job, run="never", node=node))
        for job in jobs:
            await running(kube_api, namespace, job)
        for node in lost:  # at once
            fleet.lose(node)
        for node in lost:
            await eventually(f"{node} NotReady", _is(core, node, False), timeout=60)
        for job in jobs:
            await kill_now(kube_api, namespace, job)

        async def paused() -> list[Any] | None:
            found = [e for e in await system.kill_events() if isinstance(e, ForceDeletionPaused)]
            return found or None

        (alert,) = await eventually("ForceDeletionPaused", paused, timeout=60)
        assert (alert.zone, alert.silent_nodes, alert.zone_nodes) == (zone, LOST, NODES)
        assert alert.nodes == tuple(sorted(lost))

        async def held() -> list[ForceDeletionHeld] | None:
            found = [
                e
                for e in await system.kill_events()
                if isinstance(e, ForceDeletionHeld) and e.waits_for == "guard"
            ]
            return found if len(found) == LOST else None

        holds = await eventually("a guard hold per pod", held, timeout=60)
        assert sorted(h.node_name or "" for h in holds) == sorted(lost)
        await asyncio.sleep(5)  # well past the 3 s force timeout: still nothing forced
        assert force_deletes(system) == []

        for node in lost:
            fleet.start(node)
        for job in jobs:
            killed = await system.job_killed(job, timeout=90)
            assert [p.ended for p in killed.pods] == ["deleted"], killed.pods

        async def resumed() -> list[Any] | None:
            found = [e for e in await system.kill_events() if isinstance(e, ForceDeletionResumed)]
            return found or None

        (back,) = await eventually("ForceDeletionResumed", resumed, timeout=60)
        assert (back.zone, back.cause) == (zone, "nodes-returned")
        events = await system.kill_events()
        assert len([e for e in events if isinstance(e, ForceDeletionPaused)]) == 1
        assert force_deletes(system) == []
        # Replay re-makes the holds and the alerts byte for byte; a what-if without the
        # guard force-deletes the four pods while their nodes were away.
        await system.stop()
        history = await read_history(system.kafka)
        report = replay(history)
        assert report.divergences == []
        snapshot = ConfigSnapshot(
            version=system.version + 1,
            config=KillerConfig.model_validate({**FAST, "massDisruptionWindowSeconds": 0}),
            changed_at=datetime.now(UTC),
        )
        forced = [c for c in what_if(history, snapshot).steps if c.step == "force-delete"]
        assert len(forced) == LOST and all(
            c.recorded is None and c.what_if is not None for c in forced
        ), forced
        print(
            f"guard: tripped at {alert.tripped_at.isoformat()}, decided "
            f"{(alert.decided_at - alert.tripped_at).total_seconds():.3f} s after the "
            f"{LOST}-th node was seen unreachable"
        )
    finally:
        fleet.stop_all()
        for node in fleet.nodes:
            with contextlib.suppress(client.ApiException):
                await core.delete_node(node)


def _is(core: client.CoreV1Api, node: str, want: bool) -> Callable[[], Awaitable[bool | None]]:
    """A probe: True once ``node``'s Ready condition is ``want``, else None."""

    async def probe() -> bool | None:
        return True if await ready(core, node) is want else None

    return probe
