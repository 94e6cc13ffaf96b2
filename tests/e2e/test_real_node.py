"""The ladder on real processes: a real kubelet, containerd and runc (``stack up
--real-nodes 1``), not kwok's stages. Skipped on a stack without a real node.

What the API server said is sampled with what containerd said (``ctr tasks ls``)
every 0.25 s (``tests/e2e/realnode.py``), so each test can tell when the process
itself stopped, not only when the pod's status said so. The figures they print
fill the table "kwok's stages against the real kubelet" in docs/stack.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import (
    StackInfo,
    crash_kubelet,
    freeze_kubelet,
    real_node_tasks,
    revive_kubelet,
    thaw_kubelet,
)
from tests.e2e.harness import System, rfc3339
from tests.e2e.realnode import POLITE, STUBBORN, Timeline, container_id, real_job, recording
from tests.e2e.test_ladder import (
    FAST,
    KILL_AT,
    assert_rungs_in_ladder_order,
    assert_the_kill_ended_the_job,
    job_manifest,
    kill_now,
    pods,
    running,
)
from tests.integration.helpers import eventually

pytestmark = [
    pytest.mark.stack,
    pytest.mark.real_node,
    # One real node for all: a frozen kubelet would stall the others' pods.
    pytest.mark.exclusive("bounds how late the kubelet kills; one test freezes the real node"),
]

LADDER: dict[str, Any] = {**FAST}  # delete 3 s after the deadline, force 4 s after that


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


async def _applied_at(system: System, step: str) -> datetime:
    (result,) = [r for r in await system.results() if r.step == step]
    assert (result.outcome, result.wrote) == ("applied", True), result
    return result.applied_at


def _stopped_at(timeline: Timeline, cid: str, after: datetime) -> datetime:
    """When containerd first no longer listed ``cid`` as RUNNING, after ``after``."""
    sample = timeline.first(
        lambda s: s.tasks_at > after and s.tasks is not None and s.tasks.get(cid) != "RUNNING"
    )
    assert sample is not None, f"container {cid[:12]} still running at the last sample"
    return sample.tasks_done  # stopped by then (an upper bound)


async def test_the_kubelet_kills_a_real_process_at_the_deadline_the_ladder_set(
    system: System, kube_api: client.ApiClient, namespace: str, stack: StackInfo, real_node: str
) -> None:
    """``set-active-deadline`` is enough on a live node: the kubelet fails the pod
    ``DeadlineExceeded`` (or on the Job controller's deletion, if that came first) and
    its process (which ends on SIGTERM) is gone at once; jobreaper deletes nothing."""
    await system.start(deleteKillingTasksTimeoutSeconds=20, forceDeleteTaskTimeoutSeconds=20)
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, real_job("deadline", real_node, POLITE, grace_s=30)
    )
    (pod,) = await running(kube_api, namespace, "deadline")
    cid = container_id(pod)
    assert cid is not None
    async with recording(kube_api, stack, real_node, namespace, "deadline") as timeline:
        await asyncio.sleep(1)
        assert timeline.task_running(cid), "containerd runs the pod's process"
        await kill_now(kube_api, namespace, "deadline")
        killed = await system.job_killed("deadline", timeout=60)
        patched = await _applied_at(system, "set-active-deadline")
        stopped = _stopped_at(timeline, cid, patched)
        await asyncio.sleep(1)
    states = timeline.phases(pod.metadata.name)
    print(f"deadline: pod states {states}")
    print(f"deadline: patch applied -> process gone (containerd) {_seconds(stopped, patched):.2f}s")
    failed = [s for s in states if s[0] == "Failed"]
    assert failed, f"the kubelet failed the pod: {states}"
    # The kubelet acts on whichever reaches it first: our deadline (DeadlineExceeded),
    # or the Job controller's graceful deletion of the pod, which fail-job's
    # FailureTarget causes at the same moment (no reason; seen on a loaded machine).
    assert failed[0][1] == "DeadlineExceeded" or failed[0][2], states
    assert failed[0][3] == "terminated", "Failed and its container terminated in one update"
    assert _seconds(stopped, patched) < 5, "the kubelet killed the process within seconds"
    assert [p.ended for p in killed.pods] in (["exited"], ["deleted"]), killed.pods
    assert [c.step for c in await system.commands()] == ["fail-job", "set-active-deadline"]
    assert len(system.writes_of("patch")) == 1
    assert system.writes_of("delete") == [], "the deadline did it: no deletion by jobreaper"
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "deadline")


async def test_a_process_ignoring_sigterm_keeps_its_pod_for_its_grace_period(
    system: System, kube_api: client.ApiClient, namespace: str, stack: StackInfo, real_node: str
) -> None:
    """The kubelet sends SIGTERM at the deadline; the process ignores it and runs on,
    and the pod stays ``Running`` (not ``Failed``, as kwok plays it) until the
    grace period ends and SIGKILL lands. The ladder climbs each rung at most once."""
    grace = 12
    await system.start(**LADDER)
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, real_job("stubborn", real_node, STUBBORN, grace_s=grace)
    )
    (pod,) = await running(kube_api, namespace, "stubborn")
    cid = container_id(pod)
    assert cid is not None
    async with recording(kube_api, stack, real_node, namespace, "stubborn") as timeline:
        await kill_now(kube_api, namespace, "stubborn")
        await system.job_killed("stubborn", timeout=90)
        patched = await _applied_at(system, "set-active-deadline")
        stopped = _stopped_at(timeline, cid, patched)
        await asyncio.sleep(1)
    states = timeline.phases(pod.metadata.name)
    took = _seconds(stopped, patched)
    print(f"stubborn: pod states {states}")
    print(f"stubborn: patch applied -> process gone (containerd) {took:.2f}s (grace {grace}s)")
    steps = [c.step for c in await system.commands()]
    print(f"stubborn: steps {steps}")

    def within_grace(start: datetime, end: datetime) -> bool:
        return _seconds(start, patched) > 1 and _seconds(end, patched) < grace - 1

    asked = [s for s in timeline.samples if within_grace(s.tasks_at, s.tasks_done)]
    listed = [s for s in timeline.samples if within_grace(s.at, s.listed_at)]
    assert asked and listed, "samples during the grace period"
    for sample in asked:
        assert sample.tasks is None or sample.tasks.get(cid) == "RUNNING", (
            f"the process ignoring SIGTERM runs through its grace period: {sample}"
        )
    for sample in listed:
        state = sample.pods.get(pod.metadata.name)
        assert state is not None and state[0] == "Running", (
            f"the pod stays Running (Terminating) through the grace period: {sample}"
        )
    assert any(s.pods.get(pod.metadata.name, ("", None, False, None))[2] for s in listed), (
        "the pod is Terminating (deleted, by the Job controller or by us) meanwhile"
    )
    assert grace - 1 < took < grace + 5, "SIGKILL at the end of the grace period"
    assert steps[:2] == ["fail-job", "set-active-deadline"], steps
    assert len(steps) == len(set(steps)), f"each rung at most once: {steps}"
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "stubborn", timeout=90)


@contextlib.contextmanager
def _lost(stack: StackInfo, node: str, how: str) -> Iterator[float]:
    """The kubelet of ``node`` away inside: ``frozen`` (SIGSTOP, then SIGCONT) or
    ``crashed`` (SIGKILL, then started again); yields when (monotonic)."""
    if how == "frozen":
        freeze_kubelet(stack, node)
    else:
        crash_kubelet(stack, node)
    try:
        yield time.monotonic()
    finally:
        if how == "frozen":
            thaw_kubelet(stack, node)
        else:
            revive_kubelet(stack, node)


async def _node_ready(kube_api: client.ApiClient, node: str) -> bool | None:
    found: Any = await client.CoreV1Api(kube_api).read_node(node)
    for cond in found.status.conditions or []:
        if cond.type == "Ready":
            return bool(cond.status == "True")
    return None


@pytest.mark.parametrize("how", ["frozen", "crashed"])
async def test_a_stopped_kubelet_leaves_the_process_running_after_the_force_deletion(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    stack: StackInfo,
    real_node: str,
    how: str,
) -> None:
    """A lost node, for real: the kubelet is frozen (SIGSTOP) or crashed (SIGKILL).
    The graceful delete hangs, the force delete removes the object, and the process
    **keeps running** (containerd says so) until the kubelet is back (thawed, or
    started again) and cleans it up."""
    await system.start(**LADDER)
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, real_job("lost", real_node, POLITE, grace_s=5)
    )
    (pod,) = await running(kube_api, namespace, "lost")
    cid = container_id(pod)
    assert cid is not None
    async with recording(kube_api, stack, real_node, namespace, "lost") as timeline:
        with _lost(stack, real_node, how) as lost_at:

            async def not_ready() -> bool:
                return await _node_ready(kube_api, real_node) is False

            await eventually(f"{real_node} NotReady", not_ready, timeout=40)
            print(f"lost: kubelet {how} -> node NotReady {time.monotonic() - lost_at:.1f}s")
            await kill_now(kube_api, namespace, "lost")
            killed = await system.job_killed("lost", timeout=60)
            assert [p.ended for p in killed.pods] == ["force-deleted"]
            assert await pods(kube_api, namespace, "lost") == [], "the object is gone"
            deleted = await _applied_at(system, "delete")
            forced = await _applied_at(system, "force-delete")
            hung = [
                s
                for s in timeline.samples
                if deleted < s.at and s.listed_at < forced and s.pods.get(pod.metadata.name)
            ]
            assert hung, "the pod was there, Terminating, between the delete and the force"
            assert all(s.pods[pod.metadata.name][2] for s in hung), "Terminating"
            await asyncio.sleep(3)
            tasks = await asyncio.to_thread(real_node_tasks, stack, real_node)
            assert tasks.get(cid, (0, ""))[1] == "RUNNING", (
                f"the force-deleted pod's process still runs on the lost node: {tasks}"
            )
            still = _seconds(timeline.samples[-1].tasks_at, forced)
            print(
                f"lost: graceful delete hung {_seconds(forced, deleted):.1f}s until the force "
                f"delete; process still RUNNING {still:.1f}s after it"
            )
        thawed = datetime.now(pod.metadata.creation_timestamp.tzinfo)

        async def cleaned() -> bool:
            tasks = await asyncio.to_thread(real_node_tasks, stack, real_node)
            return tasks.get(cid, (0, ""))[1] != "RUNNING"

        await eventually("the kubelet back kills the orphaned process", cleaned, timeout=90)
        gone = datetime.now(thawed.tzinfo)
    print(f"lost ({how}): kubelet back -> orphaned process gone {_seconds(gone, thawed):.1f}s")

    async def ready() -> bool:
        return await _node_ready(kube_api, real_node) is True

    await eventually(f"{real_node} Ready again", ready, timeout=60)
    steps = [(c.step, c.rule) for c in await system.commands()]
    assert steps == [
        ("fail-job", "job.failure-target"),
        ("delete", "ladder.node-lost-delete"),
        ("force-delete", "ladder.force-delete"),
    ], steps
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "lost")
    assert_rungs_in_ladder_order(system)


async def test_kill_latency_on_the_real_node_beside_kwok(
    system: System, kube_api: client.ApiClient, namespace: str, stack: StackInfo, real_node: str
) -> None:
    """The same kill time for a Job on the real node and one on a kwok node, in one
    run: due -> the real process gone (containerd) beside due -> kwok's pod Failed
    (its stage). Prints both (the figures of issue #18); asserts each Job was killed
    by its deadline within seconds, and no earlier than due."""
    await system.start(deleteKillingTasksTimeoutSeconds=20, forceDeleteTaskTimeoutSeconds=20)
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, real_job("real", real_node, POLITE, grace_s=30))
    await batch.create_namespaced_job(namespace, job_manifest("kwok", run="never"))
    (real_pod,) = await running(kube_api, namespace, "real")
    (kwok_pod,) = await running(kube_api, namespace, "kwok")
    cid = container_id(real_pod)
    assert cid is not None
    async with recording(kube_api, stack, real_node, namespace, "real") as timeline:
        due = datetime.now(UTC) + timedelta(seconds=4)
        for job in ("real", "kwok"):
            await batch.patch_namespaced_job(
                job, namespace, {"metadata": {"annotations": {KILL_AT: rfc3339(due)}}}
            )

        async def kwok_failed() -> datetime | None:
            try:
                found = await client.CoreV1Api(kube_api).read_namespaced_pod(
                    kwok_pod.metadata.name, namespace
                )
            except client.ApiException as exc:
                return datetime.now(UTC) if exc.status == 404 else None
            return datetime.now(UTC) if found.status.phase == "Failed" else None

        kwok_done = await eventually("kwok's pod Failed", kwok_failed, timeout=60, interval=0.05)
        await system.job_killed("real", timeout=60)

        async def process_gone() -> datetime | None:
            # containerd may say so a sample after the pod's status did
            sample = timeline.first(
                lambda s: s.tasks_at > due and s.tasks is not None and s.tasks.get(cid) != "RUNNING"
            )
            return None if sample is None else sample.tasks_done

        real_done = await eventually("the real process gone (containerd)", process_gone)
    real_s, kwok_s = _seconds(real_done, due), _seconds(kwok_done, due)
    print(
        f"latency: due -> process gone on the real node {real_s:.2f}s (containerd, sampled "
        f"every 0.25 s); due -> pod Failed on kwok {kwok_s:.2f}s"
    )
    assert 0 <= real_s < 10 and 0 <= kwok_s < 10, (real_s, kwok_s)
