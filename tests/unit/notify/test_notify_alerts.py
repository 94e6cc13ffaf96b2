"""Which records are alerts, and how one webhook POST is retried (against a real local
HTTP server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from aiohttp import ClientSession, web

from schemas.commands import CommandApplied, Outcome
from schemas.events import ForceDeletionForbidden
from services.notify.alerts import alert_for
from services.notify.webhook import Backoff, deliver, retry_after_s
from services.runtime.messages import CODEC

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def result(outcome: Outcome, attempt: int) -> CommandApplied:
    return CommandApplied(
        command_id="c",
        step="delete",
        namespace="ns",
        job_name="j",
        pod_name="p",
        pod_uid="u",
        attempt=attempt,
        outcome=outcome,
        applied_at=NOW,
        http_status=403,
        message="pods is forbidden",
    )


def alert(message: CommandApplied | ForceDeletionForbidden) -> str | None:
    record = CODEC.encode(message, source="/t")
    found = alert_for(CODEC.decode(record.headers, record.value), failing_after=3, remind_every=10)
    return None if found is None else found.kind


def test_forbidden_alerts_on_the_first_attempt_and_every_tenth_after() -> None:
    assert [alert(result("forbidden", n)) for n in (1, 2, 10, 11, 21)] == [
        "forbidden",
        None,
        None,
        "forbidden",
        "forbidden",
    ]


def test_a_failing_step_alerts_from_the_threshold_on() -> None:
    assert [alert(result("failed", n)) for n in (1, 2, 3, 4, 13)] == [
        None,
        None,
        "failing",
        None,
        "failing",
    ]
    assert alert(result("applied", 5)) is None


def test_force_deletion_forbidden_is_an_alert_with_a_slack_text() -> None:
    event = ForceDeletionForbidden(
        namespace="ns",
        job_name="j",
        pod_name="p",
        pod_uid="u",
        forbidden_by="job",
        trigger="Killed",
        reason="Killed",
        since=NOW,
        due_at=NOW,
        decided_at=NOW,
    )
    record = CODEC.encode(event, source="/t", event_id="e-1")
    found = alert_for(CODEC.decode(record.headers, record.value), failing_after=3, remind_every=10)
    assert found is not None
    payload = found.payload()
    assert payload["alert_id"] == "e-1" and payload["kind"] == "force-deletion-forbidden"
    assert "ns/j" in payload["text"] and "forbidden" in payload["text"]
    assert payload["event"]["type"] == "io.jobreaper.force-deletion.forbidden.v1"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Thu, 01 Jan 2026 00:00:30 GMT", now=NOW) == 30.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[str, list[int]]]:
    """Answers, in order, the statuses queued in the list it yields (then 200)."""
    answers: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.json()
        status = answers.pop(0) if answers else 200
        headers = {"Retry-After": "2"} if status == 429 else {}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", answers
    finally:
        await runner.cleanup()


async def test_5xx_is_retried_with_backoff_and_429_waits_its_retry_after(
    server: tuple[str, list[int]],
) -> None:
    url, answers = server
    answers.extend([500, 429, 503])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with ClientSession() as session:
        verdict = await deliver(session, url, {"text": "x"}, Backoff(1, 4), sleep=sleep)
    assert verdict == ("delivered", 200)
    assert len(waits) == 3
    assert 0.5 <= waits[0] <= 1 and waits[1] == 2.0 and 2 <= waits[2] <= 4


async def test_a_4xx_is_not_retried(server: tuple[str, list[int]]) -> None:
    url, answers = server
    answers.extend([404, 500])
    async with ClientSession() as session:
        verdict = await deliver(session, url, {"text": "x"}, Backoff())
    assert verdict == ("rejected", 404)
    assert answers == [500], "one request only"


def test_notify_without_a_webhook_is_a_one_line_usage_error() -> None:
    from typer.testing import CliRunner

    from services.cli import app

    runner = CliRunner()
    outcome = runner.invoke(app, ["notify"], env={"JOBREAPER_NOTIFY_WEBHOOK": ""})
    assert outcome.exit_code == 2
    assert "webhook" in outcome.output and "not an http(s) URL" in outcome.output
    outcome = runner.invoke(app, ["notify", "--webhook", "hooks.example/x"])
    assert outcome.exit_code == 2 and "not an http(s) URL" in outcome.output
