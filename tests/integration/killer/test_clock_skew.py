"""A killer whose clock is 30 s ahead or behind still acts on time by the clocks
the rules are about (real Kafka, real API server, kwok's kubelets, the real watcher).

The killer's local clock is shifted in process; it measures the API server's
clock (services/runtime/clock.py) and decides on it. Each command is checked
against this host's true clock (the one the API server and kwok run on) through
the Kafka record's CreateTime, which aiokafka stamps from ``time.time()``, not
from the killer's shifted clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from schemas.annotations import RUNNING_TIMEOUT
from schemas.commands import CommandIssued
from schemas.config import ConfigSnapshot, KillerConfig
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.clock import ApiClock, version_probe
from tests.integration.helpers import eventually, job_manifest, publish, read_topic
from tests.integration.killer.test_killer import Services, services
from tests.integration.lossy_nodes import ReservedNodeLoss

__all__ = ["services"]

pytestmark = [
    pytest.mark.stack,
    pytest.mark.exclusive("bounds how late a step is (3 s); one test loses a node"),
]

SKEWS = [pytest.param(30, id="killer-30s-ahead"), pytest.param(-30, id="killer-30s-behind")]


async def _skewed_killer(services: Services, kube_api: client.ApiClient, skew_s: int) -> Killer:
    clock = ApiClock(local=lambda: datetime.now(UTC) + timedelta(seconds=skew_s))
    killer = Killer(
        services.kafka,
        KillerServiceSettings(group_id=services.group, identity=f"skewed{skew_s}"),
        clock=clock,
        clock_probe=version_probe(kube_api),
    )
    task = asyncio.create_task(killer.run())
    services.tasks.append((killer, task))
    await eventually("killer ready", lambda: services._ready(killer, task))
    measured = clock.offset.total_seconds()
    assert abs(measured + skew_s) < 1.0, f"measured offset {measured} s for a {skew_s} s skew"
    return killer


async def _first(services: Services, step: str) -> tuple[CommandIssued, datetime] | None:
    """The first ``step`` command and when it was really written (CreateTime)."""
    for record, message in await read_topic(
        services.stack.kafka_bootstrap, f"{services.prefix}kill.commands"
    ):
        if isinstance(message, CommandIssued) and message.step == step:
            return message, datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return None


@pytest.mark.parametrize("skew_s", SKEWS)
async def test_no_pod_is_killed_before_its_running_timeout_by_the_kubelets_clock(
    services: Services, kube_api: client.ApiClient, namespace: str, skew_s: int
) -> None:
    await services.watcher()
    await _skewed_killer(services, kube_api, skew_s)
    timeout = 8
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace,
        job_manifest(
            "timed",
            run="never",
            annotations={RUNNING_TIMEOUT: str(timeout)},
            pod_labels={"jobreaper.test/ignore-deadline": "true"},
        ),
    )

    async def found() -> tuple[CommandIssued, datetime] | None:
        return await _first(services, "set-active-deadline")

    command, written = await eventually("the running timeout's step", found, timeout=60)
    pod = (await client.CoreV1Api(kube_api).list_namespaced_pod(namespace)).items[0]
    started = pod.status.container_statuses[0].state.running.started_at
    due = started + timedelta(seconds=timeout)
    assert command.trigger == "RunningTimeout"
    # RFC 3339 in the API has whole seconds: the kubelet's start was in [started, +1 s).
    assert written >= due, f"written {(due - written).total_seconds():.3f} s before it was due"
    assert written - due < timedelta(seconds=3), f"{written - due} late"


# Ahead only: the direction that would force-delete early (behind is shown by the
# running timeout's test: the same measured offset; 30 s late without it).
@pytest.mark.parametrize("skew_s", [pytest.param(30, id="killer-30s-ahead")])
async def test_no_pod_is_force_deleted_before_its_grace_period_and_timeout_by_the_api_servers_clock(
    services: Services,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    skew_s: int,
) -> None:
    force_timeout = 5
    await publish(
        services.kafka,
        ConfigSnapshot(
            version=1,
            config=KillerConfig.model_validate({"forceDeleteTaskTimeoutSeconds": force_timeout}),
            author="test",
            changed_at=datetime.now(UTC),
        ),
    )
    await services.watcher()
    await _skewed_killer(services, kube_api, skew_s)
    node = node_loss.reserved
    core = client.CoreV1Api(kube_api)
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest("stuck", run="never", node=node)
    )

    async def running() -> Any:
        pods = (await core.list_namespaced_pod(namespace)).items
        return pods if pods and pods[0].status.phase == "Running" else None

    (pod,) = await eventually("the pod running", running)
    await asyncio.to_thread(node_loss.lose, node)
    await core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=2)
    deleting = await core.read_namespaced_pod(pod.metadata.name, namespace)
    due = deleting.metadata.deletion_timestamp + timedelta(seconds=force_timeout)

    async def found() -> tuple[CommandIssued, datetime] | None:
        return await _first(services, "force-delete")

    command, written = await eventually("the force deletion", found, timeout=60)
    # StuckTerminating, or JobFinished when the Job controller fails the Job first
    # (its pod is gone from its count): the force deletion's due time is the same.
    assert command.rule == "ladder.force-delete"
    assert written >= due, f"written {(due - written).total_seconds():.3f} s before it was due"
    assert written - due < timedelta(seconds=3), f"{written - due} late"
