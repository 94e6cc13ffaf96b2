"""jobreaper as it ships: the image built without Docker, the four services deployed
from ``deploy/kubernetes`` (overlay ``local-stack``) as pods on the stack's real node,
each with its own ServiceAccount and RBAC, killing Jobs on kwok nodes.

What the services did is read from the API server's audit log, where each request
names who sent it: the kills must come from the executor's ServiceAccount (the
token the kubelet mounted into its pod), the watching from the watcher's. Nothing
of the services runs in this test process (``tests/e2e/in_cluster.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo, ensure_jobreaper_image, real_node_container_spec
from tests.e2e.harness import rfc3339
from tests.e2e.in_cluster import (
    NAMESPACE,
    RUN_LABEL,
    SERVICES,
    Deployed,
    audit_events_by,
    config_for,
    deploy,
    host_ports,
    port_taken,
    render_run,
    undeploy,
    user,
)
from tests.e2e.test_ladder import FAST, job_condition, kill_now, pods, running
from tests.integration.deploy.manifests import kustomize_binary
from tests.integration.helpers import eventually, job_manifest, step_of
from tests.integration.lossy_nodes import ReservedNodeLoss

GRACE_S = 2

pytestmark = [
    pytest.mark.stack,
    pytest.mark.real_node,
    pytest.mark.exclusive(
        "deploys the services in namespace jobreaper on the one real node; "
        "its Jobs on a lost node need the others' pods elsewhere"
    ),
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def in_cluster(
    stack: StackInfo,
    kube_api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Deployed, str]]:
    """The services deployed once for this module; deleted (and waited for) after."""
    if not stack.real_nodes:
        pytest.skip(
            f"stack '{stack.name}' has no real node: start it with "
            f"`jobreaper-dev stack up --name {stack.name} --real-nodes 1`"
        )
    node = stack.real_nodes[0]
    ref = await asyncio.to_thread(ensure_jobreaper_image, stack, node)
    run_id = uuid.uuid4().hex[:10]
    objects = render_run(
        kustomize_binary(),
        tmp_path_factory.mktemp("in-cluster"),
        stack,
        image_ref=ref,
        topic_prefix=f"t-{run_id}.",
        run_id=run_id,
        config=config_for(run_id, **FAST),
    )
    taken = [p for p in host_ports(objects) if port_taken(p)]
    assert not taken, f"ports the overlay's host-network pods need are taken: {taken}"
    deployed = await deploy(kube_api, objects)
    print(
        f"in-cluster: {ref}; every service Ready {deployed.all_ready_s:.1f}s after the "
        f"first apply; pod created -> Ready: {deployed.ready_after}"
    )
    try:
        yield deployed, run_id
    finally:
        await undeploy(kube_api, objects)


def _pod_of(pods_: list[Any], service: str) -> Any:
    (pod,) = [
        p
        for p in pods_
        if (p.metadata.labels or {}).get("app.kubernetes.io/name") == f"jobreaper-{service}"
    ]
    return pod


async def test_the_services_run_as_the_image_and_manifests_say(
    in_cluster: tuple[Deployed, str], kube_api: client.ApiClient, stack: StackInfo
) -> None:
    """Each service's container, as containerd runs it: the image's entry point with
    the manifest's args, uid 10001, a read-only root, no capabilities."""
    listed = (await client.CoreV1Api(kube_api).list_namespaced_pod(NAMESPACE)).items
    for service in SERVICES:
        pod = _pod_of(listed, service)
        assert pod.spec.node_name == stack.real_nodes[0]
        assert pod.spec.service_account_name == f"jobreaper-{service}"
        (status,) = pod.status.container_statuses
        assert status.ready and status.restart_count == 0, (service, status)
        spec = real_node_container_spec(
            stack, stack.real_nodes[0], status.container_id.removeprefix("containerd://")
        )
        process = spec["process"]
        assert process["args"] == ["jobreaper", service, "run"], process["args"]
        assert (process["user"]["uid"], process["user"]["gid"]) == (10001, 10001)
        assert spec["root"].get("readonly") is True
        assert not process.get("capabilities", {}).get("effective")
        assert process.get("noNewPrivileges") is True
        env = dict(e.split("=", 1) for e in process["env"])
        assert env["PATH"].startswith("/opt/jobreaper/bin:")  # from the image
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"  # the overlay's


async def test_the_in_cluster_services_kill_a_job_on_a_kwok_node(
    in_cluster: tuple[Deployed, str],
    kube_api: client.ApiClient,
    namespace: str,
    stack: StackInfo,
) -> None:
    deployed, run_id = in_cluster
    assert stack.audit_log is not None
    since = rfc3339(datetime.now(UTC))
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace,
        job_manifest(
            "shipped", run="never", enforce=None, labels={RUN_LABEL: run_id}, backoff_limit=6
        ),
    )
    (pod,) = await running(kube_api, namespace, "shipped")
    assert pod.spec.node_name in stack.nodes, "a kwok node"
    kill_at = await kill_now(kube_api, namespace, "shipped")

    async def failed() -> bool:
        return await job_condition(kube_api, namespace, "shipped", "Failed")

    await eventually("the Job Failed", failed, timeout=60)
    events = audit_events_by(stack.audit_log, {user(s) for s in SERVICES}, since)
    mine = [e for e in events if e.get("objectRef", {}).get("namespace") == namespace]
    writes = [
        (
            e["user"]["username"],
            e["verb"],
            e["objectRef"]["resource"],
            e["objectRef"].get("subresource"),
        )
        for e in mine
        if e["verb"] in ("patch", "delete", "update", "create")
        and e["objectRef"].get("resource") in ("pods", "jobs")
    ]
    executor = user("executor")
    assert (executor, "patch", "jobs", "status") in writes, writes
    assert (executor, "patch", "pods", None) in writes, writes
    assert {w[0] for w in writes} == {executor}, "only the executor writes pods and Jobs"
    first = min(e["requestReceivedTimestamp"] for e in mine if e["user"]["username"] == executor)
    latency = (datetime.fromisoformat(first) - kill_at).total_seconds()
    print(f"in-cluster: kill-timestamp -> first executor write {latency:.2f}s")
    watched = [
        e
        for e in audit_events_by(
            stack.audit_log,
            {user("watcher")},
            deployed.started,
            ("ResponseStarted", "ResponseComplete"),
        )
        if e["verb"] in ("list", "watch") and e.get("objectRef", {}).get("resource") == "pods"
    ]
    assert watched, "the watcher lists or watches pods with its own ServiceAccount"
    # Nobody else acted for jobreaper: no pod write in this namespace by another user
    # than the executor and the control plane's own.
    others = [
        e
        for e in audit_events_by(stack.audit_log, {"kubernetes-admin", "admin"}, since)
        if e.get("objectRef", {}).get("namespace") == namespace
        and e["verb"] in ("patch", "delete")
        and e["objectRef"].get("resource") == "pods"
    ]
    assert others == [], others


async def test_the_in_cluster_ladder_on_a_lost_kwok_node(
    in_cluster: tuple[Deployed, str],
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    """A kwok node lost under a running Job: the in-cluster executor deletes the pod
    gracefully (it hangs: no kubelet), then force-deletes it after the timeout."""
    _, run_id = in_cluster
    assert stack.audit_log is not None
    since = rfc3339(datetime.now(UTC))
    job = job_manifest(
        "stranded",
        run="never",
        node=node_loss.reserved,
        enforce=None,
        labels={RUN_LABEL: run_id},
        backoff_limit=6,
    )
    # The force deletion is due at deletionTimestamp (the graceful delete + this
    # grace period) + forceDeleteTaskTimeoutSeconds: a short grace keeps the test short.
    job.spec.template.spec.termination_grace_period_seconds = GRACE_S
    await client.BatchV1Api(kube_api).create_namespaced_job(namespace, job)
    await running(kube_api, namespace, "stranded")
    await asyncio.to_thread(node_loss.lose, node_loss.reserved)  # waits for NotReady
    await kill_now(kube_api, namespace, "stranded")

    async def gone() -> bool:
        return await pods(kube_api, namespace, "stranded") == []

    await eventually("the stranded pod force-deleted", gone, timeout=60)
    deletes = [
        e
        for e in audit_events_by(stack.audit_log, {user("executor")}, since)
        if e.get("objectRef", {}).get("namespace") == namespace
        and e["verb"] == "delete"
        and e["objectRef"].get("resource") == "pods"
    ]
    steps = [step_of(e) for e in sorted(deletes, key=lambda e: e["requestReceivedTimestamp"])]
    assert steps == ["delete", "force-delete"], steps
    graceful, force = sorted(deletes, key=lambda e: e["requestReceivedTimestamp"])
    forced_at = datetime.fromisoformat(force["requestReceivedTimestamp"])
    gap = (forced_at - datetime.fromisoformat(graceful["requestReceivedTimestamp"])).total_seconds()
    deletion = graceful["responseObject"]["metadata"]["deletionTimestamp"]
    after_deadline = (forced_at - datetime.fromisoformat(deletion)).total_seconds()
    print(
        f"in-cluster: graceful delete -> force delete {gap:.2f}s "
        f"(deletionTimestamp + {after_deadline:.2f}s)"
    )
    # deletionTimestamp is whole seconds: up to 1 s early on its face.
    assert after_deadline >= FAST["forceDeleteTaskTimeoutSeconds"] - 1, "not before the timeout"
    assert graceful["requestObject"].get("gracePeriodSeconds") in (None, GRACE_S), graceful
