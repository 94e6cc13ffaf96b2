"""End to end on the real stack (real Job controller, scheduler, kwok): Jobs die when
they should, through the whole ladder. API calls are counted from the API server's
audit log, not from our own logs.

The Jobs have ``backoffLimit: 6``, Kubernetes' default: the Job controller would
replace every pod we kill, unless jobreaper's ``fail-job`` (a ``FailureTarget`` on
the Job) stops it. Each kill checks that no pod is created after that write, that
the Job ends ``Failed`` with jobreaper's reason, and that per pod the rungs came in
ladder order, each at most once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.commands import CommandIssued
from schemas.events import KillStarted
from tests.e2e.harness import System, rfc3339
from tests.integration.helpers import eventually, step_of
from tests.integration.helpers import job_manifest as any_job_manifest
from tests.integration.lossy_nodes import AVOID_LOSSY_NODES, ReservedNodeLoss

pytestmark = pytest.mark.stack

KILL_AT = "jobreaper.io/kill-timestamp"
IGNORE_DEADLINE = {"jobreaper.test/ignore-deadline": "true"}
FAST = {"deleteKillingTasksTimeoutSeconds": 3, "forceDeleteTaskTimeoutSeconds": 4}
BACKOFF_LIMIT = 6
"""Kubernetes' default: with 0 the Job controller itself fails the Job at the first
failed pod, which hides whether a kill ends the Job."""
RUNGS = ("set-active-deadline", "delete", "force-delete")


def job_manifest(name: str, **fields: Any) -> client.V1Job:
    return any_job_manifest(name, backoff_limit=BACKOFF_LIMIT, **fields)


def pod_steps(commands: list[CommandIssued]) -> list[CommandIssued]:
    return [c for c in commands if c.step != "fail-job"]


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def assert_rungs_in_ladder_order(system: System) -> None:
    """Per pod, from the audit log: the executor's accepted writes climb the ladder,
    each rung at most once, and no write (accepted or not) goes back down."""
    sent: dict[str, list[str]] = {}
    accepted: dict[str, list[str]] = {}
    for write in sorted(system.writes(), key=lambda w: w["requestReceivedTimestamp"]):
        pod = write["objectRef"]["name"]
        sent.setdefault(pod, []).append(step_of(write))
        if 200 <= write["responseStatus"]["code"] < 300:
            accepted.setdefault(pod, []).append(step_of(write))
    for pod, rungs in sent.items():
        assert rungs == sorted(rungs, key=RUNGS.index), f"{pod}: out of ladder order: {rungs}"
    for pod, rungs in accepted.items():
        assert len(rungs) == len(set(rungs)), f"{pod}: a rung applied twice: {rungs}"


async def assert_the_kill_ended_the_job(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    job: str,
    trigger: str = "Killed",
    timeout: float = 60,
) -> None:
    """One accepted ``fail-job`` write; no pod of the Job created after it; the Job
    ``Failed`` with ``JobReaper<trigger>``; the rungs in ladder order."""
    writes = [
        w
        for w in system.job_writes()
        if w["objectRef"]["name"] == job and 200 <= w["responseStatus"]["code"] < 300
    ]
    assert len(writes) == 1, f"one accepted FailureTarget write: {writes}"
    written = _at(writes[0]["stageTimestamp"])
    created = [
        c
        for c in system.pod_creations()
        if ((c.get("responseObject") or {}).get("metadata", {}).get("labels") or {}).get(
            "batch.kubernetes.io/job-name"
        )
        == job
    ]
    late = [c for c in created if _at(c["requestReceivedTimestamp"]) > written]
    assert late == [], f"pods created after the FailureTarget write at {written}: {late}"

    async def failed() -> Any:
        found = await client.BatchV1Api(kube_api).read_namespaced_job(job, namespace)
        return next(
            (c for c in found.status.conditions or [] if c.type == "Failed" and c.status == "True"),
            None,
        )

    condition = await eventually(f"{job} Failed", failed, timeout=timeout)
    assert condition.reason == f"JobReaper{trigger}", condition
    assert trigger in condition.message
    started = next(
        e for e in await system.kill_events() if isinstance(e, KillStarted) and e.job_name == job
    )
    # lastTransitionTime has whole seconds: the figure is good to a second.
    to_failed = (condition.last_transition_time - started.decided_at).total_seconds()
    print(
        f"{job}: {len(created)} pods created, KillStarted -> FailureTarget written "
        f"{(written - started.decided_at).total_seconds():.3f}s, -> Failed "
        f"{to_failed:.0f}s (lastTransitionTime {condition.last_transition_time:%H:%M:%S})"
    )
    assert_rungs_in_ladder_order(system)


async def pods(kube_api: client.ApiClient, namespace: str, job: str) -> list[Any]:
    listed = await client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    return list(listed.items)


async def running(
    kube_api: client.ApiClient, namespace: str, job: str, count: int = 1
) -> list[Any]:
    async def probe() -> list[Any] | None:
        found = await pods(kube_api, namespace, job)
        ok = len(found) == count and all(p.status.phase == "Running" for p in found)
        return found if ok else None

    return await eventually(f"{job}'s pods running", probe)


async def stranded(
    kube_api: client.ApiClient,
    namespace: str,
    job: str,
    node_loss: ReservedNodeLoss,
    node: str,
    **manifest: Any,
) -> None:
    """A Job whose running pod is on ``node``, which is then lost (NotReady)."""
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest(job, run="never", node=node, **manifest)
    )
    await running(kube_api, namespace, job)
    # In a thread: it waits for NotReady, and the services of this event loop
    # must keep heartbeating meanwhile (a stalled loop costs them their groups).
    await asyncio.to_thread(node_loss.lose, node)


async def kill_now(kube_api: client.ApiClient, namespace: str, job: str) -> datetime:
    now = datetime.now(UTC)
    await client.BatchV1Api(kube_api).patch_namespaced_job(
        job, namespace, {"metadata": {"annotations": {KILL_AT: rfc3339(now)}}}
    )
    return now


async def job_condition(kube_api: client.ApiClient, namespace: str, job: str, kind: str) -> bool:
    found = await client.BatchV1Api(kube_api).read_namespaced_job(job, namespace)
    return any(c.type == kind and c.status == "True" for c in found.status.conditions or [])


async def test_kill_now_sets_the_deadline_and_the_job_dies(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    await system.start()
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest("now", run="never", parallelism=2)
    )
    await running(kube_api, namespace, "now", 2)
    await kill_now(kube_api, namespace, "now")
    killed = await system.job_killed("now")
    assert killed.trigger == "Killed"
    assert all(p.ended in ("exited", "deleted") for p in killed.pods), killed.pods
    # The Job controller, told by the FailureTarget, deletes the pods too: a pod may
    # be gone ("deleted", not by us) before its own deadline fires.
    results = await system.results()
    (failure,) = [r for r in results if r.step == "fail-job"]
    assert (failure.outcome, failure.wrote) == ("applied", True)
    pod_results = [r for r in results if r.step != "fail-job"]
    applied = [r for r in pod_results if r.outcome == "applied" and r.wrote]
    assert len(pod_results) == 2
    assert {r.outcome for r in pod_results} <= {"applied", "gone"}
    patches = system.writes_of("patch")
    assert len(patches) == len(applied) >= 1, "one activeDeadlineSeconds patch per live pod"
    assert system.writes_of("delete") == [], "kwok honoured the deadline: no deletion needed"
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "now")
    for pod in await pods(kube_api, namespace, "now"):
        assert pod.status.phase == "Failed"
        assert pod.status.reason == "DeadlineExceeded" or pod.metadata.deletion_timestamp


async def test_a_future_kill_time_waits_then_every_step_follows(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    await system.start()
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, job_manifest("later", run="never"))
    # Running first, so what is decided at the kill time does not depend on how fast a
    # busy stack schedules the pod. (A kill time set at creation: test_retention.py.)
    await running(kube_api, namespace, "later")
    kill_at = datetime.now(UTC) + timedelta(seconds=5)
    await batch.patch_namespaced_job(
        "later", namespace, {"metadata": {"annotations": {KILL_AT: rfc3339(kill_at)}}}
    )
    await asyncio.sleep(max(0.0, (kill_at - datetime.now(UTC)).total_seconds() - 1.5))
    assert await system.commands() == [], "nothing happens before the kill time"
    assert system.writes() == []
    await system.job_killed("later")
    # Decided for the kill time, not before it: the Job, then its pod (this was also the
    # killer's own test, test_a_future_kill_timestamp_waits_then_acts_at_once, merged here).
    fail_job, command = (await system.commands())[:2]
    assert (fail_job.step, fail_job.due_at) == ("fail-job", command.due_at), "the Job, then its pod"
    assert (command.step, command.trigger) == ("set-active-deadline", "Killed")
    assert abs((command.due_at - kill_at).total_seconds()) < 1
    assert command.decided_at >= command.due_at, "never decided before it is due"
    results = await system.results()
    assert [r.step for r in results].count("fail-job") == 1
    for applied in results:
        latency = (applied.applied_at - kill_at).total_seconds()
        assert applied.applied_at >= kill_at
        print(f"{applied.step} latency (applied_at - kill time): {latency * 1000:.0f} ms")
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "later")


async def test_a_pod_that_ignores_its_deadline_is_deleted(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """The Job controller, told by the FailureTarget, deletes the pod about a second
    later, before our delete timeout (3 s): then our delete is not needed (the pod is
    being deleted). Whoever deletes, it is deleted once, in ladder order. (The
    delete-after-timeout rung without a Job controller: the orphans test below.)"""
    await system.start(**FAST)
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest("stubborn", run="never", pod_labels=IGNORE_DEADLINE)
    )
    await running(kube_api, namespace, "stubborn")
    await kill_now(kube_api, namespace, "stubborn")
    killed = await system.job_killed("stubborn", timeout=60)
    assert [p.ended for p in killed.pods] == ["deleted"]
    steps = [c.step for c in await system.commands()]
    assert steps[:2] == ["fail-job", "set-active-deadline"]
    assert steps in (
        ["fail-job", "set-active-deadline"],  # the Job controller deleted it first
        ["fail-job", "set-active-deadline", "delete"],
    ), steps
    issued = {c.step: c for c in await system.commands()}
    if "delete" in issued:
        wait = (issued["delete"].due_at - issued["set-active-deadline"].decided_at).total_seconds()
        assert wait == pytest.approx(3, abs=0.5), "deletion deleteKillingTasksTimeoutSeconds later"
    for delete in system.writes_of("delete"):
        body = delete.get("requestObject") or {}
        assert body.get("preconditions", {}).get("uid"), "every delete carries a UID precondition"
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "stubborn")


async def test_a_pod_on_a_lost_node_is_force_deleted_after_the_force_timeout(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    await system.start(**FAST)
    node = node_loss.reserved
    await stranded(kube_api, namespace, "stranded", node_loss, node)
    await kill_now(kube_api, namespace, "stranded")
    killed = await system.job_killed("stranded", timeout=60)
    assert [p.ended for p in killed.pods] == ["force-deleted"]
    steps = [(c.step, c.rule) for c in await system.commands()]
    assert steps == [
        ("fail-job", "job.failure-target"),
        ("delete", "ladder.node-lost-delete"),
        ("force-delete", "ladder.force-delete"),
    ]
    deletes = system.writes_of("delete")
    assert len(deletes) == 2
    assert step_of(deletes[-1]) == "force-delete", "the last resort: grace period 0"
    assert await pods(kube_api, namespace, "stranded") == []
    # The Job controller writes Failed only once no pod is terminating: the force
    # deletion is what ends the Job.
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "stranded")


async def test_forbidden_force_deletion_alerts_once_and_leaves_the_pod(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    await system.start(**FAST)
    node = node_loss.reserved
    await stranded(
        kube_api,
        namespace,
        "crucial",
        node_loss,
        node,
        annotations={"jobreaper.io/forbid-force-deletion": "true"},
    )
    await kill_now(kube_api, namespace, "crucial")

    async def alerted() -> list[Any] | None:
        found = [
            e for e in await system.kill_events() if type(e).__name__ == "ForceDeletionForbidden"
        ]
        return found or None

    await eventually("a ForceDeletionForbidden alert", alerted, timeout=60)
    await asyncio.sleep(6)  # more than the force timeout again: still no force deletion
    alerts = await alerted()
    assert alerts is not None
    assert len(alerts) == 1, "exactly one alert"
    assert [c.step for c in await system.commands()] == ["fail-job", "delete"]
    (delete,) = system.writes_of("delete")
    assert step_of(delete) == "delete", "a graceful deletion, never a force one"
    (pod,) = await pods(kube_api, namespace, "crucial")
    assert pod.metadata.deletion_timestamp is not None, "left Terminating for a person"
    assert await job_condition(kube_api, namespace, "crucial", "FailureTarget")
    assert not await job_condition(kube_api, namespace, "crucial", "Failed"), (
        "the Job is not Failed while its pod is terminating"
    )
    assert_rungs_in_ladder_order(system)


async def test_pending_timeout_deletes_an_unschedulable_pod(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    await system.start(defaultPendingTimeoutSeconds=3)
    job = job_manifest("unplaceable", run="never", node="no-such-node")
    await client.BatchV1Api(kube_api).create_namespaced_job(namespace, job)
    killed = await system.job_killed("unplaceable", timeout=60)
    assert killed.trigger == "PendingTimeout"
    (command,) = pod_steps(await system.commands())
    assert (command.step, command.rule) == ("delete", "ladder.unscheduled-delete")
    assert len(system.writes_of("delete")) == 1
    await assert_the_kill_ended_the_job(
        system, kube_api, namespace, "unplaceable", trigger="PendingTimeout"
    )


async def test_job_deadline_with_a_pod_on_a_lost_node_reaches_failed(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    """The Job controller marks FailureTarget and deletes the pod, which hangs on the lost
    node; jobreaper force-deletes it and the Job reaches Failed."""
    await system.start(**FAST)
    node = node_loss.reserved
    await stranded(kube_api, namespace, "overdue", node_loss, node, active_deadline_seconds=12)

    async def failed() -> bool:
        return await job_condition(kube_api, namespace, "overdue", "Failed")

    await eventually("the Job reaches Failed", failed, timeout=90)
    assert any(w["verb"] == "delete" for w in system.writes())
    triggers = {c.trigger for c in await system.commands()}
    assert triggers & {"DeadlineExceeded", "JobFinished", "StuckTerminating"}
    # The Job controller wrote its own FailureTarget at the deadline: jobreaper adds none.
    assert "fail-job" not in {c.step for c in await system.commands()}
    assert system.job_writes() == []
    assert_rungs_in_ladder_order(system)


async def test_a_suspended_job_with_a_stuck_pod_is_finished_off(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    await system.start(**FAST)
    node = node_loss.reserved
    await stranded(kube_api, namespace, "paused", node_loss, node)
    await client.BatchV1Api(kube_api).patch_namespaced_job(
        "paused", namespace, {"spec": {"suspend": True}}
    )
    killed = await system.job_killed("paused", timeout=90)
    assert killed.trigger == "Suspended"
    assert await pods(kube_api, namespace, "paused") == []
    assert any(step_of(w) == "force-delete" for w in system.writes())
    assert "fail-job" not in {c.step for c in await system.commands()}, "a suspension is no end"
    assert_rungs_in_ladder_order(system)


async def test_a_pod_recreated_under_the_same_name_is_never_touched(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """Steps decided for a pod must never hit another pod under its name: every write
    carries a UID precondition. The executor starts late, after the pod was replaced."""
    await system.start(executor=False, deleteKillingTasksTimeoutSeconds=0)
    # backoffLimit 0: the test deletes the pod itself, and must get no replacement.
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, any_job_manifest("ghost", run="never", pod_labels=IGNORE_DEADLINE)
    )
    (old,) = await running(kube_api, namespace, "ghost")
    await kill_now(kube_api, namespace, "ghost")

    async def deleted() -> bool:  # timeout 0: straight to API deletion
        return "delete" in {c.step for c in await system.commands()}

    await eventually("the killer's delete for the old pod", deleted)
    stale = await system.commands()
    core = client.CoreV1Api(kube_api)
    name = old.metadata.name
    await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    await client.BatchV1Api(kube_api).delete_namespaced_job(
        "ghost", namespace, propagation_policy="Orphan"
    )

    async def gone() -> bool:
        try:
            await core.read_namespaced_pod(name, namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    await eventually("the old pod gone", gone)
    newcomer = await core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),  # same name, not a Job's pod
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="main", image="registry.invalid/noop:1")],
                restart_policy="Never",
                affinity=AVOID_LOSSY_NODES,
            ),
        ),
    )
    await system.start_executor()

    async def outcomes() -> list[str] | None:
        found = [r.outcome for r in await system.results()]
        return found if len(found) == len(stale) else None

    answered = await eventually("every stale command answered", outcomes)
    by_step = {r.step: r.outcome for r in await system.results()}
    assert by_step == {"fail-job": "gone", "delete": "uid-mismatch"}, by_step
    assert len(answered) == 2
    after = await core.read_namespaced_pod(name, namespace)
    assert after.metadata.uid == newcomer.metadata.uid
    assert after.metadata.deletion_timestamp is None
    assert after.spec.active_deadline_seconds is None
    assert all(w["responseStatus"]["code"] >= 400 for w in system.writes()), (
        "every write the executor sent was refused by its precondition"
    )
