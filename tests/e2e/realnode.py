"""Helpers for the e2e tests on a real node (``stack up --real-nodes 1``): Jobs whose
pods run a real busybox process under the real kubelet, and a timeline of what the
API server and containerd said about them, sampled every quarter second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from devtools.stack.api import StackError, StackInfo, real_node_tasks
from schemas.annotations import ENFORCE

WORKLOAD_IMAGE = "jobreaper.local/busybox:1"  # devtools.stack.images, imported, never pulled
REAL_NODE_TAINT = "jobreaper.test/real-node"

#: A process that ends on SIGTERM, as most do (a shell as PID 1 without a trap
#: would ignore it: the kernel drops signals a namespace's init does not handle).
POLITE = "trap 'exit 143' TERM; sleep 3600 & wait $!"
#: A process that traps and ignores SIGTERM (its ``sleep`` children inherit that).
STUBBORN = "trap '' TERM; while :; do sleep 1; done"


def real_job(
    name: str,
    node: str,
    script: str,
    *,
    grace_s: int,
    backoff_limit: int = 6,
    active_deadline_seconds: int | None = None,
) -> client.V1Job:
    """An opted-in Job of one pod pinned to real node ``node``, running ``script``."""
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, labels={ENFORCE: "on"}),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit,
            active_deadline_seconds=active_deadline_seconds,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="main",
                            image=WORKLOAD_IMAGE,
                            image_pull_policy="Never",
                            command=["/bin/sh", "-c", script],
                        )
                    ],
                    restart_policy="Never",
                    termination_grace_period_seconds=grace_s,
                    automount_service_account_token=False,
                    node_selector={"kubernetes.io/hostname": node},
                    tolerations=[
                        client.V1Toleration(
                            key=REAL_NODE_TAINT, operator="Exists", effect="NoSchedule"
                        )
                    ],
                ),
            ),
        ),
    )


def container_id(pod: Any) -> str | None:
    """The containerd id of the pod's container (``containerd://<id>``), once started."""
    for status in pod.status.container_statuses or []:
        if status.container_id:
            return str(status.container_id).removeprefix("containerd://")
    return None


@dataclass(frozen=True)
class Sample:
    """What the API server and containerd said, each with the interval it was asked
    in (on a loaded machine a ``ctr`` call takes a second or more: one instant for
    both made a pod listed before a delete look listed after it)."""

    at: datetime
    """The pods were listed after this instant ..."""
    listed_at: datetime
    """... and before this one."""
    #: pod name -> (phase, reason, deleting, container state: running/terminated/waiting)
    pods: dict[str, tuple[str, str | None, bool, str | None]]
    tasks_at: datetime
    """containerd was asked after this instant ..."""
    tasks_done: datetime
    """... and answered before this one."""
    #: containerd task id -> status (RUNNING, STOPPED...), None if containerd did not answer
    tasks: dict[str, str] | None


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)

    def first(self, what: Any) -> Sample | None:
        return next((s for s in self.samples if what(s)), None)

    def task_running(self, cid: str) -> list[Sample]:
        return [s for s in self.samples if s.tasks is not None and s.tasks.get(cid) == "RUNNING"]

    def phases(self, pod: str) -> list[tuple[str, str | None, bool, str | None]]:
        """The pod's distinct states in order."""
        seen: list[tuple[str, str | None, bool, str | None]] = []
        for s in self.samples:
            state = s.pods.get(pod)
            if state is not None and (not seen or seen[-1] != state):
                seen.append(state)
        return seen


def _container_state(pod: Any) -> str | None:
    for status in pod.status.container_statuses or []:
        for kind in ("running", "terminated", "waiting"):
            if getattr(status.state, kind, None) is not None:
                return kind
    return None


@contextlib.asynccontextmanager
async def recording(
    kube_api: client.ApiClient, stack: StackInfo, node: str, namespace: str, job: str
) -> AsyncIterator[Timeline]:
    """Sample the Job's pods and the node's containerd tasks every 0.25 s."""
    timeline = Timeline()
    core = client.CoreV1Api(kube_api)

    async def sample_forever() -> None:
        while True:
            t0 = time.monotonic()
            at = datetime.now(UTC)
            listed = await core.list_namespaced_pod(
                namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
            )
            listed_at = tasks_at = datetime.now(UTC)
            try:
                tasks: dict[str, str] | None = {
                    cid: status
                    for cid, (_, status) in (
                        await asyncio.to_thread(real_node_tasks, stack, node)
                    ).items()
                }
            except StackError:
                tasks = None  # containerd busy or the kubelet's deletion in flight
            timeline.samples.append(
                Sample(
                    at=at,
                    listed_at=listed_at,
                    tasks_at=tasks_at,
                    tasks_done=datetime.now(UTC),
                    pods={
                        p.metadata.name: (
                            p.status.phase,
                            p.status.reason,
                            p.metadata.deletion_timestamp is not None,
                            _container_state(p),
                        )
                        for p in listed.items
                    },
                    tasks=tasks,
                )
            )
            await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - t0)))

    task = asyncio.create_task(sample_forever())
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
