"""``kubectl jobreaper`` (the kubectl-jobreaper console script) on the real stack, with
jobreaper's services running: ``kill`` and ``cancel`` write the Job's
``jobreaper.io/kill-timestamp`` annotation (the API server's audit log shows the
plugin's patches of the Job, by its user agent; the stack's audit policy logs Jobs
at the Metadata level, so the value written is read from the Job itself; no Kafka
is involved), the Job is killed, or not; ``status``
reads the annotations, jobreaper's condition, the pods and the Events from the
cluster; a cancel after the kill started changes nothing (exit 3)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client
from typer.testing import CliRunner

from services.kubectl.cli import EXIT_TOO_LATE, USER_AGENT, app
from tests.e2e.harness import System
from tests.e2e.test_cancel import create, sleep_until
from tests.e2e.test_ladder import FAST, KILL_AT, assert_the_kill_ended_the_job
from tests.e2e.test_scope import writes_to
from tests.integration.helpers import _audit_events_of

pytestmark = pytest.mark.stack


async def plugin(system: System, *args: str, code: int = 0, kafka: bool = False) -> Any:
    """``kubectl jobreaper ...`` as kubectl runs it: only a kubeconfig, no Kafka
    (``kafka``: the stack's, for ``audit``)."""
    env = {"KUBECONFIG": str(system.stack.kubeconfig), "JOBREAPER_KAFKA_BOOTSTRAP": "0.0.0.0:9"}
    if kafka:
        env |= {
            "JOBREAPER_KAFKA_BOOTSTRAP": system.stack.kafka_bootstrap,
            "JOBREAPER_KAFKA_TOPIC_PREFIX": system.prefix,
        }
    done = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    assert done.exit_code == code, done.output
    return done


def annotation_writes(system: System, job: str) -> list[dict[str, Any]]:
    """The plugin's accepted patches of the Job, per the API server's audit log."""
    return [
        e
        for e in _audit_events_of(system.stack.audit_log, system.namespace)  # type: ignore[arg-type]
        if e.get("verb") == "patch"
        and e.get("stage") == "ResponseComplete"
        and e.get("objectRef", {}).get("resource") == "jobs"
        and e.get("objectRef", {}).get("name") == job
        and not e.get("objectRef", {}).get("subresource")
        and str(e.get("userAgent", "")).startswith(USER_AGENT)
        and 200 <= int(e.get("responseStatus", {}).get("code", 0)) < 300
    ]


async def kill_at_of(kube_api: client.ApiClient, namespace: str, job: str) -> str | None:
    found = await client.BatchV1Api(kube_api).read_namespaced_job(job, namespace)
    value: str | None = (found.metadata.annotations or {}).get(KILL_AT)
    return value


async def test_kill_now_through_the_plugin_kills_the_job_and_status_shows_it(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    await system.start(**FAST)
    await create(kube_api, namespace, "doomed")
    before = datetime.now(UTC)
    done = await plugin(system, "kill", f"{namespace}/doomed")
    assert "kill now: annotated jobreaper.io/kill-timestamp=" in done.stdout
    assert len(annotation_writes(system, "doomed")) == 1
    value = await kill_at_of(kube_api, namespace, "doomed")
    assert value is not None and value in done.stdout
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)

    killed = await system.job_killed("doomed", timeout=60)
    assert killed.trigger == "Killed"
    await assert_the_kill_ended_the_job(system, kube_api, namespace, "doomed")

    text = (await plugin(system, "status", f"{namespace}/doomed")).stdout
    assert f"jobreaper.io/kill-timestamp={value}" in text
    assert "FailureTarget=True JobReaperKilled" in text
    assert "JobreaperFailureTarget" in text, "jobreaper's Event on the Job"
    doc = json.loads(
        (await plugin(system, "status", "-n", namespace, "doomed", "-o", "json")).stdout
    )
    assert doc["started"] is True and doc["uid"]
    ours = {e["reason"] for e in doc["events"] if e["from_jobreaper"]}
    assert {"JobreaperFailureTarget", "JobreaperActiveDeadlineSet"} <= ours, ours
    assert doc["outputs"]["jobreaper.io/kill-state"] in ("killing", "killed"), doc["outputs"]
    assert doc["outputs"]["jobreaper.io/kill-trigger"] == "Killed"
    assert {c["reason"] for c in doc["conditions"] if c["type"] == "Failed"} == {"JobReaperKilled"}

    # Where Kafka is reachable, the whole timeline (jobreaper audit's, JSON here).
    audit = json.loads(
        (await plugin(system, "audit", f"{namespace}/doomed", "--json", kafka=True)).stdout
    )
    assert (audit["job"], audit["uid"]) == ("doomed", doc["uid"])
    assert "fail-job" in {step["step"] for step in audit["steps"]}, audit["steps"]

    # Too late: the kill started, a cancel writes nothing and says so.
    late = await plugin(system, "cancel", f"{namespace}/doomed", code=EXIT_TOO_LATE)
    assert "it is final" in late.output
    assert len(annotation_writes(system, "doomed")) == 1


async def test_a_kill_cancelled_through_the_plugin_does_not_happen(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    """Both Jobs get a kill time 10 s ahead through the plugin; one is cancelled: it
    is left running, untouched, while the other (the control) is killed."""
    await system.start(**FAST)
    pods = {name: await create(kube_api, namespace, name) for name in ("spared", "control")}
    for name in pods:
        await plugin(system, "kill", f"{namespace}/{name}", "--at", "+10s")
    status = (await plugin(system, "status", f"{namespace}/spared")).stdout
    assert "kill time set" in status or "kill due" in status, status
    value = await kill_at_of(kube_api, namespace, "spared")
    assert value is not None
    kill_at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    done = await plugin(system, "cancel", f"{namespace}/spared")
    assert "kill cancelled" in done.stdout
    assert len(annotation_writes(system, "spared")) == 2, "the annotation set, then removed"
    assert await kill_at_of(kube_api, namespace, "spared") is None
    again = await plugin(system, "cancel", f"{namespace}/spared")
    assert "no kill of yours to cancel" in again.stdout
    assert len(annotation_writes(system, "spared")) == 2, "nothing to remove: no write"

    await system.job_killed("control", timeout=60)
    await sleep_until(kill_at + timedelta(seconds=FAST["deleteKillingTasksTimeoutSeconds"] + 3))
    assert writes_to(system, {pods["spared"].metadata.name, "spared"}) == []
    steps = [c.step for c in await system.commands() if c.job_name == "spared"]
    assert set(steps) <= {"annotate-job"}, f"no kill step, only the kill-state shown: {steps}"
    left = await client.CoreV1Api(kube_api).read_namespaced_pod(
        pods["spared"].metadata.name, namespace
    )
    assert left.metadata.deletion_timestamp is None and left.status.phase == "Running"
    status = (await plugin(system, "status", f"{namespace}/spared")).stdout
    assert KILL_AT not in status.split("Outputs")[0], "the input is gone"
    assert "jobreaper.io/kill-state=cancelled" in status, status
    assert "Conditions set by jobreaper:\n  (none)" in status


async def test_the_plugin_says_what_is_wrong_in_one_line(system: System, namespace: str) -> None:
    missing = await plugin(system, "status", f"{namespace}/nope", code=4)
    assert "no such Job" in missing.output
    usage = await plugin(system, "kill", "nope", code=2)
    assert "NAMESPACE/NAME" in usage.output
    past = await plugin(system, "kill", f"{namespace}/x", "--at", "2020-01-01T00:00:00Z", code=2)
    assert "in the past" in past.output
    dry = await plugin(system, "kill", f"{namespace}/x", "--at", "+5m", "--dry-run")
    assert dry.stdout.startswith(f"kubectl annotate job -n {namespace} x {KILL_AT}=")
