"""A per-namespace override changes the ladder of that namespace only (issue 7),
proven end to end with pods stuck on a lost node."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.commands import CommandIssued
from tests.e2e.harness import System
from tests.e2e.test_ladder import kill_now, pods, running
from tests.integration.helpers import job_manifest
from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack


async def test_disabling_force_deletion_for_one_namespace_spares_only_its_pods(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    core = client.CoreV1Api(kube_api)
    other = f"jr-other-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        await asyncio.sleep(1)  # the namespace's default ServiceAccount
        system.namespaces.append(other)
        await system.start(
            forceDeleteTaskTimeoutSeconds=3,
            overrides={"namespaces": {namespace: {"forceDeleteTaskTimeoutSeconds": 0}}},
        )
        node = node_loss.reserved
        batch = client.BatchV1Api(kube_api)
        for ns in (namespace, other):
            await batch.create_namespaced_job(ns, job_manifest("stranded", run="never", node=node))
            await running(kube_api, ns, "stranded")
        # In a thread: it waits for NotReady, and the services of this event loop
        # must keep heartbeating meanwhile (a stalled loop costs them their groups).
        await asyncio.to_thread(node_loss.lose, node)
        for ns in (namespace, other):
            await kill_now(kube_api, ns, "stranded")

        killed = await system.job_killed("stranded", timeout=60)
        assert killed.namespace == other, "the namespace without the override is killed"
        await asyncio.sleep(5)  # longer than the global force timeout
        by_ns: dict[str, list[str]] = {namespace: [], other: []}
        for command in await system.commands():
            assert isinstance(command, CommandIssued)
            by_ns[command.namespace].append(command.step)
        # Each Job's FailureTarget first (fail-job), then its pod's rungs.
        assert by_ns[other] == ["fail-job", "delete", "force-delete"]
        assert by_ns[namespace] == ["fail-job", "delete"], "force deletion disabled there"
        assert {c.config_version for c in await system.commands()} == {1}
        (spared,) = await pods(kube_api, namespace, "stranded")
        assert spared.metadata.deletion_timestamp is not None
        assert len(system.writes_of("delete", namespace)) == 1
        assert len(system.writes_of("delete", other)) == 2
    finally:
        await core.delete_namespace(other)
