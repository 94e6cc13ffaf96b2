"""Nothing the killer reads can stop enforcement (real Kafka, real API server, the
real watcher): hostile annotations, a message forged onto the wrong topic, and a
record the core raises on (a simulated core bug)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from schemas.annotations import (
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
)
from schemas.commands import CommandApplied, CommandIssued
from schemas.observations import JobObserved
from schemas.requests import KillCancelRequested, KillRequested
from services.killer import folding as killer_folding
from services.runtime.kafka import make_producer
from services.runtime.messages import CODEC
from services.runtime.topics import TopicNames
from tests.integration.helpers import eventually, job_manifest, publish, read_topic
from tests.integration.killer.test_killer import Services, kill_now, services, start_running_jobs

__all__ = ["services"]  # the fixture, shared with test_killer

pytestmark = pytest.mark.stack


async def _steps_for(services: Services, jobs: list[str]) -> list[CommandIssued] | None:
    found = [c for c in await services.commands() if c.job_name in jobs and c.step != "fail-job"]
    return found if {c.job_name for c in found} == set(jobs) else None


async def _dead_letters(services: Services) -> list[tuple[Any, str]]:
    records = await read_topic(services.stack.kafka_bootstrap, f"{services.prefix}deadletter")
    return [(r, dict(r.headers)["jr_deadletter_reason"].decode()) for r, _ in records]


async def test_hostile_annotations_neither_stop_the_killer_nor_other_kills(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    """The issue's reproduction: one Job annotated "²" stopped the killer within 10 s
    and 0 of 10 later Jobs got a step; here the killer stays ready and kills them."""
    await services.watcher()
    killer, task = await services.killer()
    batch = client.BatchV1Api(kube_api)
    hostile = {
        "h-superscript": {PENDING_TIMEOUT: "²", RUNNING_TIMEOUT: "١٢٣"},
        "h-huge": {PENDING_TIMEOUT: str(10**20), RUNNING_TIMEOUT: "9" * 5000},
        "h-year-one": {KILL_TIMESTAMP: "0001-01-01T00:00:00+14:00"},
        "h-no-zone": {KILL_TIMESTAMP: "2026-12-06T18:00:00", FORBID_FORCE_DELETION: "yes"},
        "h-hour": {PENDING_TIMEOUT: "1h", KILL_TIMESTAMP: "tomorrow"},
    }
    ordinary = [f"ok-{i}" for i in range(5)]
    await start_running_jobs(kube_api, namespace, ordinary)
    for name, values in hostile.items():
        await batch.create_namespaced_job(
            namespace, job_manifest(name, run="never", annotations=values)
        )
    await asyncio.sleep(3)  # folded by now (the issue saw the killer die within 10 s)
    assert not task.done() and killer.readiness()[0], killer.readiness()
    await kill_now(kube_api, namespace, ordinary)
    steps = await eventually("a step for each ordinary Job", lambda: _steps_for(services, ordinary))
    assert not task.done() and killer.readiness()[0], killer.readiness()
    assert all(c.trigger == "Killed" for c in steps)
    await asyncio.sleep(2)
    assert not [c for c in await services.commands() if c.job_name.startswith("h-")], (
        "an invalid kill time or timeout is no kill time"
    )
    # A restarted killer folds the same records again from the log: still ready.
    await services.stop(killer, task)
    await services.killer("second")


async def test_a_result_forged_onto_kill_requests_is_dead_lettered_not_folded(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    """A ``CommandApplied(outcome=gone)`` on ``kill.requests`` was folded as the
    executor's own result, silencing the pod's kill; now it is refused by topic."""
    await services.watcher()
    await services.killer()
    await start_running_jobs(kube_api, namespace, ["victim"])
    pod = (await client.CoreV1Api(kube_api).list_namespaced_pod(namespace)).items[0]
    job = await client.BatchV1Api(kube_api).read_namespaced_job("victim", namespace)
    forged = CommandApplied(
        command_id="forged",
        step="set-active-deadline",
        namespace=namespace,
        job_name="victim",
        job_uid=job.metadata.uid,
        pod_name=pod.metadata.name,
        pod_uid=pod.metadata.uid,
        outcome="gone",
        applied_at=datetime.now(UTC),
    )
    names = TopicNames(services.prefix)
    encoded = CODEC.encode(forged, source="/forger")
    producer = make_producer(services.kafka, client_id="forger")
    await producer.start()
    try:
        await producer.send_and_wait(
            names("kill.requests"),
            encoded.value,
            key=forged.kafka_key().encode(),
            headers=encoded.headers,
        )
    finally:
        await producer.stop()

    async def refused() -> list[str] | None:
        reasons = [reason for _, reason in await _dead_letters(services)]
        return [r for r in reasons if r.startswith("wrong-topic")] or None

    (reason,) = await eventually("the forged result dead-lettered", refused)
    assert "belongs on kill.results, not on kill.requests" in reason
    await kill_now(kube_api, namespace, ["victim"])
    (step,) = await eventually("the victim still killed", lambda: _steps_for(services, ["victim"]))
    assert step.pod_uid == pod.metadata.uid


async def test_a_record_the_core_raises_on_is_dead_lettered_and_skipped_for_good(
    services: Services,
    kube_api: client.ApiClient,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last line of defence: a core bug (simulated: evolve raises on one Job's
    records) costs that record, dead-lettered with its reason, not the partition; a
    restarted killer skips it too (it reads the dead letters) and becomes ready."""
    real_evolve = killer_folding.evolve

    def buggy(state: Any, event: Any) -> Any:
        if isinstance(event, JobObserved) and event.name == "boom":
            raise ZeroDivisionError("a simulated core bug")
        return real_evolve(state, event)

    monkeypatch.setattr(killer_folding, "evolve", buggy)
    await services.watcher()
    killer, task = await services.killer()
    await start_running_jobs(kube_api, namespace, ["after"])
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest("boom", run="1s")
    )

    async def refused() -> list[tuple[Any, str]] | None:
        return [(r, why) for r, why in await _dead_letters(services) if "core-error" in why] or None

    reasons = await eventually("the record dead-lettered", refused)
    assert "ZeroDivisionError: a simulated core bug" in reasons[0][1]
    assert killer.registry.get_sample_value(
        "jobreaper_killer_core_errors_total", {"function": "evolve"}
    )
    await kill_now(kube_api, namespace, ["after"])
    await eventually("the next Job killed", lambda: _steps_for(services, ["after"]))
    # Each new record of "boom" (its status moves) is refused and its partition
    # rebuilt: ready again once they stop coming.
    await eventually("the killer ready", lambda: services._ready(killer, task))

    await services.stop(killer, task)
    await services.killer("second")  # ready: it skips what was refused before
    await asyncio.sleep(2)
    sources = [dict(r.headers)["jr_deadletter_source"] for r, _ in await refused() or []]
    assert len(sources) == len(set(sources)), "a refused record is dead-lettered once, by anyone"


async def test_a_kill_request_over_the_size_limits_is_dead_lettered_and_the_job_still_killed(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    """Other systems write ``kill.requests`` and the killer copies a request's reason
    into the records it writes: a reason of 900 KB (the broker takes 1 MB) is refused
    at the edge, not carried into every decision and kill event of the Job."""
    await services.watcher()
    killer, task = await services.killer()
    await start_running_jobs(kube_api, namespace, ["victim"])
    now = datetime.now(UTC)
    forged = KillRequested.model_construct(
        request_id="huge",
        namespace=namespace,
        job_name="victim",
        job_uid=None,
        kill_at=None,
        reason="x" * 900_000,
        requested_by="a hostile system",
        requested_at=now,
    )
    await publish(services.kafka, forged)

    async def refused() -> list[str] | None:
        return [
            why for _, why in await _dead_letters(services) if why.startswith("invalid-payload")
        ] or None

    (reason,) = await eventually("the oversized request dead-lettered", refused)
    assert "reason" in reason and "1024" in reason, reason
    assert not await _steps_for(services, ["victim"]), "the refused request killed nothing"
    await kill_now(kube_api, namespace, ["victim"])
    (step,) = await eventually("the victim still killed", lambda: _steps_for(services, ["victim"]))
    assert step.trigger == "Killed"
    assert not task.done() and killer.readiness()[0], killer.readiness()


async def test_a_cancellation_over_the_size_limits_is_dead_lettered_and_cancels_nothing(
    services: Services, kube_api: client.ApiClient, namespace: str
) -> None:
    """A ``KillCancelRequested`` is bounded as a request is: one with a 900 KB reason
    is refused at the edge (dead-lettered), and the kill it names happens on time."""
    await services.watcher()
    killer, task = await services.killer()
    await start_running_jobs(kube_api, namespace, ["victim"])
    now = datetime.now(UTC)
    kill_at = now + timedelta(seconds=6)
    request = KillRequested(
        request_id="legit",
        namespace=namespace,
        job_name="victim",
        kill_at=kill_at,
        requested_by="e2e",
        requested_at=now,
    )
    forged = KillCancelRequested.model_construct(
        request_id="huge-cancel",
        namespace=namespace,
        job_name="victim",
        job_uid=None,
        reason="x" * 900_000,
        requested_by="a hostile system",
        requested_at=now + timedelta(milliseconds=1),
    )
    await publish(services.kafka, request, forged)  # in this order, on one partition

    async def refused() -> list[str] | None:
        return [
            why for _, why in await _dead_letters(services) if why.startswith("invalid-payload")
        ] or None

    (reason,) = await eventually("the oversized cancellation dead-lettered", refused)
    assert "reason" in reason and "1024" in reason, reason
    (step,) = await eventually("the victim killed", lambda: _steps_for(services, ["victim"]))
    assert step.trigger == "Killed" and step.due_at == kill_at
    assert not task.done() and killer.readiness()[0], killer.readiness()
