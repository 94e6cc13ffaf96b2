"""Cancel and postpone a kill on the real stack (issue #17 item 3). Until the kill
starts, the kill-timestamp annotation's current value rules (edited: moved; removed:
cancelled), a newer ``jobreaper kill`` replaces the requested time, and
``jobreaper kill --cancel`` cancels it; once the killer decided the kill it is final.
API writes are counted from the API server's audit log; each zero-write case runs
next to a control Job with the same kill time, which must be killed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client
from typer.testing import CliRunner

from schemas.events import KillStarted
from services.cli import app
from services.kill.request import request_kill
from tests.e2e.harness import System, rfc3339
from tests.e2e.test_ladder import (
    FAST,
    IGNORE_DEADLINE,
    KILL_AT,
    _at,
    assert_the_kill_ended_the_job,
    job_manifest,
    running,
)
from tests.e2e.test_scope import writes_to
from tests.integration.helpers import eventually

pytestmark = pytest.mark.stack

AHEAD = 10.0
"""Seconds from now to the first kill time: time enough to create, see and change."""


async def kill_cli(system: System, *args: str) -> Any:
    """``jobreaper kill ...`` as a user runs it (in a thread: it runs its own loop)."""
    env = {
        "JOBREAPER_KAFKA_BOOTSTRAP": system.stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": system.prefix,
        "JOBREAPER_KUBECONFIG": str(system.stack.kubeconfig),
    }
    done = await asyncio.to_thread(CliRunner().invoke, app, ["kill", *args], env=env)
    assert done.exit_code == 0, done.output
    return done


async def create(kube_api: client.ApiClient, namespace: str, name: str, **fields: Any) -> Any:
    await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest(name, run="never", pod_labels=IGNORE_DEADLINE, **fields)
    )
    (pod,) = await running(kube_api, namespace, name)
    return pod


async def annotate(kube_api: client.ApiClient, namespace: str, job: str, value: str | None) -> None:
    """Set (or, ``None``, remove) the kill-timestamp annotation, as ``kubectl annotate``."""
    await client.BatchV1Api(kube_api).patch_namespaced_job(
        job, namespace, {"metadata": {"annotations": {KILL_AT: value}}}
    )


async def sleep_until(at: datetime) -> None:
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


async def test_a_cancelled_future_kill_makes_no_write(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """A kill requested with ``jobreaper kill --at`` then ``--cancel``led, and a kill
    annotation removed, before their time: nothing, not at the old due time, not
    after; the control, with the same time, is killed."""
    await system.start(**FAST)
    kill_at = datetime.now(UTC) + timedelta(seconds=AHEAD)
    names = ("requested", "annotated", "control")
    pods = {
        name: await create(
            kube_api,
            namespace,
            name,
            annotations={KILL_AT: rfc3339(kill_at)} if name != "requested" else None,
        )
        for name in names
    }
    await kill_cli(system, f"{namespace}/requested", "--at", rfc3339(kill_at), "--no-check")
    cancelled = await kill_cli(system, f"{namespace}/requested", "--cancel", "--by", "e2e")
    assert "kill cancellation requested" in cancelled.stdout
    await annotate(kube_api, namespace, "annotated", None)

    killed = await system.job_killed("control", timeout=60)  # kill time + 3 s delete
    assert killed.trigger == "Killed"
    await sleep_until(kill_at + timedelta(seconds=FAST["deleteKillingTasksTimeoutSeconds"] + 3))
    for name in ("requested", "annotated"):
        assert writes_to(system, {pods[name].metadata.name, name}) == [], name
        # no kill command; the Job was shown due, then cancelled (test_job_shows_kill)
        steps = [c.step for c in await system.commands(shows=True) if c.job_name == name]
        assert steps == ["annotate-job", "annotate-job"], (name, steps)
        left = await client.CoreV1Api(kube_api).read_namespaced_pod(
            pods[name].metadata.name, namespace
        )
        assert left.metadata.deletion_timestamp is None and left.status.phase == "Running"
        assert left.spec.active_deadline_seconds is None
    assert writes_to(system, {pods["control"].metadata.name, "control"}), "the control was"


async def test_a_postponed_kill_fires_at_the_new_time_not_the_old(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """A second ``jobreaper kill --at`` replaces the first's time; an edited annotation
    moves its own: nothing at the old time, the kill at the new one."""
    await system.start(**FAST)
    old = datetime.now(UTC) + timedelta(seconds=AHEAD)
    new = old + timedelta(seconds=10)
    for name in ("requested", "annotated"):
        await create(
            kube_api,
            namespace,
            name,
            annotations={KILL_AT: rfc3339(old)} if name == "annotated" else None,
        )
    await kill_cli(system, f"{namespace}/requested", "--at", rfc3339(old), "--no-check")
    await kill_cli(system, f"{namespace}/requested", "--at", rfc3339(new), "--no-check")
    await annotate(kube_api, namespace, "annotated", rfc3339(new))

    await sleep_until(old + timedelta(seconds=3))
    assert await system.commands() == [], "nothing at the old time"
    assert system.writes() == [] and system.job_writes() == []
    for name in ("requested", "annotated"):
        await system.job_killed(name, timeout=60)
        commands = [c for c in await system.commands() if c.job_name == name]
        assert commands and {c.trigger for c in commands} == {"Killed"}
        first = min(c.decided_at for c in commands)
        assert first >= new, f"{name}: decided at {first}, before the new time {new}"
        assert {c.due_at for c in commands if c.step in ("fail-job", "set-active-deadline")} == {
            new
        }, name
        writes = [
            _at(w["requestReceivedTimestamp"]) for w in writes_to(system, {name, *_pods(commands)})
        ]
        assert writes and min(writes) >= new - timedelta(milliseconds=5), (name, writes)
        print(f"{name}: first write {(min(writes) - new).total_seconds() * 1000:.0f} ms after due")
        await assert_the_kill_ended_the_job(system, kube_api, namespace, name)


def _pods(commands: list[Any]) -> set[str]:
    return {c.pod_name for c in commands if c.pod_name}


async def test_a_cancel_after_the_kill_started_changes_nothing(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """Requested now (and annotated): once ``KillStarted`` is out, a cancellation, a
    later time and the annotation's removal change nothing: the ladder goes on to the
    end and the Job ends Failed as killed."""
    await system.start(**FAST)
    await create(kube_api, namespace, "doomed")
    await annotate(kube_api, namespace, "doomed", rfc3339(datetime.now(UTC)))
    await request_kill(system.kafka, namespace, "doomed", reason="e2e", requested_by="e2e")

    async def started() -> KillStarted | None:
        found = [e for e in await system.kill_events() if isinstance(e, KillStarted)]
        return found[0] if found else None

    kill = await eventually("KillStarted", started, timeout=60)
    await kill_cli(system, f"{namespace}/doomed", "--cancel", "--no-check")
    await kill_cli(system, f"{namespace}/doomed", "--at", "+5m", "--no-check")
    await annotate(kube_api, namespace, "doomed", None)
    killed = await system.job_killed("doomed", timeout=60)
    assert (killed.trigger, killed.episode) == ("Killed", kill.episode)
    steps = [c.step for c in await system.commands()]
    assert steps[:2] == ["fail-job", "set-active-deadline"], steps
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "doomed")
