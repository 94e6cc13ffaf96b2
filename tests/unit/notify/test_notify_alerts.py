"""Which records are alerts, how one webhook POST is retried (against a real local
HTTP server), and the webhook URL kept secret: read from a file or the environment,
never from a flag, never in a log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import ClientSession, web
from structlog.testing import capture_logs
from typer.testing import CliRunner

from schemas.commands import CommandApplied, Outcome
from schemas.events import ForceDeletionForbidden, ForceDeletionHeld
from services.cli import app
from services.notify.alerts import alert_for
from services.notify.settings import NotifySettings
from services.notify.webhook import WebhookBackoff, deliver, endpoint, retry_after_s
from services.runtime.logging import _drop_secrets
from services.runtime.messages import CODEC

SECRET = "T0000/B0000/XXXXsecretXXXX"

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


def alert(message: CommandApplied | ForceDeletionForbidden | ForceDeletionHeld) -> str | None:
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


def held(waits_for: str) -> ForceDeletionHeld:
    return ForceDeletionHeld(
        namespace="ns",
        job_name="j",
        pod_name="p",
        pod_uid="u",
        node_name="n1",
        waits_for=waits_for,  # type: ignore[arg-type]
        policy="whenFenced",
        trigger="Killed",
        reason="Killed",
        since=NOW,
        due_at=NOW,
        until=NOW if waits_for == "rate-limit" else None,
        decided_at=NOW,
    )


def test_a_force_deletion_held_for_a_fence_is_an_alert_one_held_by_the_rate_limit_is_not() -> None:
    assert alert(held("fence")) == "force-deletion-held"
    assert alert(held("rate-limit")) is None
    record = CODEC.encode(held("fence"), source="/t", event_id="e-2")
    found = alert_for(CODEC.decode(record.headers, record.value), failing_after=3, remind_every=10)
    assert found is not None
    text = found.payload()["text"]
    assert "ns/j" in text and "fence of node n1" in text and "out-of-service" in text


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Thu, 01 Jan 2026 00:00:30 GMT", now=NOW) == 30.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[str, list[int]]]:
    """Answers, in order, the statuses queued in the list it yields (then 200). Its
    URL ends in a secret path, as a Slack webhook's does."""
    answers: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.json()
        status = answers.pop(0) if answers else 200
        headers = {"Retry-After": "2"} if status == 429 else {}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post(f"/services/{SECRET}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/services/{SECRET}", answers
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
        verdict = await deliver(session, url, {"text": "x"}, WebhookBackoff(1, 4), sleep=sleep)
    assert verdict == ("delivered", 200)
    assert len(waits) == 3
    assert 0.5 <= waits[0] <= 1 and waits[1] == 2.0 and 2 <= waits[2] <= 4


async def test_a_4xx_is_not_retried(server: tuple[str, list[int]]) -> None:
    url, answers = server
    answers.extend([404, 500])
    async with ClientSession() as session:
        verdict = await deliver(session, url, {"text": "x"}, WebhookBackoff())
    assert verdict == ("rejected", 404)
    assert answers == [500], "one request only"


async def test_retries_log_the_endpoint_never_the_url(server: tuple[str, list[int]]) -> None:
    url, answers = server
    answers.extend([500, 503])

    async def sleep(_: float) -> None:
        pass

    with capture_logs() as logs:
        async with ClientSession() as session:
            await deliver(session, url, {"text": "x"}, WebhookBackoff(), sleep=sleep)
    retries = [entry for entry in logs if entry["event"] == "notify.retry"]
    assert [r["reason"] for r in retries] == ["500", "503"]
    host = url.split("/services/")[0]
    assert all(r["endpoint"] == host for r in retries)
    assert SECRET not in repr(logs) and "secret" not in repr(logs)


def test_endpoint_keeps_scheme_host_and_port_only() -> None:
    assert endpoint(f"https://hooks.slack.com/services/{SECRET}") == "https://hooks.slack.com"
    assert endpoint("http://user:pw@hooks.example:8443/x?token=1") == "http://hooks.example:8443"
    assert endpoint("http://[::1]:9/x") == "http://[::1]:9"
    assert endpoint("http://[::1") == "(unparsable URL)"
    assert endpoint("nothing") == "(no host)"


def test_a_webhook_key_never_reaches_a_log_line() -> None:
    event = {"event": "x", "webhook": "https://h/s", "Webhook_URL": "https://h/s", "n": 1}
    assert _drop_secrets(None, "info", event) == {
        "event": "x",
        "webhook": "***",
        "Webhook_URL": "***",
        "n": 1,
    }


# -- where the URL comes from ---------------------------------------------------------


@pytest.fixture
def no_webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBREAPER_NOTIFY_WEBHOOK", raising=False)
    monkeypatch.delenv("JOBREAPER_NOTIFY_WEBHOOK_FILE", raising=False)


@pytest.mark.usefixtures("no_webhook_env")
def test_the_url_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"https://hooks.slack.com/services/{SECRET}"
    mounted = tmp_path / "webhook"
    mounted.write_text(url + "\n")  # a Secret's value often ends with a newline
    from_file = NotifySettings(webhook_file=str(mounted))
    assert from_file.url == url and from_file.origin == f"file {mounted}"
    monkeypatch.setenv("JOBREAPER_NOTIFY_WEBHOOK_FILE", str(mounted))
    assert NotifySettings().url == url
    monkeypatch.delenv("JOBREAPER_NOTIFY_WEBHOOK_FILE")
    monkeypatch.setenv("JOBREAPER_NOTIFY_WEBHOOK", url)
    from_env = NotifySettings()
    assert from_env.url == url and from_env.origin == "JOBREAPER_NOTIFY_WEBHOOK"
    for settings in (from_file, from_env):
        assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def notify(*args: str, **env: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(
        app,
        ["notify", *args],
        env={"JOBREAPER_NOTIFY_WEBHOOK": "", "JOBREAPER_NOTIFY_WEBHOOK_FILE": "", **env},
    )
    return outcome.exit_code, outcome.output


def test_notify_without_a_webhook_is_a_one_line_usage_error() -> None:
    code, output = notify()
    assert code == 2
    assert "no webhook URL" in output and "--webhook-file PATH" in output
    assert "JOBREAPER_NOTIFY_WEBHOOK" in output


@pytest.mark.parametrize("form", [["--webhook", "URL"], ["--webhook=URL"]])
def test_a_webhook_flag_is_refused_and_says_where_the_url_goes(form: list[str]) -> None:
    url = f"https://hooks.slack.com/services/{SECRET}"
    code, output = notify(*(a.replace("URL", url) for a in form))
    assert code == 2
    assert "--webhook is no longer accepted" in output and "--webhook-file PATH" in output
    assert SECRET not in output


def test_a_bad_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    mounted = tmp_path / "webhook"
    mounted.write_text(f"hooks.slack.com/services/{SECRET}")
    code, output = notify("--webhook-file", str(mounted))
    assert code == 2 and "must start with http:// or https://" in output
    assert SECRET not in output
    code, output = notify(JOBREAPER_NOTIFY_WEBHOOK=f"ftp://h/{SECRET}")
    assert code == 2 and "must start with http" in output and SECRET not in output


def test_the_url_given_twice_or_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    mounted = tmp_path / "webhook"
    mounted.write_text(f"https://h/{SECRET}")
    code, output = notify(
        "--webhook-file", str(mounted), JOBREAPER_NOTIFY_WEBHOOK=f"https://h/{SECRET}"
    )
    assert code == 2 and "given twice" in output and SECRET not in output
    code, output = notify("--webhook-file", str(tmp_path / "missing"))
    assert code == 2 and "cannot read the webhook file" in output
    assert "No such file or directory" in output
    (tmp_path / "empty").write_text("\n")
    code, output = notify("--webhook-file", str(tmp_path / "empty"))
    assert code == 2 and "is empty" in output


def test_a_force_deletion_held_for_its_volume_is_an_alert_that_says_why() -> None:
    assert alert(held("volume")) == "force-deletion-held"
    record = CODEC.encode(held("volume"), source="/t", event_id="e-3")
    found = alert_for(CODEC.decode(record.headers, record.value), failing_after=3, remind_every=10)
    assert found is not None
    text = found.payload()["text"]
    assert "ReadWriteOnce volume claim" in text and "fence of node n1" in text
    assert "jobreaper.io/safe-to-force-delete" in text
