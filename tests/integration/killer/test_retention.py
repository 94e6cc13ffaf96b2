"""The killer's state does not depend on the topics' retention.

Kafka deletes records older than ``retention.ms``. A Job that does not change for
longer than that used to vanish from the log while it still ran: a killer rebuilt
after its records expired did not know it, and its kill timestamp or running
timeout was silently dropped. The watcher now publishes every live object again
(``refreshed``) before its newest record gets that old.

The proof needs records really deleted, which the stack's broker does only every
``log.retention.check.interval.ms`` (5 minutes by default, and read-only while it
runs: Kafka 3.9 refuses to alter it dynamically). So this module runs its own
broker (``lone_kafka``: the stack's Kafka build and config, a one-second check)
beside the stack, whose Kubernetes it uses. Topics get a 20 s retention and 5 s
segments.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import TopicPartition
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.commands import CommandIssued
from schemas.observations import JobObserved, NodeObserved, PodObserved
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.kafka import (
    describe_retention,
    ensure_topics,
    make_consumer,
    topic_partitions,
)
from services.runtime.kube import load_api_client
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS
from services.watcher.refresh import RefreshSettingError
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings
from tests.integration.helpers import eventually, job_manifest, read_topic
from tests.stack_fixtures import lone_kafka

pytestmark = pytest.mark.stack

RETENTION_MS = 20_000
SEGMENT_MS = 5_000
KILL_AHEAD_S = 50
"""Two and a half retentions (the issue: "killed 2x the retention after its last
change"): the Jobs' records expire (about 24 s measured) and the killer is rebuilt
well before."""
RUNNING_TIMEOUT_S = KILL_AHEAD_S + 7


@pytest.fixture(scope="module")
def retention_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("kafka")
    with lone_kafka(root, {"log.retention.check.interval.ms": "1000"}) as bootstrap:
        yield bootstrap


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Running:
    """In-process services; stopped at the end."""

    def __init__(self) -> None:
        self.services: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(self, service: Any, what: str) -> Any:
        task = asyncio.create_task(service.run())
        self.services.append((service, task))

        async def ready() -> bool:
            if task.done():
                task.result()
                raise AssertionError(f"{what} stopped by itself")
            ready, detail = service.readiness()
            return bool(ready) and not detail.startswith("standby")

        await eventually(f"{what} ready", ready, timeout=90)
        return service

    async def stop(self, service: Any) -> None:
        for s, task in self.services:
            if s is service and not task.done():
                s.stop()
                await asyncio.wait_for(task, 30)

    async def close(self) -> None:
        for service, _ in self.services:
            await self.stop(service)


@pytest_asyncio.fixture(loop_scope="session")
async def running() -> AsyncIterator[Running]:
    r = Running()
    try:
        yield r
    finally:
        await r.close()


async def _originals(bootstrap: str, topic: str, namespace: str | None) -> dict[int, int]:
    """Per partition, the highest offset of an observation (of our namespace) that is
    not a refresh: what must be deleted before the proof means anything."""
    highest: dict[int, int] = {}
    for record, message in await read_topic(bootstrap, topic):
        if not isinstance(message, PodObserved | JobObserved | NodeObserved):
            continue
        if namespace is not None and getattr(message, "namespace", None) != namespace:
            continue
        if message.change != "refreshed":
            highest[record.partition] = max(highest.get(record.partition, -1), record.offset)
    return highest


async def _log_start(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    partitions = await topic_partitions(kafka, [topic])
    consumer = make_consumer(kafka, client_id="test-log-start", group_id=None)
    await consumer.start()
    try:
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in starts.items()}


@pytest.mark.exclusive("bounds how late a step is (2 s)")
async def test_a_killer_rebuilt_after_the_jobs_records_expired_still_kills_on_time(
    retention_kafka: str,
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    running: Running,
) -> None:
    kafka = KafkaSettings(bootstrap=retention_kafka, topic_prefix=topic_prefix, job_partitions=3)
    short = [
        s
        if s.compacted
        else replace(s, retention_ms=RETENTION_MS, extra={**s.extra, "segment.ms": str(SEGMENT_MS)})
        for s in TOPIC_SPECS
    ]
    await ensure_topics(kafka, job_partitions=3, specs=short)
    objects, nodes = f"{topic_prefix}k8s.objects", f"{topic_prefix}k8s.nodes"
    described = await describe_retention(kafka, [objects, nodes])
    assert {r.retention_ms for r in described.values()} == {RETENTION_MS}

    api = await load_api_client(str(stack.kubeconfig))
    watcher = Watcher(
        api,
        kafka,
        WatcherSettings(
            namespaces=[namespace],
            lease_namespace=namespace,
            lease_name=f"watcher-{uuid.uuid4().hex[:8]}",
            identity="w1",
        ),
    )
    try:
        await running.start(watcher, "watcher")
        group = f"killer-{uuid.uuid4().hex[:8]}"
        first = await running.start(
            Killer(kafka, KillerServiceSettings(group_id=group, identity="first")), "killer"
        )

        # Two Jobs whose pods run until killed (deadline ignored), unchanged from then on:
        # one with a kill timestamp, one with a running timeout, 80 and 87 s ahead.
        # On the first node: other tests on a shared stack lose the last one.
        node = stack.nodes[0] if stack.nodes else None
        batch = client.BatchV1Api(kube_api)
        core = client.CoreV1Api(kube_api)
        kill_at = (datetime.now(UTC) + timedelta(seconds=KILL_AHEAD_S)).replace(microsecond=0)
        await batch.create_namespaced_job(
            namespace,
            job_manifest(
                "timed",
                run="never",
                annotations={"jobreaper.io/kill-timestamp": _rfc3339(kill_at)},
                pod_labels={"jobreaper.test/ignore-deadline": "true"},
                node=node,
            ),
        )
        await batch.create_namespaced_job(
            namespace,
            job_manifest(
                "slow",
                run="never",
                annotations={"jobreaper.io/running-timeout-seconds": str(RUNNING_TIMEOUT_S)},
                pod_labels={"jobreaper.test/ignore-deadline": "true"},
                node=node,
            ),
        )

        async def started() -> dict[str, datetime] | None:
            pods = (await core.list_namespaced_pod(namespace)).items
            starts = {
                p.metadata.labels["job-name"]: p.status.container_statuses[
                    0
                ].state.running.started_at
                for p in pods
                if p.status.phase == "Running"
                and p.status.container_statuses
                and p.status.container_statuses[0].state.running is not None
            }
            return starts if len(starts) == 2 else None

        starts = await eventually("both pods running", started)
        due = {"timed": kill_at, "slow": starts["slow"] + timedelta(seconds=RUNNING_TIMEOUT_S)}
        print(f"kill timestamp {kill_at:%H:%M:%S}, running timeout due {due['slow']:%H:%M:%S}")

        # Every record the watcher wrote so far about our objects and the nodes (none
        # is a refresh yet, or only a few) must be deleted by retention.
        await asyncio.sleep(2)  # the pods' last status changes reach the topic
        originals = {
            objects: await _originals(retention_kafka, objects, namespace),
            nodes: await _originals(retention_kafka, nodes, None),
        }
        assert originals[objects] and originals[nodes], originals
        t0 = time.monotonic()

        async def expired() -> bool:
            for topic, highest in originals.items():
                start = await _log_start(kafka, topic)
                if any(start[p] <= offset for p, offset in highest.items()):
                    return False
            return True

        await eventually("the original records deleted by retention", expired, timeout=120)
        print(
            f"original records deleted {time.monotonic() - t0:.1f} s after they were read; "
            f"log start now {await _log_start(kafka, objects)} (objects), "
            f"{await _log_start(kafka, nodes)} (nodes); highest originals {originals}"
        )
        assert await _commands(retention_kafka, topic_prefix) == [], "nothing due yet"

        # Restart the killer: the new one rebuilds its state from what the log holds now.
        await running.stop(first)
        second = await running.start(
            Killer(kafka, KillerServiceSettings(group_id=group, identity="second")), "killer"
        )
        rebuilt_at = datetime.now(UTC)
        assert rebuilt_at < min(due.values()) - timedelta(seconds=5), (
            f"the rebuilt killer was ready at {rebuilt_at}, too late to show it kills on time"
        )

        async def first_steps() -> list[CommandIssued] | None:
            found = await _commands(retention_kafka, topic_prefix)
            return found if {c.job_name for c in found} >= {"timed", "slow"} else None

        wait = (max(due.values()) - datetime.now(UTC)).total_seconds() + 20
        commands = await eventually("the rebuilt killer's first steps", first_steps, timeout=wait)
        for name in ("timed", "slow"):
            (command,) = [c for c in commands if c.job_name == name and c.step != "fail-job"]
            lateness = (command.decided_at - command.due_at).total_seconds()
            print(
                f"{name}: {command.step} ({command.rule}) due {command.due_at}, "
                f"decided {lateness:+.3f} s"
            )
            # The first rung; a delete at once if the pod's node was lost meanwhile.
            assert (command.step, command.rule) in (
                ("set-active-deadline", "ladder.active-deadline"),
                ("delete", "ladder.node-lost-delete"),
            ), command
            assert command.trigger == ("Killed" if name == "timed" else "RunningTimeout")
            assert abs((command.due_at - due[name]).total_seconds()) < 1, (command, due[name])
            assert 0 <= lateness < 2, "on time: not before it is due, nor long after"
        # The nodes too: their original records were gone when it rebuilt.
        assert set(second.globals.nodes) >= set(stack.nodes), second.globals.nodes
        changes: dict[tuple[str, str], int] = {}
        for _, m in await read_topic(retention_kafka, objects):
            if isinstance(m, PodObserved | JobObserved):
                key = (type(m).__name__, m.change)
                changes[key] = changes.get(key, 0) + 1
        print(f"k8s.objects now holds {changes}")
        assert changes.get(("JobObserved", "refreshed")) and changes.get(
            ("PodObserved", "refreshed")
        ), changes
    finally:
        await running.close()
        await api.close()


async def _commands(bootstrap: str, prefix: str) -> list[CommandIssued]:
    return [
        m
        for _, m in await read_topic(bootstrap, f"{prefix}kill.commands")
        if isinstance(m, CommandIssued)
    ]


async def test_a_watcher_told_to_refresh_after_the_retention_refuses_to_start(
    stack: StackInfo, namespace: str, topic_prefix: str
) -> None:
    """JOBREAPER_WATCHER_REFRESH_AFTER_S not below the topics' retention (read from
    Kafka): the watcher stops with the reason (the CLI exits 2) instead of letting
    objects expire."""
    kafka = KafkaSettings(
        bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix, job_partitions=3
    )
    short = [s if s.compacted else replace(s, retention_ms=RETENTION_MS) for s in TOPIC_SPECS]
    await ensure_topics(kafka, job_partitions=3, specs=short)
    api = await load_api_client(str(stack.kubeconfig))
    try:
        watcher = Watcher(
            api,
            kafka,
            WatcherSettings(
                namespaces=[namespace],
                lease_namespace=namespace,
                lease_name=f"watcher-{uuid.uuid4().hex[:8]}",
                refresh_after_s=RETENTION_MS / 1000,
            ),
        )
        with pytest.raises(RefreshSettingError) as refused:
            await asyncio.wait_for(watcher.run(), 60)
    finally:
        await api.close()
    assert (
        f"JOBREAPER_WATCHER_REFRESH_AFTER_S=20 is not below the retention of topic "
        f"{topic_prefix}k8s.objects (20 s, retention.ms=20000)" in str(refused.value)
    )
    assert await read_topic(stack.kafka_bootstrap, f"{topic_prefix}k8s.objects") == []
