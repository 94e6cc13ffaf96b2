"""The executor on the real stack: commands applied to kube-apiserver exactly once.

API calls are counted from the API server's audit log (``stack.audit_log``),
by the executor's User-Agent, never from the executor's own logs or results.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from devtools.stack.api import StackInfo
from devtools.stack.audit_log import read_audit_events
from schemas.commands import CommandApplied, CommandIssued
from services.executor.apply import Answer, PodView, Write, describe, plan
from services.executor.service import Executor
from services.executor.settings import ExecutorSettings
from services.executor.transport import kube_transport
from services.runtime.kafka import (
    DEADLETTER_REASON_HEADER,
    ensure_topics,
    make_producer,
)
from services.runtime.kube import load_api_client, request_json
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames
from tests.integration.helpers import (
    EXECUTOR_USER_AGENT,
    IMAGE,
    eventually,
    job_manifest,
    messages,
    pod_writes,
    publish,
    read_topic,
)
from tests.integration.lossy_nodes import AVOID_LOSSY_NODES, ReservedNodeLoss

pytestmark = pytest.mark.stack

PARTITIONS = 3


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def kafka(stack: StackInfo, topic_prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix, job_partitions=PARTITIONS
    )


@pytest.fixture
def group() -> str:
    return f"executor-{uuid.uuid4().hex[:8]}"


class Running:
    def __init__(self, executor: Executor, task: asyncio.Task[None]) -> None:
        self.executor = executor
        self.task = task

    async def stop(self) -> None:
        self.executor.stop()
        await asyncio.wait_for(self.task, 60)


@pytest_asyncio.fixture(loop_scope="session")
async def start_executor(stack: StackInfo, kafka: KafkaSettings, group: str) -> AsyncIterator[Any]:
    """``await start_executor(identity)``: an in-process executor on the test's topics."""
    running: list[Running] = []
    await ensure_topics(kafka, job_partitions=PARTITIONS)

    async def start(identity: str = "e1", *, wait_ready: bool = True) -> Running:
        api = await load_api_client(str(stack.kubeconfig))
        executor = Executor(
            api,
            kafka,
            ExecutorSettings(group_id=group, identity=identity, session_timeout_ms=6000),
        )
        task = asyncio.create_task(executor.run())
        task.add_done_callback(lambda _: asyncio.ensure_future(api.close()))
        handle = Running(executor, task)
        running.append(handle)
        if wait_ready:
            await eventually("executor ready", lambda: _ready(handle), timeout=60)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.stop()


async def _ready(handle: Running) -> bool:
    if handle.task.done():
        handle.task.result()
        raise AssertionError("the executor stopped by itself")
    return handle.executor.readiness()[0]


def command_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def make_command(
    step: str,
    namespace: str,
    job: str,
    pod: str,
    uid: str,
    *,
    value: int | None = None,
    grace: int | None = None,
    cid: str | None = None,
    job_uid: str | None = None,
    version: str | None = None,
) -> CommandIssued:
    """A command as the killer issues it; ``job_uid`` None: a pod found by its label
    only (no controller), which the executor refuses on a pod its Job controls."""
    now = datetime.now(UTC)
    rules = {
        "set-active-deadline": "ladder.active-deadline",
        "delete": "ladder.delete-after-timeout",
        "force-delete": "ladder.force-delete",
    }
    return CommandIssued(
        command_id=cid or command_id(namespace, pod, uid, step, uuid.uuid4().hex),
        step=step,
        namespace=namespace,
        job_name=job,
        job_uid=job_uid,
        pod_name=pod,
        pod_uid=uid,
        pod_resource_version=version,
        active_deadline_seconds=value,
        grace_period_seconds=grace,
        trigger="Killed",
        reason="Killed",
        rule=rules[step],
        config_version=0,
        due_at=now,
        decided_at=now,
    )


async def produce_raw(
    kafka: KafkaSettings, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = make_producer(kafka, client_id="test-poison")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{kafka.topic_prefix}kill.commands", value, key=key, headers=headers
        )
    finally:
        await producer.stop()


async def results(kafka: KafkaSettings) -> list[CommandApplied]:
    return [
        m
        for m in await messages(kafka.bootstrap, f"{kafka.topic_prefix}kill.results")
        if isinstance(m, CommandApplied)
    ]


async def wait_results(
    kafka: KafkaSettings, ids: set[str], *, timeout: float = 60
) -> dict[str, CommandApplied]:
    async def probe() -> dict[str, CommandApplied] | None:
        got = {r.command_id: r for r in await results(kafka) if r.command_id in ids}
        return got if set(got) == ids else None

    return await eventually(f"results of {len(ids)} commands", probe, timeout=timeout)


def executor_writes(stack: StackInfo, namespace: str) -> list[dict[str, Any]]:
    """Pod patches and deletes the executor sent, per the API server's audit log."""
    return pod_writes(stack.audit_log, namespace)


def writes_per_pod(stack: StackInfo, namespace: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in executor_writes(stack, namespace):
        out.setdefault(event["objectRef"]["name"], []).append(event)
    return out


IGNORE_DEADLINE = {"jobreaper.test/ignore-deadline": "true"}


async def apply(kafka: KafkaSettings, command: CommandIssued) -> CommandApplied:
    """Send one command and wait for its result."""
    await publish(kafka, command)
    return (await wait_results(kafka, {command.command_id}))[command.command_id]


async def job_pods(
    kube_api: client.ApiClient,
    namespace: str,
    job: str,
    count: int = 1,
    *,
    node: str | None = None,
    annotations: dict[str, str] | None = None,
    backoff_limit: int = 0,
) -> list[tuple[str, str]]:
    """Create a Job of ``count`` never-ending pods; (name, uid) of them once they run."""
    manifest = job_manifest(
        job, run="never", parallelism=count, node=node, pod_annotations=annotations or {}
    )
    manifest.spec.backoff_limit = backoff_limit
    await client.BatchV1Api(kube_api).create_namespaced_job(namespace, manifest)
    core = client.CoreV1Api(kube_api)

    async def probe() -> list[tuple[str, str]] | None:
        pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
        up = [
            (p.metadata.name, p.metadata.uid)
            for p in pods.items
            if p.status.phase == "Running" and p.status.start_time is not None
        ]
        return sorted(up) if len(up) >= count else None

    return await eventually(f"{count} running pods of {job}", probe)


async def job_uid(kube_api: client.ApiClient, namespace: str, job: str) -> str:
    """The Job's uid: the killer's commands carry it (from the pod's owner reference)."""
    uid: str = (await client.BatchV1Api(kube_api).read_namespaced_job(job, namespace)).metadata.uid
    return uid


async def read_pod(kube_api: client.ApiClient, namespace: str, name: str) -> Any:
    try:
        return await client.CoreV1Api(kube_api).read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


async def k8s_events(kube_api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    body = await request_json(
        kube_api, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    )
    items: list[dict[str, Any]] = orjson.loads(body)["items"]
    return [e for e in items if e.get("reportingController") == "jobreaper.io/executor"]


def bare_pod(name: str, annotations: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image=IMAGE)],
            restart_policy="Never",
            affinity=AVOID_LOSSY_NODES,
        ),
    )


# -- the API server's side of the preconditions ----------------------------------------------


async def test_preconditions_hold_on_the_real_api_server(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    """The writes :func:`plan` builds are refused for another pod under the same name."""
    core = client.CoreV1Api(kube_api)
    created = await core.create_namespaced_pod(namespace, bare_pod("twin"))
    transport = kube_transport(kube_api)

    async def send(cmd: CommandIssued, seen_uid: str) -> int:
        write = plan(cmd, PodView(uid=seen_uid))
        assert isinstance(write, Write)
        answer = await transport(write.verb, write.path, write.body, write.content_type, 10)
        return answer.status

    stale = str(uuid.uuid4())
    for step, expected in (("set-active-deadline", 422), ("delete", 409), ("force-delete", 409)):
        cmd = make_command(step, namespace, "job", "twin", stale, value=5)
        assert await send(cmd, stale) == expected, step
    pod = await core.read_namespaced_pod("twin", namespace)
    uid = pod.metadata.uid
    assert uid == created.metadata.uid
    assert pod.metadata.deletion_timestamp is None
    assert pod.spec.active_deadline_seconds is None
    # The API server never lets the value go up either.
    lower = make_command("set-active-deadline", namespace, "job", "twin", uid, value=50)
    assert await send(lower, uid) == 200
    higher = make_command("set-active-deadline", namespace, "job", "twin", uid, value=90)
    assert await send(higher, uid) == 422


async def test_owner_tests_hold_on_the_real_api_server(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str
) -> None:
    """The unread patch's ``test`` ops on the controller owner reference: the API server
    refuses the patch (422, nothing written) unless they name the pod's own Job."""
    [(theirs, theirs_uid)] = await job_pods(kube_api, namespace, "theirs", backoff_limit=6)
    await job_pods(kube_api, namespace, "mine", backoff_limit=6)
    mine_job = await job_uid(kube_api, namespace, "mine")
    theirs_job = await job_uid(kube_api, namespace, "theirs")
    core = client.CoreV1Api(kube_api)
    bare = await core.create_namespaced_pod(namespace, bare_pod("bare"))
    transport = kube_transport(kube_api)

    async def patch(job: str, pod: str, uid: str, owner: str) -> Answer:
        cmd = make_command("set-active-deadline", namespace, job, pod, uid, value=50, job_uid=owner)
        write = plan(cmd, PodView(uid=uid, controller_index=0))
        assert isinstance(write, Write)
        assert {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": owner} in (
            write.body
        )
        return await transport(write.verb, write.path, write.body, write.content_type, 10)

    refused = {
        "another Job": await patch("mine", theirs, theirs_uid, mine_job),
        "the Job's name, another uid": await patch("theirs", theirs, theirs_uid, mine_job),
        "the Job's uid, another name": await patch("mine", theirs, theirs_uid, theirs_job),
        "no owner reference at all": await patch("theirs", "bare", bare.metadata.uid, theirs_job),
    }
    for case, answer in refused.items():
        print(f"{case}: {describe(answer)}")
        assert answer.status == 422, (case, describe(answer))
    for name in (theirs, "bare"):
        assert (await read_pod(kube_api, namespace, name)).spec.active_deadline_seconds is None
    accepted = await patch("theirs", theirs, theirs_uid, theirs_job)
    assert accepted.status == 200, describe(accepted)
    assert (await read_pod(kube_api, namespace, theirs)).spec.active_deadline_seconds == 50


# -- the steps -----------------------------------------------------------------------------------


async def test_set_active_deadline_makes_the_pod_fail_and_is_never_raised(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
) -> None:
    [(pod, uid)] = await job_pods(kube_api, namespace, "sad")
    owner = await job_uid(kube_api, namespace, "sad")
    await start_executor()
    first = make_command("set-active-deadline", namespace, "sad", pod, uid, value=1, job_uid=owner)
    result = await apply(kafka, first)
    assert (result.outcome, result.http_status) == ("applied", 200)
    assert result.applied_at >= first.due_at

    async def failed_on_deadline() -> bool:
        p = await read_pod(kube_api, namespace, pod)
        return (
            p is not None and p.status.phase == "Failed" and p.status.reason == "DeadlineExceeded"
        )

    await eventually("kwok fails the pod on its new deadline", failed_on_deadline)

    higher = make_command(
        "set-active-deadline", namespace, "sad", pod, uid, value=3600, job_uid=owner
    )
    second = await apply(kafka, higher)
    assert second.outcome == "applied"
    assert "already 1 <= 3600" in second.message
    p = await read_pod(kube_api, namespace, pod)
    assert p.spec.active_deadline_seconds == 1, "never raised"

    await asyncio.sleep(1)  # an audit event may land just after its response
    writes = executor_writes(stack, namespace)
    assert [(w["verb"], w["objectRef"]["name"]) for w in writes] == [("patch", pod)]
    assert writes[0]["requestObject"][0] == {"op": "test", "path": "/metadata/uid", "value": uid}
    assert writes[0]["requestObject"][1]["path"] == "/metadata/resourceVersion"

    async def story() -> list[dict[str, Any]] | None:
        events = [
            e
            for e in await k8s_events(kube_api, namespace)
            if e["reason"] == "JobreaperActiveDeadlineSet" and first.command_id in e["note"]
        ]
        return events if {e["regarding"]["kind"] for e in events} == {"Pod", "Job"} else None

    events = await eventually("Events on the pod and on its Job", story)
    for event in events:
        assert event["action"] == "set-active-deadline"
        assert first.command_id in event["note"] and "ladder.active-deadline" in event["note"]
    job_event = next(e for e in events if e["regarding"]["kind"] == "Job")
    assert job_event["regarding"]["name"] == "sad"
    assert job_event["regarding"].get("uid"), "the Job's uid, from the pod's owner reference"


async def test_delete_uses_the_uid_precondition_and_the_pods_own_grace_period(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
) -> None:
    [(pod, uid)] = await job_pods(kube_api, namespace, "del")
    owner = await job_uid(kube_api, namespace, "del")
    await start_executor()
    cmd = make_command("delete", namespace, "del", pod, uid, job_uid=owner)
    result = await apply(kafka, cmd)
    assert (result.outcome, result.http_status) == ("applied", 200)
    await eventually("the pod is gone", lambda: _gone(kube_api, namespace, pod))
    await asyncio.sleep(1)
    writes = executor_writes(stack, namespace)
    assert len(writes) == 1
    options = writes[0]["requestObject"]
    assert writes[0]["verb"] == "delete"
    assert options["preconditions"]["uid"] == uid
    assert options["preconditions"]["resourceVersion"], "conditional on the version read"
    assert "gracePeriodSeconds" not in options
    assert writes[0]["responseStatus"]["code"] == 200


async def _gone(kube_api: client.ApiClient, namespace: str, pod: str) -> bool:
    return await read_pod(kube_api, namespace, pod) is None


async def test_force_delete_removes_a_pod_stuck_on_a_lost_node(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
    node_loss: ReservedNodeLoss,
) -> None:
    node = node_loss.reserved
    [(pod, uid)] = await job_pods(kube_api, namespace, "stuck", node=node)
    owner = await job_uid(kube_api, namespace, "stuck")
    await asyncio.to_thread(node_loss.lose, node)
    await start_executor()

    graceful = make_command("delete", namespace, "stuck", pod, uid, job_uid=owner)
    assert (await apply(kafka, graceful)).outcome == "applied"
    await asyncio.sleep(2)
    p = await read_pod(kube_api, namespace, pod)
    assert p is not None and p.metadata.deletion_timestamp is not None, "stuck Terminating"

    # Another delete finds it already being deleted: nothing sent.
    again = make_command("delete", namespace, "stuck", pod, uid, job_uid=owner)
    second = await apply(kafka, again)
    assert second.outcome == "applied" and "no second delete" in second.message

    force = make_command("force-delete", namespace, "stuck", pod, uid, grace=0, job_uid=owner)
    forced = await apply(kafka, force)
    assert (forced.outcome, forced.http_status) == ("applied", 200)
    await eventually("the force-deleted pod is gone", lambda: _gone(kube_api, namespace, pod))
    await asyncio.sleep(1)
    writes = executor_writes(stack, namespace)
    assert [w["requestObject"].get("gracePeriodSeconds") for w in writes] == [None, 0]
    assert all(w["requestObject"]["preconditions"]["uid"] == uid for w in writes)

    events = await eventually(
        "a JobreaperForceDeleted Event",
        lambda: _events_with(kube_api, namespace, "JobreaperForceDeleted"),
    )
    assert all(e["type"] == "Warning" for e in events)


async def _events_with(
    kube_api: client.ApiClient, namespace: str, reason: str
) -> list[dict[str, Any]] | None:
    events = [e for e in await k8s_events(kube_api, namespace) if e["reason"] == reason]
    return events or None


async def test_a_pod_recreated_under_the_same_name_is_not_touched(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
) -> None:
    core = client.CoreV1Api(kube_api)
    old = await core.create_namespaced_pod(namespace, bare_pod("reborn"))
    await core.delete_namespaced_pod("reborn", namespace, grace_period_seconds=0)
    await eventually("the old pod gone", lambda: _gone(kube_api, namespace, "reborn"))
    new = await core.create_namespaced_pod(namespace, bare_pod("reborn"))
    assert new.metadata.uid != old.metadata.uid
    await start_executor()
    stale = [
        make_command("set-active-deadline", namespace, "job", "reborn", old.metadata.uid, value=1),
        make_command("delete", namespace, "job", "reborn", old.metadata.uid),
        make_command("force-delete", namespace, "job", "reborn", old.metadata.uid, grace=0),
    ]
    await publish(kafka, *stale)
    got = await wait_results(kafka, {c.command_id for c in stale})
    assert {r.outcome for r in got.values()} == {"uid-mismatch"}
    p = await read_pod(kube_api, namespace, "reborn")
    assert p.metadata.uid == new.metadata.uid
    assert p.metadata.deletion_timestamp is None and p.spec.active_deadline_seconds is None
    await asyncio.sleep(1)
    assert executor_writes(stack, namespace) == []


async def test_a_missing_pod_is_gone_without_a_write(
    stack: StackInfo, namespace: str, kafka: KafkaSettings, start_executor: Any
) -> None:
    await start_executor()
    cmds = [
        make_command(step, namespace, "ghost", "ghost-x", str(uuid.uuid4()), value=1)
        for step in ("set-active-deadline", "delete", "force-delete")
    ]
    await publish(kafka, *cmds)
    got = await wait_results(kafka, {c.command_id for c in cmds})
    assert {(r.outcome, r.http_status) for r in got.values()} == {("gone", 404)}
    await asyncio.sleep(1)
    assert executor_writes(stack, namespace) == []


# -- trust: what the executor refuses ---------------------------------------------------------


def executor_requests(stack: StackInfo, namespace: str, pod: str) -> list[dict[str, Any]]:
    """Every request the executor made on one pod (reads included), per the audit log."""
    assert stack.audit_log is not None
    return [
        e
        for e in read_audit_events(stack.audit_log)
        if e.get("stage") == "ResponseComplete"
        and e.get("objectRef", {}).get("resource") == "pods"
        and e.get("objectRef", {}).get("namespace") == namespace
        and e.get("objectRef", {}).get("name") == pod
        and str(e.get("userAgent", "")).startswith(EXECUTOR_USER_AGENT)
    ]


async def test_a_command_naming_another_jobs_pod_is_refused_and_writes_nothing(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
) -> None:
    """Commands naming Job ``mine`` but a pod of Job ``theirs`` (same namespace, both
    running on kwok): read, refused, and never written, per the API server's audit log."""
    [(mine, mine_uid)] = await job_pods(kube_api, namespace, "mine", backoff_limit=6)
    [(theirs, theirs_uid)] = await job_pods(kube_api, namespace, "theirs", backoff_limit=6)
    mine_job = await job_uid(kube_api, namespace, "mine")
    before = await read_pod(kube_api, namespace, theirs)
    handle = await start_executor()

    def forge(step: str, **kw: Any) -> CommandIssued:
        return make_command(step, namespace, "mine", theirs, theirs_uid, value=1, grace=0, **kw)

    unread = forge(
        "set-active-deadline", job_uid=mine_job, version=before.metadata.resource_version
    )
    forged = [
        unread,  # its uid and version are right: only the owner tests stop it
        forge("set-active-deadline", job_uid=mine_job),
        forge("delete", job_uid=mine_job),
        forge("force-delete", job_uid=mine_job),
        forge("delete"),  # no Job uid: only an orphan labelled "mine" may be touched
    ]
    # A path that would resolve to the pod of "theirs" if it were sent: never sent.
    traversal = make_command(
        "delete", namespace, "mine", f"x/../{theirs}", theirs_uid, job_uid=mine_job
    )
    control = make_command(
        "set-active-deadline", namespace, "mine", mine, mine_uid, value=3600, job_uid=mine_job
    )
    await publish(kafka, *forged, traversal, control)
    got = await wait_results(kafka, {c.command_id for c in [*forged, traversal, control]})

    for cmd in forged:
        result = got[cmd.command_id]
        assert (result.outcome, result.wrote) == ("refused", False), result
        assert result.message.startswith(f"refused, not written: pod {namespace}/{theirs} ")
        assert "Job 'theirs'" in result.message, result.message
    assert got[traversal.command_id].outcome == "refused"
    assert got[traversal.command_id].attempts == 0
    assert "pod name 'x/../" in got[traversal.command_id].message
    assert (got[control.command_id].outcome, got[control.command_id].wrote) == ("applied", True)

    await asyncio.sleep(1)  # an audit event may land just after its response
    on_theirs = executor_requests(stack, namespace, theirs)
    writes = [e for e in on_theirs if e["verb"] != "get"]
    # One request that could have written: the unread patch, refused by its owner test.
    assert [(w["verb"], w["responseStatus"]["code"]) for w in writes] == [("patch", 422)]
    assert {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": mine_job} in (
        writes[0]["requestObject"]
    )
    # Each forged command read the pod once (the unread one after its refusal); the
    # traversal made no request at all.
    assert [e["verb"] for e in on_theirs].count("get") == len(forged)
    # (sorted: distinct pods' commands are applied concurrently, in no set order)
    assert sorted(
        (w["verb"], w["responseStatus"]["code"]) for w in executor_writes(stack, namespace)
    ) == [
        ("patch", 200),
        ("patch", 422),
    ]
    after = await read_pod(kube_api, namespace, theirs)
    assert after.metadata.uid == theirs_uid
    assert after.metadata.deletion_timestamp is None
    assert after.spec.active_deadline_seconds is None

    registry = handle.executor.registry

    async def counted() -> bool:
        value: float | None = registry.get_sample_value(
            "jobreaper_executor_refused_total", {"reason": "not-owned"}
        )
        return value == len(forged)

    await eventually("the refusals counted", counted)
    assert (
        registry.get_sample_value(
            "jobreaper_executor_refused_total", {"reason": "invalid-pod-name"}
        )
        == 1
    )
    # Events tell the control's story, none about the pod of "theirs".
    await eventually(
        "the control's Events",
        lambda: _events_with(kube_api, namespace, "JobreaperActiveDeadlineSet"),
    )
    events = await k8s_events(kube_api, namespace)
    assert all(e["regarding"]["name"] in (mine, "mine") for e in events), events


# -- once only --------------------------------------------------------------------------------


async def test_a_duplicate_command_id_is_applied_once_also_after_a_restart(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
) -> None:
    [(pod, uid)] = await job_pods(kube_api, namespace, "dup", annotations=IGNORE_DEADLINE)
    owner = await job_uid(kube_api, namespace, "dup")
    cmd = make_command("set-active-deadline", namespace, "dup", pod, uid, value=5, job_uid=owner)
    first = await start_executor("e1")
    await publish(kafka, cmd, cmd)  # the killer issued it twice
    await wait_results(kafka, {cmd.command_id})
    await first.stop()
    # The killer restarts and issues it again; so does a fresh executor read it.
    marker = make_command("delete", namespace, "dup", "no-such-pod", str(uuid.uuid4()))
    await publish(kafka, cmd, marker)
    await start_executor("e2")
    await wait_results(kafka, {marker.command_id})
    mine = [r for r in await results(kafka) if r.command_id == cmd.command_id]
    assert len(mine) == 1, "one result per command id"
    await asyncio.sleep(1)
    assert len(executor_writes(stack, namespace)) == 1, "one patch, per the audit log"


async def test_poison_records_are_dead_lettered_and_processing_goes_on(
    stack: StackInfo, namespace: str, kafka: KafkaSettings, start_executor: Any
) -> None:
    await start_executor()
    key = f"{namespace}/poisoned".encode()
    await produce_raw(kafka, key, b"{not json", [("ce_type", b"io.jobreaper.command.issued.v1")])
    wrong = CommandApplied(
        command_id="x",
        step="delete",
        namespace=namespace,
        job_name="poisoned",
        pod_name="p",
        pod_uid="u",
        outcome="applied",
        applied_at=datetime.now(UTC),
    )
    record = outgoing(TopicNames(kafka.topic_prefix), wrong, source="/test")
    await produce_raw(kafka, key, record.value, record.headers)
    after = make_command("delete", namespace, "poisoned", "p", str(uuid.uuid4()))
    await publish(kafka, after)
    assert (await wait_results(kafka, {after.command_id}))[after.command_id].outcome == "gone"
    dead = await read_topic(stack.kafka_bootstrap, f"{kafka.topic_prefix}deadletter")
    reasons = sorted(dict(r.headers)[DEADLETTER_REASON_HEADER].decode() for r, _ in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("missing-header")
    assert reasons[1].startswith(
        "wrong-topic: io.jobreaper.command.applied.v1 belongs on kill.results, not on kill.commands"
    )
    assert any(r.value == b"{not json" for r, _ in dead), "kept byte for byte"


async def test_two_executors_share_the_partitions_and_apply_each_command_once(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    start_executor: Any,
) -> None:
    jobs = [f"share-{i}" for i in range(6)]
    pods = {
        job: await job_pods(kube_api, namespace, job, 3, annotations=IGNORE_DEADLINE)
        for job in jobs
    }
    owners = {job: await job_uid(kube_api, namespace, job) for job in jobs}
    rounds = [
        [
            make_command(
                "set-active-deadline",
                namespace,
                job,
                name,
                uid,
                value=100 - r,
                job_uid=owners[job],
            )
            for job in jobs
            for name, uid in pods[job]
        ]
        for r in range(3)
    ]
    a = await start_executor("a")
    await publish(kafka, *rounds[0])
    b = await start_executor("b", wait_ready=False)  # a rebalance while commands flow
    await publish(kafka, *rounds[1])
    await eventually("both ready", lambda: _both_ready(a, b))
    owned = [len(a.executor.workers), len(b.executor.workers)]
    assert sum(owned) == PARTITIONS and 0 not in owned
    await a.stop()  # b takes every partition over
    await publish(kafka, *rounds[2])
    ids = {c.command_id for r in rounds for c in r}
    await wait_results(kafka, ids)
    counted: dict[str, int] = {}
    for r in await results(kafka):
        counted[r.command_id] = counted.get(r.command_id, 0) + 1
    assert all(counted[i] == 1 for i in ids)
    await asyncio.sleep(1)
    per_pod = writes_per_pod(stack, namespace)
    # Each round lowers the value by one: three patches per pod, never more.
    assert {name: len(w) for name, w in per_pod.items()} == {
        name: 3 for job in jobs for name, _ in pods[job]
    }


async def _both_ready(a: Running, b: Running) -> bool:
    return a.executor.readiness()[0] and b.executor.readiness()[0]


# -- a crash between the API calls and the commit ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spawned(NamedTuple):
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@pytest.fixture
def spawn(stack: StackInfo, kafka: KafkaSettings, group: str) -> Iterator[Any]:
    """``spawn(identity, **env) -> Spawned``: ``python -m services executor run`` processes."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(identity: str, **extra: str) -> Spawned:
        port = _free_port()
        env = {
            **os.environ,
            "JOBREAPER_KUBECONFIG": str(stack.kubeconfig),
            "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "JOBREAPER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "JOBREAPER_KAFKA_JOB_PARTITIONS": str(PARTITIONS),
            "JOBREAPER_HTTP_PORT": str(port),
            "JOBREAPER_EXECUTOR_GROUP_ID": group,
            "JOBREAPER_EXECUTOR_IDENTITY": identity,
            "JOBREAPER_EXECUTOR_SESSION_TIMEOUT_MS": "6000",
            **extra,
        }
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{group}-{identity}.log"
        log = open(path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "executor", "run"], env=env, stdout=log, stderr=log
        )
        procs.append(proc)
        logs.append(log)
        return Spawned(proc, port, path)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


async def test_an_executor_killed_between_its_api_calls_and_its_commit_applies_each_command_once(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    spawn: Any,
) -> None:
    await ensure_topics(kafka, job_partitions=PARTITIONS)
    annotations = {
        "jobreaper.test/ignore-deadline": "true",
        "pod-delete.stage.kwok.x-k8s.io/delay": "1h",  # deleted pods stay Terminating
    }
    jobs = [f"crash-{i}" for i in range(4)]
    commands: list[CommandIssued] = []
    for i, job in enumerate(jobs):
        for name, uid in await job_pods(kube_api, namespace, job, 3, annotations=annotations):
            step = "delete" if i % 2 else "set-active-deadline"
            owner = await job_uid(kube_api, namespace, job)
            commands.append(make_command(step, namespace, job, name, uid, value=7, job_uid=owner))
    await publish(kafka, *commands)

    # The first executor applies everything, then waits 20 s before committing: killed there.
    first = spawn("doomed", JOBREAPER_EXECUTOR_COMMIT_DELAY_S="20").proc

    async def all_written() -> bool:
        return len(executor_writes(stack, namespace)) >= len(commands)

    await eventually("every command applied by the first executor", all_written, timeout=90)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert await results(kafka) == [], "killed before any commit"

    port = spawn("survivor").port
    got = await wait_results(kafka, {c.command_id for c in commands}, timeout=120)
    counted: dict[str, int] = {}
    for r in await results(kafka):
        counted[r.command_id] = counted.get(r.command_id, 0) + 1
    assert set(counted.values()) == {1}, "one result per command"
    for cmd in commands:
        result = got[cmd.command_id]
        assert result.outcome == "applied", result
        # The survivor found each effect already there (its GET), and wrote nothing.
        assert "already" in result.message, result.message
    await asyncio.sleep(1)
    per_pod = writes_per_pod(stack, namespace)
    assert {name: len(w) for name, w in per_pod.items()} == {c.pod_name: 1 for c in commands}
    for pod in (await client.CoreV1Api(kube_api).list_namespaced_pod(namespace)).items:
        if pod.spec.active_deadline_seconds is not None:
            assert pod.spec.active_deadline_seconds == 7

    status, ready = await _get(port, "/readyz")
    assert status == 200 and ready.startswith("ready: 3 partitions"), ready
    _, metrics = await _get(port, "/metrics")
    samples = _samples(metrics)
    assert samples['jobreaper_executor_commands_total{outcome="applied",step="delete"}'] == 6
    assert (
        samples['jobreaper_executor_commands_total{outcome="applied",step="set-active-deadline"}']
        == 6
    )
    assert not any(k.startswith("jobreaper_executor_writes_total{") for k in samples)
    assert samples['jobreaper_executor_kill_latency_seconds_count{step="delete"}'] == 6
    # Where the latency went, per command applied (redelivered ones included).
    assert samples["jobreaper_executor_command_delivery_seconds_count"] == 12
    assert samples['jobreaper_executor_apply_seconds_count{step="delete"}'] == 6
    assert samples["jobreaper_executor_commit_seconds_count"] >= 1


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_a_fenced_zombie_commits_nothing(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    kafka: KafkaSettings,
    spawn: Any,
) -> None:
    """A frozen executor loses its partitions; on waking its commit is fenced, not applied."""
    await ensure_topics(kafka, job_partitions=PARTITIONS)
    pods = await job_pods(kube_api, namespace, "zombie", 4, annotations=IGNORE_DEADLINE)
    owner = await job_uid(kube_api, namespace, "zombie")
    commands = [
        make_command("set-active-deadline", namespace, "zombie", name, uid, value=9, job_uid=owner)
        for name, uid in pods
    ]
    await publish(kafka, *commands)
    # Its commit waits 20 s: time enough for the audit log to show its writes and the
    # test to freeze it before it commits, on a loaded machine too (5 s was not).
    zombie = spawn("zombie", JOBREAPER_EXECUTOR_COMMIT_DELAY_S="20")

    async def all_written() -> bool:
        return len(executor_writes(stack, namespace)) >= len(commands)

    await eventually("the zombie applies every command", all_written, timeout=90)
    zombie.proc.send_signal(signal.SIGSTOP)  # no heartbeats: its session expires, it does not know
    try:
        spawn("heir")
        await wait_results(kafka, {c.command_id for c in commands}, timeout=120)
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    # The zombie wakes up past its commit delay and tries to commit its batch.
    await eventually(
        "the zombie finds itself fenced", lambda: _log_has(zombie.log, "Fenced"), timeout=60
    )
    counted: dict[str, int] = {}
    for r in await results(kafka):
        counted[r.command_id] = counted.get(r.command_id, 0) + 1
    assert counted == {c.command_id: 1 for c in commands}
    await asyncio.sleep(1)
    assert {n: len(w) for n, w in writes_per_pod(stack, namespace).items()} == {
        c.pod_name: 1 for c in commands
    }


async def _log_has(path: Path, text: str) -> bool:
    return text in path.read_text(errors="replace")
