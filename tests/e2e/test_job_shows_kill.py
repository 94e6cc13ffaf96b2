"""What a Job shows of its kill, on the real stack (issue #17 item 2, rule
*job.show-kill*): ``kubectl get job -o yaml`` and ``kubectl describe job`` tell that a
kill is due, running, done or cancelled, with no access to Kafka. Writes counted
from the API server's audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.e2e.harness import System, rfc3339
from tests.e2e.test_cancel import annotate, create
from tests.e2e.test_ladder import FAST, KILL_AT, assert_the_kill_ended_the_job
from tests.e2e.test_scope import writes_to
from tests.integration.helpers import eventually

pytestmark = pytest.mark.stack

STATE = "jobreaper.io/kill-state"
AHEAD = 20.0


async def shown(kube_api: client.ApiClient, namespace: str, job: str) -> dict[str, str]:
    found = await client.BatchV1Api(kube_api).read_namespaced_job(job, namespace)
    return {
        k: v
        for k, v in (found.metadata.annotations or {}).items()
        if k.startswith("jobreaper.io/kill") and k != KILL_AT
    }


async def showing(
    kube_api: client.ApiClient, namespace: str, job: str, state: str
) -> dict[str, str]:
    async def check() -> dict[str, str] | None:
        now = await shown(kube_api, namespace, job)
        return now if now.get(STATE) == state else None

    return await eventually(f"{job} shows {state}", check, timeout=60)


async def job_event_reasons(kube_api: client.ApiClient, namespace: str, job: str) -> list[str]:
    """jobreaper's Events on the Job telling its kill's state, oldest first. Read as
    core/v1 Events: the client's events.k8s.io model refuses the Job controller's
    (no eventTime)."""
    events = await client.CoreV1Api(kube_api).list_namespaced_event(namespace)
    ours = [
        e
        for e in events.items
        if e.reporting_component == "jobreaper.io/executor"
        and e.involved_object.kind == "Job"
        and e.involved_object.name == job
    ]
    states = {"JobreaperKillDue", "JobreaperFailureTarget", "JobreaperKilled"}
    states.add("JobreaperKillCancelled")  # (the pods' step Events are on the Job too)
    return [e.reason for e in sorted(ours, key=lambda e: e.event_time) if e.reason in states]


async def test_a_job_shows_its_kill_due_killing_killed_or_cancelled(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """Two Jobs (``backoffLimit`` 6) with a kill time ahead: both show ``due`` at that
    time; one has its annotation removed and shows ``cancelled`` (no kill write);
    the other shows ``killing`` with its ``FailureTarget`` and ``killed`` once its pods
    are gone, with an Event for each state. Two metadata writes per Job, no more."""
    await system.start(**FAST)
    pods: dict[str, Any] = {}
    for name in ("shown", "cancelled"):
        pods[name] = await create(kube_api, namespace, name)
    # The kill time set once both run (a busy stack may take seconds to start them):
    # AHEAD leaves the killer, the executor and this test's reads time to see `due`.
    kill_at = datetime.now(UTC) + timedelta(seconds=AHEAD)
    for name in ("shown", "cancelled"):
        await annotate(kube_api, namespace, name, rfc3339(kill_at))
    due = rfc3339(kill_at).replace("+00:00", "Z")
    for name in ("shown", "cancelled"):
        now = await showing(kube_api, namespace, name, "due")
        assert now == {
            STATE: "due",
            "jobreaper.io/kill-trigger": "Killed",
            "jobreaper.io/kill-due-at": due,
        }, now
    await annotate(kube_api, namespace, "cancelled", None)
    assert (await showing(kube_api, namespace, "cancelled", "cancelled"))[
        "jobreaper.io/kill-due-at"
    ] == due

    await system.job_killed("shown", timeout=60)
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "shown")
    done = await showing(kube_api, namespace, "shown", "killed")
    killed_at = datetime.fromisoformat(done["jobreaper.io/killed-at"])
    assert kill_at <= killed_at < kill_at + timedelta(seconds=60), done
    assert done["jobreaper.io/kill-due-at"] == due

    assert await job_event_reasons(kube_api, namespace, "shown") == [
        "JobreaperKillDue",
        "JobreaperFailureTarget",
        "JobreaperKilled",
    ]
    assert await job_event_reasons(kube_api, namespace, "cancelled") == [
        "JobreaperKillDue",
        "JobreaperKillCancelled",
    ]
    for name in ("shown", "cancelled"):
        metadata = [w for w in system.job_annotation_writes() if w["objectRef"]["name"] == name]
        codes = [w["responseStatus"]["code"] for w in metadata]
        assert codes == [200, 200], (name, codes)
    assert writes_to(system, {pods["cancelled"].metadata.name, "cancelled"}) == []
