"""Helpers shared by the tests on the real stack: polling, manifests, topics."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.annotations import ENFORCE
from schemas.base import Message
from schemas.cloudevents import DecodeError
from schemas.commands import CommandIssued
from services.runtime.kafka import make_producer, read_topics_to_end
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames
from tests.integration.lossy_nodes import AVOID_LOSSY_NODES

T = TypeVar("T")
IMAGE = "registry.invalid/jobreaper/noop:1"  # kwok never pulls images


@contextlib.contextmanager
def one_process_at_a_time(what: str) -> Iterator[None]:
    """The block, in one test process at a time on this machine: pytest-xdist's
    workers each collect, so each would otherwise build the same tool at once."""
    path = Path(tempfile.gettempdir()) / f"jobreaper-tests-{what}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def eventually(
    what: str,
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 60,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` every ``interval`` s until it returns something truthy; fail after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def job_manifest(
    name: str,
    *,
    run: str = "1s",
    parallelism: int = 1,
    annotations: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
    pod_labels: dict[str, str] | None = None,
    active_deadline_seconds: int | None = None,
    node: str | None = None,
    backoff_limit: int = 0,
    enforce: str | None = "on",
    labels: dict[str, str] | None = None,
) -> client.V1Job:
    """A Job whose pods run ``run`` on kwok (a duration, or "never"), on ``node``, or
    on any node but the lossy ones.

    Opted in by its ``jobreaper.io/enforce`` label (``enforce``; None: no label, the
    Job is out of scope unless the config says otherwise), as users opt in."""
    pod_meta = {"pod-complete.stage.kwok.x-k8s.io/delay": run, **(pod_annotations or {})}
    job_labels = {**({ENFORCE: enforce} if enforce is not None else {}), **(labels or {})}
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations, labels=job_labels or None),
        spec=client.V1JobSpec(
            parallelism=parallelism,
            completions=parallelism,
            backoff_limit=backoff_limit,
            active_deadline_seconds=active_deadline_seconds,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=pod_meta, labels=pod_labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="main", image=IMAGE)],
                    restart_policy="Never",
                    node_selector={"kubernetes.io/hostname": node} if node else None,
                    affinity=None if node else AVOID_LOSSY_NODES,
                ),
            ),
        ),
    )


async def read_topic(bootstrap: str, topic: str) -> list[tuple[ConsumerRecord[bytes, bytes], Any]]:
    """Every record of ``topic`` so far with its decoded message (or the DecodeError).

    Retries for a while when Kafka does not answer (tests restart and pause it)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await _read_topic_once(bootstrap, topic)
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def _read_topic_once(
    bootstrap: str, topic: str
) -> list[tuple[ConsumerRecord[bytes, bytes], Any]]:
    out: list[tuple[ConsumerRecord[bytes, bytes], Any]] = []

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            message: Message | DecodeError = CODEC.decode(record.headers, record.value).message
        except DecodeError as exc:
            message = exc
        out.append((record, message))

    settings = KafkaSettings(bootstrap=bootstrap)
    await read_topics_to_end(settings, [topic], keep, client_id="test-reader")
    return out


async def messages(bootstrap: str, topic: str) -> list[Any]:
    return [message for _, message in await read_topic(bootstrap, topic)]


@contextlib.contextmanager
def kafka_paused(stack_dir: Path) -> Iterator[None]:
    """Freeze the stack's Kafka broker (SIGSTOP): clients see a dead broker, no clean
    close. It resumes (SIGCONT) when the block ends."""
    record = json.loads((stack_dir / "run" / "kafka.pid").read_text())
    pid = int(record["pid"])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"kafka.Kafka" in cmdline, f"pid {pid} is not the stack's Kafka broker"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


EXECUTOR_USER_AGENT = "jobreaper-executor/"


def _audit_events_of(audit_log: Path, namespace: str) -> list[dict[str, Any]]:
    """The audit events that mention ``namespace``, parsed. The shared stack's log
    grows to 100 MB and more: parsing only lines that name the test's own
    namespace (a unique name) is the same answer, many times faster."""
    quoted = f'"{namespace}"'
    events: list[dict[str, Any]] = []
    with audit_log.open() as f:
        for line in f:
            if quoted in line:
                events.append(json.loads(line))
    return events


def pod_writes(audit_log: Path | None, namespace: str) -> list[dict[str, Any]]:
    """Pod patches and deletes jobreaper's executor sent, per the API server's audit log."""
    assert audit_log is not None, "these tests need the stack's audit log"
    return [
        e
        for e in _audit_events_of(audit_log, namespace)
        if e.get("verb") in ("patch", "delete")
        and e.get("stage") == "ResponseComplete"
        and e.get("objectRef", {}).get("resource") == "pods"
        and not e.get("objectRef", {}).get("subresource")
        and e.get("objectRef", {}).get("namespace") == namespace
        and str(e.get("userAgent", "")).startswith(EXECUTOR_USER_AGENT)
    ]


def step_of(write: dict[str, Any]) -> str:
    """The ladder step an executor pod write was, per the API server's audit log: a
    patch is the deadline, a delete with grace period 0 the force deletion."""
    if write["verb"] == "patch":
        return "set-active-deadline"
    body = write.get("requestObject")
    grace = body.get("gracePeriodSeconds") if isinstance(body, dict) else None
    return "force-delete" if grace == 0 else "delete"


def job_status_writes(audit_log: Path | None, namespace: str) -> list[dict[str, Any]]:
    """Job status patches (``fail-job``) the executor sent, per the API server's audit log."""
    return _executor_job_patches(audit_log, namespace, "status")


def _executor_job_patches(
    audit_log: Path | None, namespace: str, subresource: str | None
) -> list[dict[str, Any]]:
    assert audit_log is not None, "these tests need the stack's audit log"
    return [
        e
        for e in _audit_events_of(audit_log, namespace)
        if e.get("verb") == "patch"
        and e.get("stage") == "ResponseComplete"
        and e.get("objectRef", {}).get("resource") == "jobs"
        and e.get("objectRef", {}).get("subresource") == subresource
        and e.get("objectRef", {}).get("namespace") == namespace
        and str(e.get("userAgent", "")).startswith(EXECUTOR_USER_AGENT)
    ]


def issued(messages: list[Any], *, shows: bool = False) -> list[CommandIssued]:
    """The commands among ``messages``; ``annotate-job`` (what a Job shows of its kill,
    issued when a kill time is set and when the kill ended: its timing is the
    tests' business only where they look at it) only with ``shows``."""
    return [
        m for m in messages if isinstance(m, CommandIssued) and (shows or m.step != "annotate-job")
    ]


def job_metadata_writes(audit_log: Path | None, namespace: str) -> list[dict[str, Any]]:
    """Job patches (not of its status: ``annotate-job``, what a Job shows of its kill)
    the executor sent, per the API server's audit log."""
    return _executor_job_patches(audit_log, namespace, None)


def pod_creations(audit_log: Path | None, namespace: str) -> list[dict[str, Any]]:
    """Every accepted pod creation in ``namespace`` (the Job controller's), per the audit log."""
    assert audit_log is not None, "these tests need the stack's audit log"
    return [
        e
        for e in _audit_events_of(audit_log, namespace)
        if e.get("verb") == "create"
        and e.get("stage") == "ResponseComplete"
        and e.get("objectRef", {}).get("resource") == "pods"
        and not e.get("objectRef", {}).get("subresource")
        and e.get("objectRef", {}).get("namespace") == namespace
        and 200 <= int(e.get("responseStatus", {}).get("code", 0)) < 300
    ]


async def create_namespace(core: client.CoreV1Api, name: str, *, timeout: float = 30) -> None:
    """Create namespace ``name`` and wait for its ``default`` ServiceAccount (pods
    cannot be created before it exists)."""
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + timeout
    while not (await core.list_namespaced_service_account(name)).items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name}: no default ServiceAccount after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def service_account_kubeconfig(
    kube_api: client.ApiClient, stack: StackInfo, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig at ``path`` that authenticates as an existing ServiceAccount
    (a TokenRequest token, 10 minutes): what a pod of that account gets."""
    token = await client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        account,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token.status.token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
                "current-context": "c",
            }
        )
    )
    return path


async def publish(kafka: KafkaSettings, *messages: Message, source: str = "/test") -> None:
    """Write messages to their topics under ``kafka``'s prefix, keyed as services
    key them, in order; returns once every one is acknowledged."""
    names = TopicNames(kafka.topic_prefix)
    producer = make_producer(kafka, client_id="test-publish")
    await producer.start()
    try:
        sent = []
        for message in messages:
            record = outgoing(names, message, source=source)
            sent.append(
                await producer.send(
                    record.topic, record.value, key=record.key, headers=record.headers
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
