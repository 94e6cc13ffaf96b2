"""The killer over real Kafka, fed by the real watcher: on time, once, across restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.annotations import ENFORCE
from schemas.commands import CommandIssued
from schemas.events import KillStarted
from schemas.observations import JobObserved
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.kube import load_api_client
from services.runtime.settings import KafkaSettings
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings
from tests.integration.helpers import (
    eventually,
    issued,
    job_manifest,
    messages,
    publish,
    read_topic,
)

pytestmark = pytest.mark.stack


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def start_running_jobs(kube_api: client.ApiClient, namespace: str, names: list[str]) -> None:
    """Create Jobs whose pods run until killed (deadline ignored), and wait until all run."""
    batch = client.BatchV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    for name in names:
        await batch.create_namespaced_job(
            namespace,
            job_manifest(name, run="never", pod_labels={"jobreaper.test/ignore-deadline": "true"}),
        )

    async def all_running() -> bool:
        pods = (await core.list_namespaced_pod(namespace)).items
        return len(pods) == len(names) and all(p.status.phase == "Running" for p in pods)

    await eventually("every pod running", all_running)


async def kill_now(kube_api: client.ApiClient, namespace: str, names: list[str]) -> None:
    """Set each Job's kill timestamp to now, as a person would with kubectl annotate."""
    batch = client.BatchV1Api(kube_api)
    now = _rfc3339(datetime.now(UTC))
    for name in names:
        await batch.patch_namespaced_job(
            name, namespace, {"metadata": {"annotations": {"jobreaper.io/kill-timestamp": now}}}
        )


class Services:
    """In-process watcher and killers on the test's namespace and topics."""

    def __init__(self, stack: StackInfo, namespace: str, prefix: str) -> None:
        self.stack = stack
        self.namespace = namespace
        self.prefix = prefix
        self.kafka = KafkaSettings(
            bootstrap=stack.kafka_bootstrap, topic_prefix=prefix, job_partitions=3
        )
        self.group = f"killer-{uuid.uuid4().hex[:8]}"
        self.tasks: list[tuple[Any, asyncio.Task[None]]] = []

    async def watcher(self) -> None:
        api = await load_api_client(str(self.stack.kubeconfig))
        watcher = Watcher(
            api,
            self.kafka,
            WatcherSettings(namespaces=[self.namespace], lease_namespace=self.namespace),
        )
        task = asyncio.create_task(watcher.run())
        task.add_done_callback(lambda _: asyncio.ensure_future(api.close()))
        self.tasks.append((watcher, task))
        await eventually("watcher ready", lambda: self._ready(watcher, task))

    async def killer(self, identity: str = "k1") -> tuple[Killer, asyncio.Task[None]]:
        killer = Killer(self.kafka, KillerServiceSettings(group_id=self.group, identity=identity))
        task = asyncio.create_task(killer.run())
        self.tasks.append((killer, task))
        await eventually("killer ready", lambda: self._ready(killer, task))
        return killer, task

    async def _ready(self, service: Any, task: asyncio.Task[None]) -> bool:
        if task.done():
            task.result()
            raise AssertionError(f"{service} stopped by itself")
        ready, _ = service.readiness()
        return bool(ready)

    async def stop(self, service: Any, task: asyncio.Task[None]) -> None:
        service.stop()
        await asyncio.wait_for(task, 30)

    async def commands(self) -> list[CommandIssued]:
        return issued(await messages(self.stack.kafka_bootstrap, f"{self.prefix}kill.commands"))

    async def close(self) -> None:
        for service, task in self.tasks:
            if not task.done():
                await self.stop(service, task)


@pytest_asyncio.fixture(loop_scope="session")
async def services(stack: StackInfo, namespace: str, topic_prefix: str) -> AsyncIterator[Services]:
    running = Services(stack, namespace, topic_prefix)
    try:
        yield running
    finally:
        await running.close()


async def test_a_restarted_killer_rebuilds_and_issues_nothing_twice(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    await services.watcher()
    killer, task = await services.killer("first")
    await start_running_jobs(kube_api, namespace, ["a", "b", "c"])
    await kill_now(kube_api, namespace, ["a", "b", "c"])

    async def three() -> list[CommandIssued] | None:
        found = await services.commands()
        return found if len(found) >= 6 else None  # fail-job and a pod step each

    await eventually("a first step for each Job", three)
    await asyncio.sleep(2)
    first = await services.commands()
    await services.stop(killer, task)

    await services.killer("second")  # rebuilds from the log
    await asyncio.sleep(3)
    again = await services.commands()
    assert sorted(c.command_id for c in again) == sorted(c.command_id for c in first), [
        (c.job_name, c.pod_name, c.step, c.rule, str(c.due_at), str(c.decided_at)) for c in again
    ]
    ids = [c.command_id for c in again]
    assert len(ids) == len(set(ids)), "no command id twice"
    started = [
        m
        for m in await messages(services.stack.kafka_bootstrap, f"{services.prefix}kill.events")
        if isinstance(m, KillStarted)
    ]
    assert sorted(m.job_name for m in started) == ["a", "b", "c"]


async def test_two_killers_split_the_partitions_and_issue_what_one_would(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    await services.watcher()
    one, _ = await services.killer("one")
    two, _ = await services.killer("two")

    async def split() -> bool:
        return (
            bool(one.partitions)
            and bool(two.partitions)
            and (len(one.partitions) + len(two.partitions) == 3)
        )

    await eventually("the partitions split between two killers", split)
    assert not set(one.partitions) & set(two.partitions)
    names = [f"job-{i}" for i in range(8)]
    await start_running_jobs(kube_api, namespace, names)
    await kill_now(kube_api, namespace, names)

    async def all_jobs() -> list[CommandIssued] | None:
        found = await services.commands()
        return found if {c.job_name for c in found} == set(names) else None

    found = await eventually("a first step for every Job", all_jobs)
    await asyncio.sleep(2)
    found = await services.commands()
    assert len(found) == 2 * len(names), [
        (c.job_name, c.pod_name, c.step, c.rule, c.attempt, c.command_id[:6], str(c.decided_at))
        for c in found
    ]
    assert sorted((c.job_name, c.step) for c in found) == sorted(
        (name, step) for name in names for step in ("fail-job", "set-active-deadline")
    )


async def test_a_poison_record_is_dead_lettered_and_deciding_goes_on(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    await services.watcher()
    await services.killer()
    producer = make_producer(services.kafka, client_id="poison")
    await producer.start()
    try:
        topic = f"{services.prefix}k8s.objects"
        await producer.send_and_wait(
            topic, b"{not json", key=f"{namespace}/x".encode(), headers=[("ce_type", b"??")]
        )
    finally:
        await producer.stop()

    async def dead_lettered() -> list[Any] | None:
        found = await read_topic(services.stack.kafka_bootstrap, f"{services.prefix}deadletter")
        return found or None

    ((record, _),) = await eventually("the poison record dead-lettered", dead_lettered)
    headers = dict(record.headers)
    assert headers["jr_deadletter_reason"].startswith(b"missing-header")
    assert record.value == b"{not json", "the original bytes are kept"
    await start_running_jobs(kube_api, namespace, ["after"])
    await kill_now(kube_api, namespace, ["after"])
    await eventually("a step for the next Job", services.commands)


async def test_a_killer_says_ready_only_once_it_has_folded_the_backlog(
    services: Services, topic_prefix: str
) -> None:
    """Readiness is what a rollout and the e2e harness wait for: it must not say
    "deciding" while the partitions' producers are still starting (found by
    bench_killer: ready after 1 s with nothing folded)."""
    await ensure_topics(services.kafka, job_partitions=3)
    backlog = 600
    jobs = [
        JobObserved(
            change="added",
            observed_at=datetime.now(UTC),
            resource_version=str(i + 1),
            uid=f"j-{i}",
            namespace="team",
            name=f"job-{i}",
            labels={ENFORCE: "on"},
        )
        for i in range(backlog)
    ]
    await publish(services.kafka, *jobs)

    killer = Killer(services.kafka, KillerServiceSettings(group_id=services.group))
    task = asyncio.create_task(killer.run())
    services.tasks.append((killer, task))
    deadline = asyncio.get_running_loop().time() + 60
    while not killer.readiness()[0]:  # polled tightly, to catch a premature "ready"
        assert not task.done(), "the killer stopped by itself"
        assert asyncio.get_running_loop().time() < deadline, killer.readiness()
        await asyncio.sleep(0.001)
    folded = killer.registry.get_sample_value(
        "jobreaper_killer_events_folded_total", {"topic": "k8s.objects"}
    )
    assert sorted(killer.partitions) == [0, 1, 2], killer.readiness()
    assert folded == backlog, killer.readiness()
