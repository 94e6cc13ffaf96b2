"""A CronJob with ``concurrencyPolicy: Forbid`` gets its next run after jobreaper kills
a run whose pod sits on a lost node.

Plain Kubernetes: the pod on the lost node never goes away by itself, the Job stays
active, and Forbid skips every later run. With jobreaper: the run is killed (a kill
time set once its node is lost), ``fail-job`` writes ``FailureTarget`` (no replacement
pods), the ladder force-deletes the stuck pod, the Job controller writes ``Failed``
and the CronJob controller starts the next run (docs/design/job-level-kill.md,
"CronJob, concurrencyPolicy: Forbid")."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.annotations import KILL_TIMESTAMP
from schemas.events import KillStarted
from tests.e2e.harness import System, rfc3339
from tests.integration.helpers import eventually, job_manifest
from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack

FAST = {"deleteKillingTasksTimeoutSeconds": 3, "forceDeleteTaskTimeoutSeconds": 4}
GRACE_S = 30
"""The pod's own termination grace period (the default): a graceful delete sets
``deletionTimestamp`` that far ahead, and the force deletion comes
``forceDeleteTaskTimeoutSeconds`` after it."""
SCHEDULE_PERIOD_S = 60


async def runs(kube_api: client.ApiClient, namespace: str) -> list[Any]:
    listed = await client.BatchV1Api(kube_api).list_namespaced_job(namespace)
    return sorted(listed.items, key=lambda j: j.metadata.creation_timestamp)


@pytest.mark.exclusive("bounds how late the next run comes (the ladder and a period, + 5 s)")
async def test_a_forbid_cronjob_runs_again_after_a_killed_run_on_a_lost_node(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    await system.start(**FAST)
    node = node_loss.reserved
    template = job_manifest("unused", run="never", node=node, backoff_limit=6)
    await client.BatchV1Api(kube_api).create_namespaced_cron_job(
        namespace,
        client.V1CronJob(
            metadata=client.V1ObjectMeta(name="nightly"),
            spec=client.V1CronJobSpec(
                schedule="*/1 * * * *",
                concurrency_policy="Forbid",
                # The template's labels too: they opt the runs in (jobreaper.io/enforce).
                job_template=client.V1JobTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=template.metadata.labels),
                    spec=template.spec,
                ),
            ),
        ),
    )

    async def first_running() -> Any:
        jobs = await runs(kube_api, namespace)
        if not jobs:
            return None
        pods = await client.CoreV1Api(kube_api).list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={jobs[0].metadata.name}"
        )
        running = [p for p in pods.items if p.status.phase == "Running"]
        return jobs[0] if running else None

    first = await eventually("the first run's pod running", first_running, timeout=90)
    await asyncio.to_thread(node_loss.lose, node)
    await client.BatchV1Api(kube_api).patch_namespaced_job(
        first.metadata.name,
        namespace,
        {"metadata": {"annotations": {KILL_TIMESTAMP: rfc3339(datetime.now(UTC))}}},
    )

    async def next_run() -> Any:
        jobs = await runs(kube_api, namespace)
        return jobs[1] if len(jobs) > 1 else None

    ladder_s = GRACE_S + FAST["forceDeleteTaskTimeoutSeconds"]
    budget = ladder_s + SCHEDULE_PERIOD_S
    second = await eventually("the next scheduled run", next_run, timeout=budget + 30)
    started = next(
        e
        for e in await system.kill_events()
        if isinstance(e, KillStarted) and e.job_name == first.metadata.name
    )
    assert started.trigger == "Killed"
    steps = [c.step for c in await system.commands() if c.job_name == first.metadata.name]
    assert steps == ["fail-job", "delete", "force-delete"], steps
    done = await client.BatchV1Api(kube_api).read_namespaced_job(first.metadata.name, namespace)
    (failed,) = [c for c in done.status.conditions or [] if c.type == "Failed"]
    assert failed.reason == "JobReaperKilled"
    gap = (second.metadata.creation_timestamp - started.decided_at).total_seconds()
    since_failed = (
        second.metadata.creation_timestamp - failed.last_transition_time
    ).total_seconds()
    print(
        f"first run {first.metadata.name} killed at {started.decided_at:%H:%M:%S.%f}, "
        f"Failed at {failed.last_transition_time}, next run {second.metadata.name} created "
        f"{gap:.1f}s after KillStarted ({since_failed:.1f}s after Failed); now "
        f"{datetime.now(UTC):%H:%M:%S}"
    )
    assert gap <= budget + 5, "the ladder's timeouts plus one schedule period"
    if shutil.which("kubectl") and os.environ.get("KUBECONFIG"):
        # What a user sees (docs/executor.md quotes it).
        shown = await asyncio.create_subprocess_exec(
            "kubectl",
            "describe",
            "job",
            "-n",
            namespace,
            first.metadata.name,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(shown.communicate(), 30)
        print(out.decode())
