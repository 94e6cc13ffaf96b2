"""Volumes on the real stack (issue #21, item 3): a pod that mounts a ReadWriteOnce
PersistentVolumeClaim on a lost node that is not fenced is never force-deleted (its
processes may still write there, beside a replacement); the same pod with
``jobreaper.io/safe-to-force-delete: "true"`` is force-deleted on time, and so is one
whose claim is ReadWriteMany. The held one goes at once when the node is fenced.

The local stack has no storage provisioner: the claims stay Pending (no volume), and
the pods are put on the node by ``spec.nodeName`` (the scheduler would wait for the
claims to bind; kwok runs a pod whatever its volumes). What jobreaper reads is the
claim's access modes and the pod's reference to it, which are real."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client

from schemas.annotations import SAFE_TO_FORCE_DELETE
from schemas.events import ForceDeletionHeld
from schemas.observations import PodObserved, VolumeClaim
from schemas.topics import K8S_OBJECTS
from tests.e2e.harness import System
from tests.e2e.test_fences import taint_out_of_service, untaint
from tests.e2e.test_ladder import _at, kill_now, pods, running
from tests.integration.helpers import eventually, job_manifest, step_of
from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack

FAST: dict[str, Any] = {"deleteKillingTasksTimeoutSeconds": 2, "forceDeleteTaskTimeoutSeconds": 3}
GRACE_S = 30


async def claim(kube_api: client.ApiClient, namespace: str, name: str, mode: str) -> None:
    """A claim no provisioner will ever bind (storageClassName ""): Pending."""
    await client.CoreV1Api(kube_api).create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=[mode],
                storage_class_name="",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )


def mounting(name: str, node: str, claim_name: str, **manifest: Any) -> client.V1Job:
    job = job_manifest(name, run="never", **manifest)
    spec = job.spec.template.spec
    spec.node_name, spec.affinity = node, None
    spec.volumes = [
        client.V1Volume(
            name="data",
            persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                claim_name=claim_name
            ),
        )
    ]
    return job


def force_deletes_of(system: System, pod_name: str) -> list[dict[str, Any]]:
    return [
        w
        for w in system.writes_of("delete")
        if step_of(w) == "force-delete" and w["objectRef"].get("name") == pod_name
    ]


@pytest.mark.exclusive("bounds how late the opted-in force deletion comes (its timeout + 2 s)")
async def test_a_rwo_claim_holds_the_force_deletion_unless_the_pod_opts_in(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
) -> None:
    await system.start(**FAST)
    node = node_loss.reserved
    await claim(kube_api, namespace, "data", "ReadWriteOnce")
    await claim(kube_api, namespace, "shared", "ReadWriteMany")
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, mounting("held", node, "data"))
    await batch.create_namespaced_job(
        namespace,
        mounting("optin", node, "data", pod_annotations={SAFE_TO_FORCE_DELETE: "true"}),
    )
    await batch.create_namespaced_job(namespace, mounting("rwx", node, "shared"))
    for job in ("held", "optin", "rwx"):
        await running(kube_api, namespace, job)
    (held_pod,) = await pods(kube_api, namespace, "held")
    await asyncio.to_thread(node_loss.lose, node)
    try:
        for job in ("held", "optin", "rwx"):
            await kill_now(kube_api, namespace, job)

        # On time: the opted-in pod and the ReadWriteMany one.
        for job in ("optin", "rwx"):
            killed = await system.job_killed(job, timeout=GRACE_S + 30)
            assert [p.ended for p in killed.pods] == ["force-deleted"], job
            (force,) = force_deletes_of(system, killed.pods[0].name)
            command = next(
                c for c in await system.commands() if c.step == "force-delete" and c.job_name == job
            )
            assert command.rule == "ladder.force-delete"
            late = (_at(force["requestReceivedTimestamp"]) - command.due_at).total_seconds()
            print(f"{job}: force deletion sent {late:.3f} s after it was due")
            assert 0 <= late < 2

        # The ReadWriteOnce one: held, said so once, never forced by time.
        async def held() -> ForceDeletionHeld | None:
            for event in await system.kill_events():
                if isinstance(event, ForceDeletionHeld) and event.job_name == "held":
                    return event
            return None

        event = await eventually("ForceDeletionHeld (volume)", held, timeout=30)
        assert (event.waits_for, event.node_name, event.pod_name) == (
            "volume",
            node,
            held_pod.metadata.name,
        )
        await asyncio.sleep(5)  # well past its force timeout
        assert force_deletes_of(system, held_pod.metadata.name) == []
        assert [p.metadata.uid for p in await pods(kube_api, namespace, "held")] == [
            held_pod.metadata.uid
        ]
        # (the other two may wait a slot of the rate limit, 50 ms apart: their own holds)
        holds = [
            e
            for e in await system.kill_events()
            if isinstance(e, ForceDeletionHeld) and e.job_name == "held"
        ]
        assert len(holds) == 1, holds
        # What the watcher told the killer: the claim and its access modes.
        observed = [
            m
            for m in await system.topic(K8S_OBJECTS)
            if isinstance(m, PodObserved) and m.uid == held_pod.metadata.uid
        ]
        assert observed[-1].claims == (VolumeClaim(name="data", access_modes=("ReadWriteOnce",)),)

        # A fence releases it at once.
        fenced_at = await taint_out_of_service(kube_api, node)
        killed = await system.job_killed("held", timeout=30)
        assert [p.ended for p in killed.pods] == ["force-deleted"]
        (force,) = force_deletes_of(system, held_pod.metadata.name)
        lag = (_at(force["requestReceivedTimestamp"]) - fenced_at).total_seconds()
        print(f"held (ReadWriteOnce): fence -> force deletion {lag:.3f} s")
        assert 0 <= lag < 1
    finally:
        await untaint(kube_api, node)
