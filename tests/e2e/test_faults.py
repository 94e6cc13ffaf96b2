"""Faults with real processes and real signals: the killer and the executor die
(SIGKILL, at named crash points across the ladder) and are restarted; the Kafka
broker restarts in the middle of a ladder. The ladder still completes and every
step reaches the API server exactly once, per its audit log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo, restart_component
from services.replay.history import read_history
from services.replay.report import render_replay, replay
from tests.e2e.harness import PARTITIONS, System, rfc3339
from tests.integration.helpers import eventually, job_manifest, read_topic, step_of

pytestmark = pytest.mark.stack

LADDER = {"deleteKillingTasksTimeoutSeconds": 2, "forceDeleteTaskTimeoutSeconds": 3}
# The pod ignores its deadline and its graceful deletion hangs: all three steps are needed.
STUBBORN_POD = {
    "labels": {"jobreaper.test/ignore-deadline": "true"},
    "annotations": {"pod-delete.stage.kwok.x-k8s.io/delay": "1h"},
}


class Supervisor:
    """Runs a service as a real process; restarts it (without the crash point) when it dies."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.deaths: list[int] = []
        self._logs: list[Any] = []

    def start(self, crash_at: str | None = None) -> None:
        env = {**os.environ, **self.env}
        env.pop("JOBREAPER_CRASH_AT", None)
        if crash_at:
            env["JOBREAPER_CRASH_AT"] = crash_at
        log = open(self.log_dir / f"{self.name}-{len(self._logs)}.log", "wb")  # noqa: SIM115
        self._logs.append(log)
        self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=log)

    def check(self) -> None:
        """Restart the process if it has died (as a Deployment would)."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            self.deaths.append(code)
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for log in self._logs:
            log.close()


@pytest.fixture
def supervisors(
    stack: StackInfo, topic_prefix: str, tmp_path: Path
) -> Iterator[dict[str, Supervisor]]:
    run = uuid.uuid4().hex[:8]
    common = {
        "JOBREAPER_KUBECONFIG": str(stack.kubeconfig),
        "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
        "JOBREAPER_KAFKA_JOB_PARTITIONS": str(PARTITIONS),
        "JOBREAPER_HTTP_PORT": "0",
    }
    python = [sys.executable, "-m", "services"]
    procs = {
        "killer": Supervisor(
            "killer",
            [*python, "killer", "run"],
            {
                **common,
                "JOBREAPER_KILLER_GROUP_ID": f"killer-{run}",
                "JOBREAPER_KILLER_SESSION_TIMEOUT_MS": "6000",
            },
            tmp_path,
        ),
        "executor": Supervisor(
            "executor",
            [*python, "executor", "run"],
            {
                **common,
                "JOBREAPER_EXECUTOR_GROUP_ID": f"executor-{run}",
                "JOBREAPER_EXECUTOR_TRANSACTIONAL_ID_PREFIX": f"executor-{run}",
                "JOBREAPER_EXECUTOR_SESSION_TIMEOUT_MS": "6000",
            },
            tmp_path,
        ),
    }
    yield procs
    for proc in procs.values():
        proc.stop()


CRASH_POINTS = [
    # the killer: a decision written but not committed, committed, folding, rebuilding
    ("killer", "killer.before-commit:1"),
    ("killer", "killer.before-commit:2"),
    ("killer", "killer.before-commit:3"),
    ("killer", "killer.after-commit:1"),
    ("killer", "killer.after-commit:2"),
    ("killer", "killer.after-fold:3"),
    ("killer", "killer.rebuild:4"),
    # the executor: a command read but not applied, applied but not recorded, recorded
    # but not committed, committed; and while it re-reads the results it has recorded
    ("executor", "executor.before-apply:1"),
    ("executor", "executor.after-apply:1"),
    ("executor", "executor.after-apply:2"),
    ("executor", "executor.before-commit:2"),
    ("executor", "executor.after-commit:1"),
    ("executor", "executor.rebuild:1"),
]


async def _stubborn_victim_running(kube_api: client.ApiClient, namespace: str) -> Any:
    """The Job ``victim``, whose one pod ignores its deadline, running; its BatchV1Api."""
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(
        namespace,
        job_manifest(
            "victim",
            run="never",
            pod_labels=STUBBORN_POD["labels"],
            pod_annotations=STUBBORN_POD["annotations"],
        ),
    )
    core = client.CoreV1Api(kube_api)

    async def pod_running() -> bool:
        pods = (await core.list_namespaced_pod(namespace)).items
        return len(pods) == 1 and pods[0].status.phase == "Running"

    await eventually("the pod running", pod_running)
    return batch


async def _assert_each_step_written_once(system: System) -> None:
    """Per the API server's audit log, each step jobreaper took was accepted exactly
    once: the Job's ``FailureTarget`` (fail-job) once, the stuck pod's force deletion
    once, and its deadline patch and graceful delete at most once each. (At most: once
    the Job has its FailureTarget the Job controller deletes the pod itself, usually
    before our delete is due, which then has nothing to write; the deadline patch, a
    few ms after fail-job, lands before that deletion unless the machine stalls.)"""
    await asyncio.sleep(1)  # the audit log is written just after each response
    done = [w for w in system.writes() if w["responseStatus"]["code"] < 400]
    kinds = [(w["verb"], step_of(w) == "force-delete") for w in done]
    assert len(kinds) == len(set(kinds)), f"a pod step written twice: {sorted(kinds)}"
    assert ("delete", True) in kinds, f"no force deletion: {sorted(kinds)}"
    failed = [w for w in system.job_writes() if w["responseStatus"]["code"] < 400]
    assert len(failed) == 1, f"fail-job accepted {len(failed)} times, not once"


@pytest.mark.parametrize(("victim", "crash_at"), CRASH_POINTS, ids=[c for _, c in CRASH_POINTS])
async def test_the_ladder_completes_once_whoever_dies_wherever(
    victim: str,
    crash_at: str,
    system: System,
    supervisors: dict[str, Supervisor],
    kube_api: client.ApiClient,
    namespace: str,
) -> None:
    await system.start(executor=False, killer=False, **LADDER)
    batch = await _stubborn_victim_running(kube_api, namespace)
    rebuild = ".rebuild" in crash_at
    for name, proc in supervisors.items():
        proc.start(crash_at if name == victim and not rebuild else None)
    await _kill_now(batch, namespace)
    if rebuild:
        # Give the victim a log to rebuild from: a first instance takes the first step.
        await eventually("a first step applied", lambda: _has_results(system))
        supervisors[victim].stop()
        supervisors[victim].start(crash_at)

    async def killed() -> bool:
        for proc in supervisors.values():
            proc.check()
        return any(type(e).__name__ == "JobKilled" for e in await system.kill_events())

    await eventually("JobKilled after the crash", killed, timeout=120)

    async def victim_died() -> bool:
        # JobKilled can be read before the death is seen: the last step's crash points
        # come after its API write, which the watcher reports while the victim dies.
        supervisors[victim].check()
        return -signal.SIGKILL in supervisors[victim].deaths

    await eventually(f"{crash_at} reached", victim_died, timeout=30)
    await _assert_each_step_written_once(system)
    # Crashes, rebuilds and a new instance: every committed decision replays exactly.
    report = replay(await read_history(system.kafka))
    assert report.divergences == [], render_replay(report)
    assert report.total("commands") >= 3


# Slow enough that the broker restart (8-15 s on a loaded machine) falls between steps.
SLOW_LADDER = {"deleteKillingTasksTimeoutSeconds": 6, "forceDeleteTaskTimeoutSeconds": 6}


@pytest.mark.exclusive("restarts the stack's Kafka")
async def test_a_broker_restart_mid_ladder_loses_nothing_and_repeats_nothing(
    stack: StackInfo, system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """Issue #6: Kafka stops (cleanly) and starts again on the same port while a
    ladder runs. Watcher, killer and executor (in this process) recover by
    themselves: the ladder completes, each step reaches the API server once, and
    no command, result or kill event is on its topic twice."""
    if stack.stack_dir is None:
        pytest.skip("restarting Kafka needs a stack started by devtools.stack")
    await system.start(**SLOW_LADDER)
    batch = await _stubborn_victim_running(kube_api, namespace)
    await _kill_now(batch, namespace)
    await eventually("the first step applied", lambda: _has_results(system), timeout=90)
    # The next step is due 6 s later: the broker is away when it must be decided,
    # committed, applied or recorded.
    down = await asyncio.to_thread(restart_component, stack, "kafka")
    print(f"kafka restarted, unavailable {down:.1f} s")

    await system.job_killed("victim", timeout=180)
    await _assert_each_step_written_once(system)
    for topic in ("kill.commands", "kill.results", "kill.events"):
        ids = [
            dict(r.headers)["ce_id"]
            for r, _ in await read_topic(stack.kafka_bootstrap, system.names(topic))
        ]
        assert len(ids) == len(set(ids)), f"a record on {topic} twice: {sorted(ids)}"
    commands = await system.commands()
    assert sorted(c.step for c in commands) == sorted({c.step for c in commands}), (
        "each step commanded once"
    )
    assert len({r.command_id for r in await system.results()}) == len(commands)


async def _has_results(system: System) -> bool:
    return bool(await system.results())


async def _kill_now(batch: client.BatchV1Api, namespace: str) -> None:
    now = rfc3339(datetime.now(UTC))
    await batch.patch_namespaced_job(
        "victim", namespace, {"metadata": {"annotations": {"jobreaper.io/kill-timestamp": now}}}
    )
