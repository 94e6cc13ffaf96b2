"""Opt-in scope and shadow mode on the real stack (issue #17 items 4 and 5). Writes
are counted from the API server's audit log; each zero-write case runs next to a Job
that opted in with the same scenario, which must be acted on (the control)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from core import command_id
from devtools.stack.api import StackInfo
from tests.e2e.harness import System, rfc3339
from tests.e2e.test_ladder import FAST, IGNORE_DEADLINE, KILL_AT, kill_now, running
from tests.integration.helpers import eventually, job_manifest
from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack


def writes_to(system: System, names: set[str]) -> list[dict[str, Any]]:
    """The executor's writes to these pods, and to these Jobs' status (fail-job)."""
    return [w for w in system.writes() + system.job_writes() if w["objectRef"]["name"] in names]


async def test_a_job_that_did_not_opt_in_gets_no_write(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    """Kill time passed, its pod stuck Terminating on a lost node: out of scope,
    nothing at all (no kill, no force deletion of the stuck pod)."""
    await system.start(**FAST)  # no "enforce": the built-in off
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    node = node_loss.reserved
    for name, enforce in (("outside", None), ("inside", "on")):
        await batch.create_namespaced_job(
            namespace, job_manifest(name, run="never", node=node, enforce=enforce)
        )
    (stuck,) = await running(kube_api, namespace, "outside")
    await running(kube_api, namespace, "inside")
    await asyncio.to_thread(node_loss.lose, node)
    await core.delete_namespaced_pod(stuck.metadata.name, namespace)  # stays Terminating
    await kill_now(kube_api, namespace, "outside")
    await kill_now(kube_api, namespace, "inside")

    # The control goes through delete (node lost) then force delete after 4 s stuck;
    # by then the outside pod's stuck deletion (4 s) was due too, had it been in scope.
    killed = await system.job_killed("inside", timeout=90)
    assert [p.ended for p in killed.pods] == ["force-deleted"]
    assert writes_to(system, {stuck.metadata.name, "outside"}) == []
    assert not [c for c in await system.commands() if c.job_name == "outside"]
    left = await core.read_namespaced_pod(stuck.metadata.name, namespace)
    assert left.metadata.deletion_timestamp is not None, "still stuck Terminating"


async def test_pods_orphaned_on_purpose_are_left_alone(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """``kubectl delete job --cascade=orphan``: the pods lose their ownerReference and
    are no Job's any more; neither the Job's deletion nor its kill time touches them."""
    await system.start(**FAST)
    batch = client.BatchV1Api(kube_api)
    kill_at = {KILL_AT: rfc3339(datetime.now(UTC) + timedelta(seconds=8))}
    for name in ("orphaned", "control"):
        await batch.create_namespaced_job(
            namespace,
            job_manifest(name, run="never", pod_labels=IGNORE_DEADLINE, annotations=kill_at),
        )
    (orphan,) = await running(kube_api, namespace, "orphaned")
    await running(kube_api, namespace, "control")
    await batch.delete_namespaced_job("orphaned", namespace, propagation_policy="Orphan")

    killed = await system.job_killed("control", timeout=60)  # kill time + 3 s delete
    assert killed.trigger == "Killed"
    assert writes_to(system, {orphan.metadata.name, "orphaned"}) == []
    assert not [c for c in await system.commands() if c.job_name == "orphaned"]
    left = await client.CoreV1Api(kube_api).read_namespaced_pod(orphan.metadata.name, namespace)
    assert left.metadata.uid == orphan.metadata.uid
    assert left.metadata.deletion_timestamp is None
    assert not left.metadata.owner_references


async def test_shadow_mode_writes_nothing_and_records_the_ids_a_live_run_issues(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    await system.start(**FAST)
    batch = client.BatchV1Api(kube_api)
    for name, enforce in (("shadowed", "shadow"), ("live", "on")):
        await batch.create_namespaced_job(
            namespace,
            job_manifest(name, run="never", pod_labels=IGNORE_DEADLINE, enforce=enforce),
        )
    (pod,) = await running(kube_api, namespace, "shadowed")
    await running(kube_api, namespace, "live")
    await kill_now(kube_api, namespace, "shadowed")
    await kill_now(kube_api, namespace, "live")
    await system.job_killed("live", timeout=60)  # deadline ignored, deleted after 3 s

    async def shadow_results() -> list[Any] | None:
        found = [r for r in await system.results() if r.job_name == "shadowed"]
        # the pod never died: the ladder goes on by its clock up to the force step
        return found if {r.step for r in found} >= {"delete", "force-delete"} else None

    results = await eventually("the shadow Job's ladder recorded", shadow_results)
    commands = [c for c in await system.commands() if c.job_name == "shadowed"]
    live = [c for c in await system.commands() if c.job_name == "live"]
    assert writes_to(system, {pod.metadata.name, "shadowed"}) == []
    assert writes_to(system, {c.pod_name or c.job_name for c in live}), "the live Job was"
    assert all(c.shadow for c in commands) and not any(c.shadow for c in live)
    assert {(r.outcome, r.attempts, r.wrote) for r in results} == {("would-apply", 0, False)}
    # The ids a live run issues for these steps (derived from Job uid, pod uid, step).
    job_uid = pod.metadata.owner_references[0].uid
    expected = {
        command_id(job_uid, pod.metadata.uid if c.pod_uid else "", c.step, c.attempt)
        for c in commands
    }
    assert {r.command_id for r in results} == {c.command_id for c in commands} == expected
    # The same rungs as the live Job, in the same order, then the force step.
    assert [(c.step, c.rule) for c in live] == [(c.step, c.rule) for c in commands][: len(live)]
    assert [c.step for c in commands] == [
        "fail-job",
        "set-active-deadline",
        "delete",
        "force-delete",
    ]
    after = await client.CoreV1Api(kube_api).read_namespaced_pod(pod.metadata.name, namespace)
    assert after.metadata.deletion_timestamp is None
    assert after.spec.active_deadline_seconds is None
