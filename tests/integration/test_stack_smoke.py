"""Smoke tests of the local stack's contract (docs/stack.md): each behaviour tests rely on."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from devtools.stack.audit_log import read_audit_events
from tests.integration.helpers import IMAGE, eventually
from tests.integration.lossy_nodes import AVOID_LOSSY_NODES

if TYPE_CHECKING:
    from devtools.stack.api import StackInfo
    from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack


def pod_manifest(
    name: str,
    *,
    node: str | None = None,
    deadline: int | None = None,
    annotations: dict[str, str] | None = None,
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image=IMAGE)],
            restart_policy="Never",
            active_deadline_seconds=deadline,
            node_selector={"kubernetes.io/hostname": node} if node else None,
            affinity=None if node else AVOID_LOSSY_NODES,
        ),
    )


async def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    try:
        return await core.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


# --- Kafka -------------------------------------------------------------------------


async def test_kafka_transactions_round_trip(stack: StackInfo, topic_prefix: str) -> None:
    topic = f"{topic_prefix}smoke"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, transactional_id=f"{topic_prefix}tx"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1", key=b"k")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", key=b"k")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2", key=b"k")
    finally:
        await producer.stop()

    async def read_all(isolation: str, want: int) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.kafka_bootstrap,
            isolation_level=isolation,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while len(values) < want and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    values += [r.value for r in records]
            # Anything more would arrive with the markers already read; one more poll.
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
        finally:
            await consumer.stop()
        return values

    assert await read_all("read_committed", 2) == [b"committed-1", b"committed-2"]
    # The aborted record was really written: read_uncommitted sees it.
    assert await read_all("read_uncommitted", 3) == [b"committed-1", b"aborted", b"committed-2"]


# --- Kubernetes + kwok --------------------------------------------------------------


async def test_job_runs_to_complete_on_a_kwok_node(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="smoke"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    annotations={"pod-complete.stage.kwok.x-k8s.io/delay": "3s"}
                ),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="main", image=IMAGE)],
                    restart_policy="Never",
                    affinity=AVOID_LOSSY_NODES,
                ),
            ),
        ),
    )
    await batch.create_namespaced_job(namespace, job)

    async def complete() -> Any:
        j = await batch.read_namespaced_job("smoke", namespace)
        conds = j.status.conditions or []
        return j if any(c.type == "Complete" and c.status == "True" for c in conds) else None

    done = await eventually("Job Complete", complete)
    assert done.status.succeeded == 1
    pods = await core.list_namespaced_pod(namespace, label_selector="job-name=smoke")
    assert len(pods.items) == 1
    pod = pods.items[0]
    assert pod.status.phase == "Succeeded"
    if stack.nodes:
        assert pod.spec.node_name in stack.nodes
    # It ran for the annotated 3 s, counted from status.startTime, which the
    # API server keeps in whole seconds: so 2 s at least in whole seconds.
    started = pod.status.start_time
    finished = pod.status.container_statuses[0].state.terminated.finished_at
    assert (finished - started).total_seconds() >= 2


async def test_graceful_delete_on_a_lost_node_never_completes(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str, node_loss: ReservedNodeLoss
) -> None:
    core = client.CoreV1Api(kube_api)
    node = node_loss.reserved
    await core.create_namespaced_pod(namespace, pod_manifest("stuck", node=node))

    async def running() -> Any:
        p = await read_pod(core, namespace, "stuck")
        return p if p is not None and p.status.phase == "Running" else None

    await eventually("pod Running", running)

    # Waits until the node is NotReady (8-10 s); in a thread, not to block the loop.
    await asyncio.to_thread(node_loss.lose, node)
    n = await core.read_node(node)
    ready = next(c for c in n.status.conditions if c.type == "Ready")
    assert ready.status != "True"

    await core.delete_namespaced_pod(
        "stuck", namespace, body=client.V1DeleteOptions(grace_period_seconds=1)
    )
    # Far longer than the grace period: a kubelet would have finished by now.
    for _ in range(8):
        await asyncio.sleep(1)
        p = await read_pod(core, namespace, "stuck")
        assert p is not None, "the pod on a lost node vanished after a graceful delete"
        assert p.metadata.deletion_timestamp is not None

    await core.delete_namespaced_pod(
        "stuck", namespace, body=client.V1DeleteOptions(grace_period_seconds=0)
    )

    async def gone() -> bool:
        return await read_pod(core, namespace, "stuck") is None

    await eventually("pod gone after force delete", gone, timeout=30)


async def test_pod_fails_on_its_active_deadline(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_pod(namespace, pod_manifest("deadline", deadline=3))
    await core.create_namespaced_pod(
        namespace,
        pod_manifest(
            "ignores-deadline",
            deadline=1,
            annotations={"jobreaper.test/ignore-deadline": "true"},
        ),
    )
    # The killer's move: lower the deadline of a running pod with a patch.
    await core.create_namespaced_pod(namespace, pod_manifest("patched"))

    async def running(name: str) -> Any:
        p = await read_pod(core, namespace, name)
        return p if p is not None and p.status.phase == "Running" else None

    await eventually("patched pod Running", lambda: running("patched"))
    await core.patch_namespaced_pod("patched", namespace, {"spec": {"activeDeadlineSeconds": 1}})

    async def failed(name: str) -> Any:
        p = await read_pod(core, namespace, name)
        return p if p is not None and p.status.phase == "Failed" else None

    for name in ("deadline", "patched"):
        pod = await eventually(f"{name} Failed", lambda name=name: failed(name))
        assert pod.status.reason == "DeadlineExceeded"
        started, deadline = pod.status.start_time, pod.spec.active_deadline_seconds
        assert deadline is not None and started is not None
        # As the real kubelet writes it: Failed and the containers terminated (by the
        # SIGTERM: 143) in the same update, never a Failed pod still running.
        states = [c.state for c in pod.status.container_statuses or []]
        assert states and all(s.terminated is not None for s in states), states
        assert pod.status.container_statuses[0].state.terminated.exit_code == 143

    pod = await read_pod(core, namespace, "ignores-deadline")
    assert pod.status.phase == "Running", "a pod told to ignore its deadline failed"


async def test_audit_log_records_delete_options(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    if stack.audit_log is None:
        pytest.skip("no JOBREAPER_AUDIT_LOG for this cluster")
    core = client.CoreV1Api(kube_api)
    pod = await core.create_namespaced_pod(namespace, pod_manifest("audited"))
    uid = pod.metadata.uid
    await core.delete_namespaced_pod(
        "audited",
        namespace,
        body=client.V1DeleteOptions(
            grace_period_seconds=7, preconditions=client.V1Preconditions(uid=uid)
        ),
    )
    audit_log = stack.audit_log

    async def logged() -> Any:
        for event in read_audit_events(audit_log):
            ref = event.get("objectRef", {})
            if (
                event.get("verb") == "delete"
                and ref.get("resource") == "pods"
                and ref.get("namespace") == namespace
                and ref.get("name") == "audited"
                and event.get("stage") == "ResponseComplete"
            ):
                return event
        return None

    event = await eventually("delete in the audit log", logged, timeout=30)
    options = event["requestObject"]
    assert options["gracePeriodSeconds"] == 7
    assert options["preconditions"]["uid"] == uid
    assert event["responseStatus"]["code"] == 200
    assert event["user"]["username"] == "jobreaper-admin"
