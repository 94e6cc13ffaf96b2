"""``jobreaper notify`` over real Kafka against a real local HTTP server: each alert is
delivered once after a 500, a 4xx is skipped, and a restart re-sends nothing that was
acknowledged and committed; the command reads the webhook URL from a file and never
logs it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientError, ClientSession, web

from devtools.stack.api import StackInfo
from schemas.commands import CommandApplied
from schemas.events import ForceDeletionForbidden
from services.notify.service import Notifier
from services.notify.settings import NotifySettings
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from tests.integration.helpers import eventually, publish

pytestmark = pytest.mark.stack
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "T0000/B0000/notify-integration-secret"


@dataclass
class Hook:
    """A webhook that answers 500 to an alert's first POST and 200 after; 400 always
    to alerts about pod ``bad``. ``log`` holds (alert_id, pod, status answered)."""

    url: str = ""
    log: list[tuple[str, str, int]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def answered(self, status: int) -> Counter[str]:
        return Counter(a for a, _, s in self.log if s == status)

    def pods_accepted(self) -> set[str]:
        return {p for _, p, s in self.log if s == 200}


@pytest_asyncio.fixture(loop_scope="session")
async def hook() -> AsyncIterator[Hook]:
    found = Hook()

    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        alert_id, pod = body["alert_id"], body["pod"]
        assert body["text"] and body["kind"] and body["event"]["data"]
        seen = any(a == alert_id for a, _, _ in found.log)
        status = 400 if pod == "bad" else (200 if seen else 500)
        found.log.append((alert_id, pod, status))
        found.bodies.append(body)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post(f"/services/{SECRET}", post)  # a secret path, as Slack's
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/services/{SECRET}"
    try:
        yield found
    finally:
        await runner.cleanup()


def forbidden_force(pod: str) -> ForceDeletionForbidden:
    return ForceDeletionForbidden(
        namespace="ns",
        job_name="a",
        pod_name=pod,
        pod_uid=f"u-{pod}",
        forbidden_by="job",
        trigger="Killed",
        reason="Killed",
        since=NOW,
        due_at=NOW,
        decided_at=NOW,
    )


def result(pod: str, outcome: str, attempt: int = 1) -> CommandApplied:
    return CommandApplied.model_validate(
        dict(
            command_id=f"c-{pod}-{attempt}",
            step="delete",
            namespace="ns",
            job_name="a",
            pod_name=pod,
            pod_uid=f"u-{pod}",
            attempt=attempt,
            outcome=outcome,
            applied_at=NOW,
            http_status=403 if outcome == "forbidden" else 500,
        )
    )


async def running(
    kafka: KafkaSettings, settings: NotifySettings
) -> tuple[Notifier, asyncio.Task[None]]:
    notifier = Notifier(kafka, settings)
    return notifier, asyncio.create_task(notifier.run())


async def stopped(notifier: Notifier, task: asyncio.Task[None]) -> None:
    notifier.stop()
    await asyncio.wait_for(task, 30)


async def test_each_alert_is_delivered_once_after_a_500_and_a_restart_resends_nothing(
    stack: StackInfo, topic_prefix: str, hook: Hook
) -> None:
    kafka = KafkaSettings(bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(kafka, job_partitions=3)
    # All keyed ns/a: one partition per topic, so order within each topic holds.
    await publish(
        kafka,
        forbidden_force("p1"),
        result("p2", "forbidden"),
        result("p3", "applied"),  # not an alert
        result("p4", "failed", attempt=1),  # not yet: below --failing-after
        result("p4", "failed", attempt=3),  # keeps failing
        forbidden_force("bad"),  # the webhook refuses it (400): skipped
    )
    settings = NotifySettings(
        webhook=hook.url,
        group_id=f"notify-{uuid.uuid4().hex[:8]}",
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    notifier, task = await running(kafka, settings)

    async def delivered() -> bool:
        return hook.pods_accepted() == {"p1", "p2", "p4"} and "bad" in {p for _, p, _ in hook.log}

    await eventually("three alerts delivered, one refused", delivered)
    # Its verdicts are counted just before each commit, which a stop does not interrupt.
    await eventually("every verdict counted", lambda: _counted(notifier, 4))
    await stopped(notifier, task)
    accepted, failed = hook.answered(200), hook.answered(500)
    assert sorted(accepted.values()) == [1, 1, 1], "each alert accepted exactly once"
    assert set(failed) == set(accepted) and sorted(failed.values()) == [1, 1, 1], (
        "each after exactly one 500"
    )
    assert [s for _, p, s in hook.log if p == "bad"] == [400], "a 4xx is not retried"
    rejected = notifier.registry.get_sample_value(
        "jobreaper_notify_alerts_total", {"kind": "force-deletion-forbidden", "verdict": "rejected"}
    )
    assert rejected == 1
    (p4,) = [b for b in hook.bodies if b["pod"] == "p4" and b["kind"] == "failing"][-1:]
    assert p4["event"]["data"]["attempt"] == 3, "attempt 1 was not an alert"

    # Restart (same group) and add one new alert per topic, after the old ones in
    # their partitions: once both are delivered, any re-send would have come first.
    before = len(hook.log)
    notifier, task = await running(kafka, settings)
    await publish(kafka, forbidden_force("m1"), result("m2", "forbidden"))

    async def markers() -> bool:
        return {"m1", "m2"} <= hook.pods_accepted()

    await eventually("the new alerts delivered", markers)
    await stopped(notifier, task)
    after = {p for _, p, _ in hook.log[before:]}
    assert after == {"m1", "m2"}, f"nothing acknowledged was sent again: {hook.log[before:]}"


async def _counted(notifier: Notifier, verdicts: int) -> bool:
    samples = [
        s.value
        for metric in notifier.registry.collect()
        if metric.name == "jobreaper_notify_alerts"
        for s in metric.samples
        if s.name.endswith("_total")
    ]
    return sum(samples) == verdicts


async def test_the_notify_command_serves_health_and_metrics_and_stops_on_sigterm(
    stack: StackInfo, topic_prefix: str, hook: Hook, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
        "JOBREAPER_HTTP_PORT": str(port),
        "JOBREAPER_LOG_LEVEL": "debug",  # every line it and its libraries write
        "JOBREAPER_LOG_FORMAT": "json",
    }
    env.pop("JOBREAPER_NOTIFY_WEBHOOK", None)
    secret_file = tmp_path / "webhook"  # what a mounted Secret looks like
    secret_file.write_text(hook.url + "\n")
    log_path = tmp_path / "notify.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services",
            "notify",
            "--webhook-file",
            str(secret_file),
            "--group-id",
            f"notify-{uuid.uuid4().hex[:8]}",
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with ClientSession() as session:

            async def ready() -> str | None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
                        return await answer.text() if answer.status == 200 else None
                except ClientError:
                    return None

            assert "partitions assigned" in await eventually("/readyz 200", ready)
            await publish(
                KafkaSettings(bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix),
                forbidden_force("h1"),
            )
            await eventually("the alert delivered", lambda: _accepted(hook, "h1"))
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                metrics = await answer.text()
        assert (
            'jobreaper_notify_alerts_total{kind="force-deletion-forbidden",verdict="delivered"} 1.0'
            in metrics
        )
        retries = await answers_retried(port)
        assert retries >= 1, "the webhook's 500 was retried, so a retry line was logged"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
    logged = log_path.read_text()
    endpoint = hook.url.split("/services/")[0]
    assert f'"endpoint": "{endpoint}"' in logged, logged[-2000:]
    assert '"event": "notify.retry"' in logged and '"event": "notify.delivered"' in logged
    assert SECRET not in logged, "the URL's secret path leaked into a log line"


async def answers_retried(port: int) -> float:
    async with (
        ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        text = await answer.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("jobreaper_notify_retries_total{")
    )


async def _accepted(hook: Hook, pod: str) -> bool:
    return pod in hook.pods_accepted()
