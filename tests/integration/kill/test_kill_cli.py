"""``jobreaper kill`` on the real stack: what it publishes on kill.requests, and what it
refuses. (The killer acting on a request is covered by the killer's and e2e tests.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client
from typer.testing import CliRunner

from devtools.stack.api import StackInfo
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.requests import KillRequested
from services.cli import app
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS
from tests.integration.helpers import job_manifest, publish, read_topic

pytestmark = pytest.mark.stack


async def kill_cli(stack: StackInfo, prefix: str, *args: str) -> Any:
    env = {
        "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": prefix,
        "JOBREAPER_KUBECONFIG": str(stack.kubeconfig),
    }
    return await asyncio.to_thread(CliRunner().invoke, app, ["kill", *args], env=env)


async def requests(stack: StackInfo, prefix: str) -> list[tuple[Any, Any]]:
    return await read_topic(stack.kafka_bootstrap, f"{prefix}kill.requests")


async def test_kill_publishes_the_request_and_says_where_to_follow_it(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str, topic_prefix: str
) -> None:
    job = await client.BatchV1Api(kube_api).create_namespaced_job(
        namespace, job_manifest("etl", run="never")
    )
    before = datetime.now(UTC)
    done = await kill_cli(
        stack,
        topic_prefix,
        f"{namespace}/etl",
        "--at",
        "+5m",
        "--reason",
        "replaced by v2",
        "--by",
        "tester",
        "--uid",
        job.metadata.uid,
    )
    assert done.exit_code == 0, done.output
    assert "warning" not in done.stderr, "the Job exists and has this uid"
    (record, request), *rest = await requests(stack, topic_prefix)
    assert rest == []
    assert isinstance(request, KillRequested)
    assert (request.namespace, request.job_name, request.job_uid) == (
        namespace,
        "etl",
        job.metadata.uid,
    )
    assert (request.reason, request.requested_by) == ("replaced by v2", "tester")
    assert request.kill_at is not None
    assert (
        before + timedelta(minutes=5) <= request.kill_at <= datetime.now(UTC) + timedelta(minutes=5)
    )
    assert record.key == f"{namespace}/etl".encode()
    assert request.request_id in done.stdout
    assert f"jobreaper events --follow --namespace {namespace}" in done.stdout
    assert f"jobreaper audit {namespace}/etl" in done.stdout


async def test_a_missing_job_is_a_warning_and_a_bad_time_an_error(
    stack: StackInfo, namespace: str, topic_prefix: str
) -> None:
    missing = await kill_cli(stack, topic_prefix, f"{namespace}/ghost")
    assert missing.exit_code == 0, missing.output
    assert f"warning: no Job {namespace}/ghost in the cluster now" in missing.stderr
    ((_, request),) = await requests(stack, topic_prefix)
    assert request.kill_at is None, "no --at: now (requested_at)"

    for bad, message in [
        ("yesterday", "not a time"),
        ("2020-01-01T00:00:00Z", "in the past"),
        ("+5 minutes", "a relative time looks like"),
    ]:
        refused = await kill_cli(stack, topic_prefix, f"{namespace}/ghost", "--at", bad)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith("jobreaper: --at") and message in refused.stderr
        assert refused.stderr.count("\n") == 1, "one line"
    assert len(await requests(stack, topic_prefix)) == 1, "nothing more was published"


async def test_a_kill_further_ahead_than_half_the_retention_is_refused(
    stack: StackInfo, namespace: str, topic_prefix: str
) -> None:
    """kill.requests with a 60 s retention (as an operator might set a short one):
    +30s is accepted, +31s would outlive half of it and is refused, read from the
    topic's own config."""
    kafka = KafkaSettings(bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix)
    (spec,) = [replace(s, retention_ms=60_000) for s in TOPIC_SPECS if s.name == "kill.requests"]
    await ensure_topics(kafka, specs=[spec])
    far = await kill_cli(stack, topic_prefix, f"{namespace}/ghost", "--at", "+31s", "--no-check")
    assert far.exit_code == 2, far.output
    assert far.stderr.startswith("jobreaper: --at "), far.stderr
    assert "more than half the retention of kill.requests (60 s)" in far.stderr
    assert "jobreaper.io/kill-timestamp=" in far.stderr and far.stderr.count("\n") == 1
    assert await requests(stack, topic_prefix) == [], "nothing was published"
    near = await kill_cli(stack, topic_prefix, f"{namespace}/ghost", "--at", "+30s", "--no-check")
    assert near.exit_code == 0, near.output
    assert len(await requests(stack, topic_prefix)) == 1


async def test_a_job_out_of_scope_or_in_shadow_mode_is_a_warning(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str, topic_prefix: str
) -> None:
    """The scope as the killer would decide it: the Job's label and the newest config
    snapshot (none yet: the built-in ``enforce: off``). Published all the same."""
    batch = client.BatchV1Api(kube_api)
    await batch.create_namespaced_job(namespace, job_manifest("plain", run="never", enforce=None))
    await batch.create_namespaced_job(namespace, job_manifest("shadowed", enforce="shadow"))
    await batch.create_namespaced_job(namespace, job_manifest("opted", run="never", enforce="on"))

    async def warnings(job: str) -> str:
        done = await kill_cli(stack, topic_prefix, f"{namespace}/{job}", "--at", "+1h")
        assert done.exit_code == 0, done.output
        return str(done.stderr)

    out = await warnings("plain")
    assert f"warning: Job {namespace}/plain is out of jobreaper's scope" in out
    assert "no jobreaper.io/enforce label, the built-in config" in out
    assert f"kubectl label job -n {namespace} plain jobreaper.io/enforce=on" in out
    assert f"warning: Job {namespace}/shadowed is in shadow mode" in await warnings("shadowed")
    assert "warning" not in await warnings("opted")

    # The platform team switches everyone on, then pins this namespace off.
    kafka = KafkaSettings(bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(kafka, job_partitions=1)
    everyone = {"enforce": "on"}
    pinned = {**everyone, "overrides": {"namespaces": {namespace: {"enforce": "off"}}}}
    for version, config in ((1, everyone), (2, pinned)):
        snapshot = ConfigSnapshot(
            version=version,
            config=KillerConfig.model_validate(config),
            author="test",
            changed_at=datetime.now(UTC),
        )
        await publish(kafka, snapshot)
        if version == 1:
            assert "warning" not in await warnings("plain")
    out = await warnings("opted")
    assert f"Job {namespace}/opted is out of jobreaper's scope" in out
    assert "its label jobreaper.io/enforce='on', config version 2" in out
    assert len(await requests(stack, topic_prefix)) == 5, "every request was published"
