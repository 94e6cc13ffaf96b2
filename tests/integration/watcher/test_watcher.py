"""The watcher on the real stack: facts on Kafka, in order per Job, converging after restarts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo, compact_etcd, restart_component
from schemas.annotations import FORBID_FORCE_DELETION, KILL_TIMESTAMP, PENDING_TIMEOUT
from schemas.observations import JobObserved, NodeObserved, PodObserved
from services.runtime.kube import load_api_client, request_json
from services.runtime.settings import KafkaSettings
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings
from tests.integration.helpers import (
    eventually,
    job_manifest,
    kafka_paused,
    messages,
    read_topic,
    service_account_kubeconfig,
)

pytestmark = pytest.mark.stack


class RunningWatcher:
    def __init__(self, watcher: Watcher, task: asyncio.Task[None]) -> None:
        self.watcher = watcher
        self.task = task

    async def stop(self) -> None:
        self.watcher.stop()
        await asyncio.wait_for(self.task, 30)


@pytest_asyncio.fixture(loop_scope="session")
async def start_watcher(stack: StackInfo, topic_prefix: str, namespace: str) -> AsyncIterator[Any]:
    """Start in-process watchers scoped to the test's namespace and topics."""
    running: list[RunningWatcher] = []
    lease = f"watcher-{uuid.uuid4().hex[:8]}"

    async def start(identity: str = "w1", kubeconfig: Path | None = None) -> RunningWatcher:
        api = await load_api_client(str(kubeconfig or stack.kubeconfig))
        watcher = Watcher(
            api,
            KafkaSettings(
                bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix, job_partitions=3
            ),
            WatcherSettings(
                namespaces=[namespace],
                lease_namespace=namespace,
                lease_name=lease,
                identity=identity,
            ),
        )
        task = asyncio.create_task(watcher.run())
        task.add_done_callback(lambda _: asyncio.ensure_future(api.close()))
        handle = RunningWatcher(watcher, task)
        running.append(handle)
        await eventually("watcher ready", lambda: _ready(handle), timeout=60)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.stop()


async def _ready(handle: RunningWatcher) -> bool:
    if handle.task.done():
        handle.task.result()  # raises what stopped it
        raise AssertionError("the watcher stopped by itself")
    ready, detail = handle.watcher.readiness()
    return ready and detail.startswith("leader")


def _objects_topic(prefix: str) -> str:
    return f"{prefix}k8s.objects"


async def test_job_and_pod_changes_arrive_ordered_per_job_without_noise(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    start_watcher: Any,
) -> None:
    running = await start_watcher()
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, job_manifest("report", run="2s"))
    topic = _objects_topic(topic_prefix)

    async def completed() -> list[Any] | None:
        msgs = await messages(stack.kafka_bootstrap, topic)
        done = any(
            isinstance(m, JobObserved) and any(c.type == "Complete" for c in m.conditions)
            for m in msgs
        )
        return msgs if done else None

    await eventually("the Job's completion on the topic", completed, timeout=60)
    await running.stop()
    records = await read_topic(stack.kafka_bootstrap, topic)
    mine = [(r, m) for r, m in records if getattr(m, "namespace", None) == namespace]
    assert {r.key for r, _ in mine} == {f"{namespace}/report".encode()}
    assert len({r.partition for r, _ in mine}) == 1, "one Job's history is in one partition"
    pods = [m for _, m in mine if isinstance(m, PodObserved)]
    phases = [p.phase for p in pods]
    assert "Running" in phases
    assert phases[-1] == "Succeeded"
    for kind in (PodObserved, JobObserved):  # one watch stream each: ordered within a kind
        versions = [int(m.resource_version) for _, m in mine if isinstance(m, kind)]
        assert versions == sorted(versions), f"{kind.__name__}s arrive in the API server's order"
    for before, after in itertools.pairwise(pods):
        same = before.model_dump(
            exclude={"change", "observed_at", "resource_version"}
        ) == after.model_dump(exclude={"change", "observed_at", "resource_version"})
        assert not same, "a change that touches no field of the model is not published"
    nodes = await messages(stack.kafka_bootstrap, f"{topic_prefix}k8s.nodes")
    assert {n.name for n in nodes if isinstance(n, NodeObserved)} >= set(stack.nodes)


async def test_a_restarted_watcher_publishes_what_it_missed(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    start_watcher: Any,
) -> None:
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, job_manifest("doomed", run="never"))
    first = await start_watcher("w1")
    topic = _objects_topic(topic_prefix)

    async def running_pod() -> bool:
        return any(
            isinstance(m, PodObserved) and m.job_name == "doomed" and m.phase == "Running"
            for m in await messages(stack.kafka_bootstrap, topic)
        )

    await eventually("doomed's pod running on the topic", running_pod)
    await first.stop()

    # While no watcher runs: the Job and its pod go away, another Job comes.
    await batch.delete_namespaced_job("doomed", namespace, propagation_policy="Foreground")
    core = client.CoreV1Api(kube_api)

    async def doomed_gone() -> bool:
        pods = await core.list_namespaced_pod(namespace, label_selector="job-name=doomed")
        jobs = await batch.list_namespaced_job(namespace)
        return not pods.items and all(j.metadata.name != "doomed" for j in jobs.items)

    await eventually("doomed deleted", doomed_gone)
    await batch.create_namespaced_job(namespace, job_manifest("newcomer", run="never"))

    await start_watcher("w2")

    async def converged() -> list[Any] | None:
        msgs = await messages(stack.kafka_bootstrap, topic)
        deleted = {
            (type(m).__name__, getattr(m, "job_name", getattr(m, "name", "")))
            for m in msgs
            if getattr(m, "change", "") == "synthetic-deleted"
        }
        newcomer = any(isinstance(m, JobObserved) and m.name == "newcomer" for m in msgs)
        want = {("JobObserved", "doomed"), ("PodObserved", "doomed")}
        return msgs if want <= deleted and newcomer else None

    await eventually("synthetic deletions and the new Job on the topic", converged)


@pytest.mark.exclusive("pauses the stack's Kafka for 30 s")
async def test_nothing_is_lost_when_kafka_stops_for_30_s_during_a_burst(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    start_watcher: Any,
) -> None:
    if stack.stack_dir is None:
        pytest.skip("pausing Kafka needs a stack started by devtools.stack")
    await start_watcher()
    batch = client.BatchV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    with kafka_paused(stack.stack_dir):
        for i in range(5):
            await batch.create_namespaced_job(
                namespace, job_manifest(f"burst-{i}", run="2s", parallelism=4)
            )
        await asyncio.sleep(30)
    # Back: the topic must end with each object's state in the cluster.

    async def converged() -> bool:
        pods = {
            p.metadata.uid: p.status.phase
            for p in (await core.list_namespaced_pod(namespace)).items
        }
        if len(pods) < 20 or any(phase != "Succeeded" for phase in pods.values()):
            return False
        last: dict[str, str] = {}
        for m in await messages(stack.kafka_bootstrap, _objects_topic(topic_prefix)):
            if isinstance(m, PodObserved) and m.namespace == namespace:
                last[m.uid] = m.phase
        return last == pods

    await eventually("every pod's final phase on the topic", converged, timeout=90)
    history = [
        m
        for m in await messages(stack.kafka_bootstrap, _objects_topic(topic_prefix))
        if isinstance(m, PodObserved) and m.namespace == namespace
    ]
    running = {m.uid for m in history if m.phase == "Running"}
    assert len(running) == 20, "the intermediate Running states made while Kafka was down are kept"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def replicas(stack: StackInfo, topic_prefix: str, namespace: str) -> Iterator[Any]:
    """``spawn(identity) -> (process, port)``: watcher replicas as real processes."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []
    lease = f"watcher-{uuid.uuid4().hex[:8]}"

    def spawn(identity: str) -> tuple[subprocess.Popen[bytes], int]:
        port = _free_port()
        env = {
            **os.environ,
            "JOBREAPER_KUBECONFIG": str(stack.kubeconfig),
            "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
            "JOBREAPER_KAFKA_JOB_PARTITIONS": "3",
            "JOBREAPER_HTTP_PORT": str(port),
            "JOBREAPER_WATCHER_NAMESPACES": namespace,
            "JOBREAPER_WATCHER_LEASE_NAMESPACE": namespace,
            "JOBREAPER_WATCHER_LEASE_NAME": lease,
            "JOBREAPER_WATCHER_IDENTITY": identity,
        }
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{lease}-{identity}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "watcher", "run"], env=env, stdout=log, stderr=log
        )
        procs.append(proc)
        logs.append(log)
        return proc, port

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
    for log in logs:
        log.close()


async def _readyz(port: int) -> str:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as r,
        ):
            return await r.text()
    except aiohttp.ClientError:
        return ""


async def test_two_replicas_one_publishes_and_the_other_takes_over(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str, topic_prefix: str, replicas: Any
) -> None:
    a, a_port = replicas("replica-a")
    await eventually("replica-a leads", lambda: _is(a_port, "leader"))
    _b, b_port = replicas("replica-b")
    await eventually("replica-b stands by", lambda: _is(b_port, "standby"))

    a.send_signal(signal.SIGKILL)  # dies without giving the Lease up
    killed = time.monotonic()
    await eventually("replica-b takes over", lambda: _is(b_port, "leader"), timeout=15)
    print(f"takeover after SIGKILL of the leader: {time.monotonic() - killed:.1f} s")

    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, job_manifest("after-failover", run="1s"))

    async def published() -> bool:
        return any(
            isinstance(m, JobObserved) and m.name == "after-failover"
            for m in await messages(stack.kafka_bootstrap, f"{topic_prefix}k8s.objects")
        )

    await eventually("the new leader publishes", published)


async def _is(port: int, state: str) -> bool:
    return (await _readyz(port)).startswith(state)


async def _metric(port: int, name: str) -> float:
    """The sum of a counter's samples on the replica's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


@pytest.mark.exclusive("restarts the API server and compacts etcd")
async def test_a_watch_resumed_after_compaction_gets_410_and_the_relist_converges(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str, topic_prefix: str, replicas: Any
) -> None:
    """Issue #4 on the real API server: the running watcher is frozen (SIGSTOP); the
    API server restarts (its watch cache starts at the current revision, and the
    watcher's connections are gone), then a Job and its pod are deleted and etcd is
    compacted to its current revision. Thawed, the watcher resumes its watches from
    the resourceVersion it holds: 410 Gone, re-list, and the pod deleted meanwhile
    becomes a synthetic deletion on the topic.

    The restart comes first on purpose: events of a deletion made while the old
    connection was open would sit in the frozen watcher's socket and arrive as
    real deletions."""
    if stack.stack_dir is None:
        pytest.skip("compacting etcd and restarting the API server need a stack of devtools.stack")
    batch = client.BatchV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    await batch.create_namespaced_job(namespace, job_manifest("doomed", run="never"))
    watcher, port = replicas("frozen")
    await eventually("the watcher leads", lambda: _is(port, "leader"))
    topic = _objects_topic(topic_prefix)

    async def running_pod() -> str | None:
        for m in await messages(stack.kafka_bootstrap, topic):
            if isinstance(m, PodObserved) and m.job_name == "doomed" and m.phase == "Running":
                return m.uid
        return None

    uid = await eventually("doomed's pod running on the topic", running_pod)
    expired = await _metric(port, "jobreaper_watcher_watch_expired_total")
    relists = await _metric(port, "jobreaper_watcher_relists_total")
    assert expired == 0

    watcher.send_signal(signal.SIGSTOP)
    try:
        # A write the watcher does not watch moves etcd's revision past every
        # resourceVersion it holds: the restarted API server's watch cache starts
        # there, so the held versions are too old for it even on an idle stack.
        await core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="revision-bump"))
        )
        await asyncio.to_thread(restart_component, stack, "kube-apiserver")
        await batch.delete_namespaced_job("doomed", namespace, propagation_policy="Foreground")

        async def doomed_gone() -> bool:
            pods = await core.list_namespaced_pod(namespace, label_selector="job-name=doomed")
            jobs = await batch.list_namespaced_job(namespace)
            return not pods.items and all(j.metadata.name != "doomed" for j in jobs.items)

        await eventually("doomed deleted", doomed_gone)
        revision = await asyncio.to_thread(compact_etcd, stack)
    finally:
        watcher.send_signal(signal.SIGCONT)
    print(f"API server restarted, etcd compacted at revision {revision}")

    async def converged() -> bool:
        return any(
            isinstance(m, PodObserved) and m.uid == uid and m.change == "synthetic-deleted"
            for m in await messages(stack.kafka_bootstrap, topic)
        )

    await eventually("the pod's synthetic deletion on the topic", converged, timeout=120)
    assert watcher.poll() is None, "the watcher survived the API server restart"
    assert await _metric(port, "jobreaper_watcher_watch_expired_total") > expired, (
        "the watches resumed from their old resourceVersion and got 410 Gone"
    )
    assert await _metric(port, "jobreaper_watcher_relists_total") > relists


# -- invalid annotations: one Warning Event per object and value -----------------------------


async def _watcher_events(kube_api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """The watcher's Events in ``namespace``, read back from the API server."""
    body = await request_json(
        kube_api, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )
    items: list[dict[str, Any]] = orjson.loads(body)["items"]
    return [e for e in items if e.get("reportingController") == "jobreaper.io/watcher"]


def _sample(watcher: Watcher, name: str, **labels: str) -> float:
    return watcher.registry.get_sample_value(name, labels) or 0.0


async def _settled(running: RunningWatcher) -> None:
    warner = running.watcher.warner
    assert warner is not None
    await eventually("the watcher's Events created", lambda: _true(warner.idle()), timeout=30)


async def _true(value: bool) -> bool:
    return value


async def test_invalid_annotations_get_one_warning_event_per_value(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    start_watcher: Any,
) -> None:
    first = await start_watcher("w1")
    batch = client.BatchV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    await batch.create_namespaced_job(
        namespace,
        job_manifest(
            "fine",
            run="never",
            annotations={KILL_TIMESTAMP: "2099-01-01T00:00:00Z", PENDING_TIMEOUT: "600"},
            pod_annotations={FORBID_FORCE_DELETION: "true"},
        ),
    )
    typo = await batch.create_namespaced_job(
        namespace,
        job_manifest(
            "typo", run="never", annotations={PENDING_TIMEOUT: "²", KILL_TIMESTAMP: "tomorrow"}
        ),
    )
    await batch.create_namespaced_job(
        namespace,
        job_manifest("careful", run="never", pod_annotations={FORBID_FORCE_DELETION: "yes"}),
    )
    topic = _objects_topic(topic_prefix)

    async def pods_running() -> dict[str, PodObserved] | None:
        running = {
            m.job_name: m
            for m in await messages(stack.kafka_bootstrap, topic)
            if isinstance(m, PodObserved) and m.phase == "Running"
        }
        return running if set(running) == {"fine", "typo", "careful"} else None

    # Every object was published, so checked; then nothing is left to create.
    pods = await eventually("the three Jobs' pods running on the topic", pods_running)
    await _settled(first)
    events = await _watcher_events(kube_api, namespace)
    by_object: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in events:
        regarding = event["regarding"]
        by_object.setdefault((regarding["kind"], regarding["name"]), []).append(event)
    careful_pod = pods["careful"]
    assert set(by_object) == {("Job", "typo"), ("Pod", careful_pod.name)}, (
        "one Job and one pod have invalid values; the valid ones and the careful Job "
        f"itself get nothing: {sorted(by_object)}"
    )
    notes = sorted(e["note"] for e in by_object[("Job", "typo")])
    assert len(notes) == 2
    assert notes[0].startswith(
        "jobreaper.io/kill-timestamp: 'tomorrow' is not valid; expected an RFC 3339 time"
    )
    assert "jobreaper ignores it: this annotation sets no kill time." in notes[0]
    assert notes[1].startswith(
        "jobreaper.io/pending-timeout-seconds: '²' is not valid; expected whole seconds"
    )
    assert "the configured pending timeout applies" in notes[1]
    (pod_event,) = by_object[("Pod", careful_pod.name)]
    assert pod_event["note"].startswith("jobreaper.io/forbid-force-deletion: 'yes' is not valid")
    assert 'reads it as "true": this pod will not be force-deleted' in pod_event["note"]
    assert pod_event["regarding"]["uid"] == careful_pod.uid
    assert pod_event["related"]["name"] == "careful"
    for event in events:
        assert event["type"] == "Warning"
        assert event["reason"] == "JobreaperInvalidAnnotation"
        assert event["reportingInstance"] == "w1"
        assert event["regarding"]["resourceVersion"]
        assert event["metadata"]["name"].startswith(f"{event['regarding']['name']}.jobreaper-")
        assert "series" not in event
    job_events = by_object[("Job", "typo")]
    assert {e["regarding"]["uid"] for e in job_events} == {typo.metadata.uid}
    assert {e["regarding"]["apiVersion"] for e in job_events} == {"batch/v1"}
    w1 = first.watcher
    assert _sample(w1, "jobreaper_watcher_k8s_events_total", result="created") == 3
    for annotation in (PENDING_TIMEOUT, KILL_TIMESTAMP, FORBID_FORCE_DELETION):
        assert (
            _sample(w1, "jobreaper_watcher_invalid_annotations_total", annotation=annotation) == 1
        )

    # Modified several times (each change published): no new Event, no Event updated,
    # not even an API call.
    before = {e["metadata"]["name"]: e["metadata"]["resourceVersion"] for e in events}
    for i in range(5):
        await batch.patch_namespaced_job(
            "typo", namespace, {"metadata": {"labels": {"round": str(i)}}}
        )
        await core.patch_namespaced_pod(
            careful_pod.name,
            namespace,
            {"metadata": {"annotations": {"jobreaper.io/round": str(i)}}},
        )

    async def last_round_published() -> bool:
        msgs = await messages(stack.kafka_bootstrap, topic)
        return any(
            isinstance(m, JobObserved) and m.name == "typo" and m.labels.get("round") == "4"
            for m in msgs
        ) and any(
            isinstance(m, PodObserved)
            and m.name == careful_pod.name
            and m.annotations.get("jobreaper.io/round") == "4"
            for m in msgs
        )

    await eventually("the last modifications on the topic", last_round_published)
    changes = [
        m
        for m in await messages(stack.kafka_bootstrap, topic)
        if getattr(m, "name", None) in ("typo", careful_pod.name) and m.change == "modified"
    ]
    assert len(changes) >= 10, "each modification was published, so checked"
    await _settled(first)
    after = await _watcher_events(kube_api, namespace)
    assert {e["metadata"]["name"]: e["metadata"]["resourceVersion"] for e in after} == before
    assert all("series" not in e for e in after)
    assert _sample(w1, "jobreaper_watcher_k8s_events_total", result="created") == 3
    for result in ("exists", "failed", "dropped"):
        assert _sample(w1, "jobreaper_watcher_k8s_events_total", result=result) == 0, result

    # Restarted (or the other replica): its list looks at every object again; the
    # Events exist, so it creates none (one 409 each) and counts none as new.
    await first.stop()
    second = await start_watcher("w2")
    w2 = second.watcher
    await eventually(
        "the restarted watcher finding the three Events",
        lambda: _true(_sample(w2, "jobreaper_watcher_k8s_events_total", result="exists") == 3),
        timeout=30,
    )
    await _settled(second)
    assert _sample(w2, "jobreaper_watcher_k8s_events_total", result="created") == 0
    assert (
        _sample(w2, "jobreaper_watcher_invalid_annotations_total", annotation=PENDING_TIMEOUT) == 0
    )
    final = await _watcher_events(kube_api, namespace)
    assert {e["metadata"]["name"]: e["metadata"]["resourceVersion"] for e in final} == before


async def test_a_watcher_refused_events_keeps_publishing(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    start_watcher: Any,
    tmp_path: Path,
) -> None:
    """Without create on events (the RBAC of an older release): the 403 is counted and
    logged, the watcher stays the leader and publishes."""
    account = "watcher-without-events"
    await client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    rbac = client.RbacAuthorizationV1Api(kube_api)
    name = f"{namespace}-watcher-without-events"  # cluster-scoped: named after the namespace
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=name),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""],
                    resources=["pods", "nodes", "persistentvolumeclaims"],
                    verbs=["list", "watch"],
                ),
                client.V1PolicyRule(
                    api_groups=["batch"], resources=["jobs"], verbs=["list", "watch"]
                ),
                client.V1PolicyRule(
                    api_groups=["coordination.k8s.io"],
                    resources=["leases"],
                    verbs=["get", "create", "update"],
                ),
            ],
        )
    )
    try:
        await rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=name),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=namespace)
                ],
            )
        )
        kubeconfig = await service_account_kubeconfig(
            kube_api, stack, namespace, account, tmp_path / "kubeconfig"
        )
        running = await start_watcher("w1", kubeconfig)
        batch = client.BatchV1Api(kube_api)
        await batch.create_namespaced_job(
            namespace, job_manifest("typo", run="never", annotations={PENDING_TIMEOUT: "²"})
        )
        watcher = running.watcher
        await eventually(
            "the refused Event counted",
            lambda: _true(
                _sample(watcher, "jobreaper_watcher_k8s_events_total", result="failed") >= 1
            ),
            timeout=30,
        )
        await batch.create_namespaced_job(namespace, job_manifest("after", run="1s"))

        async def published() -> bool:
            return any(
                isinstance(m, JobObserved) and m.name == "after"
                for m in await messages(stack.kafka_bootstrap, _objects_topic(topic_prefix))
            )

        await eventually("a later Job published", published)
        assert not running.task.done(), "a refused Event does not stop the watcher"
        assert watcher.readiness()[1].startswith("leader")
        assert _sample(watcher, "jobreaper_watcher_k8s_events_total", result="created") == 0
        assert await _watcher_events(kube_api, namespace) == []
    finally:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            with contextlib.suppress(client.ApiException):
                await delete(name)
