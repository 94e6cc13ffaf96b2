"""``jobreaper kill``'s parsing: Job references and kill times, one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from schemas.requests import KillCancelRequested
from services.cli import app
from services.kill.request import (
    BadRequest,
    build_cancel,
    build_request,
    check_ahead,
    parse_job_ref,
    parse_kill_time,
)

NOW = datetime(2026, 11, 23, 16, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [("+30s", 30), ("+5m", 300), ("+1h30m", 5400), ("+90", 90), ("+2h", 7200), ("+1m5s", 65)],
)
def test_relative_times(text: str, delta: int) -> None:
    assert parse_kill_time(text, NOW) == NOW + timedelta(seconds=delta)


@pytest.mark.parametrize("text", [None, "now", " NOW ", "+0s"])
def test_now(text: str | None) -> None:
    assert parse_kill_time(text, NOW) is None


def test_rfc3339_in_any_zone_becomes_utc() -> None:
    assert parse_kill_time("2026-11-23T18:30:00+01:00", NOW) == datetime(
        2026, 11, 23, 17, 30, tzinfo=UTC
    )
    assert parse_kill_time("2026-11-23T17:00:00Z", NOW) == NOW + timedelta(hours=1)


def test_a_second_ago_is_now_but_the_past_is_an_error() -> None:
    assert parse_kill_time("2026-11-23T15:59:59Z", NOW) == NOW
    with pytest.raises(BadRequest, match=r"10 min in the past; leave --at out"):
        parse_kill_time("2026-11-23T15:50:00Z", NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tomorrow", "not a time"),
        ("+5x", "relative time looks like"),
        ("+", "relative time looks like"),
        ("+-5s", "relative time looks like"),
        ("2026-11-23T17:00:00", "give a time zone"),
    ],
)
def test_malformed_times_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse_kill_time(text, NOW)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["job", "/job", "ns/", "a/b/c"])
def test_job_reference_needs_namespace_and_name(text: str) -> None:
    with pytest.raises(BadRequest, match="NAMESPACE/NAME"):
        parse_job_ref(text)
    assert parse_job_ref("batch/etl") == ("batch", "etl")


def test_the_request_carries_what_was_asked() -> None:
    request = build_request(
        "batch", "etl", now=NOW, kill_at=NOW + timedelta(minutes=5), reason="r", job_uid=""
    )
    assert (request.namespace, request.job_name, request.reason) == ("batch", "etl", "r")
    assert request.job_uid is None, "an empty uid pins nothing"
    assert request.kill_at == NOW + timedelta(minutes=5)
    assert request.requested_at == NOW
    assert request.requested_by, "defaults to user@host"
    assert request.kafka_key() == "batch/etl"


def test_a_kill_at_most_half_the_retention_ahead_is_accepted_and_further_refused() -> None:
    week_ms = 7 * 24 * 3600 * 1000
    check_ahead(NOW + timedelta(days=3.5), NOW, week_ms)
    check_ahead(None, NOW, 1000)
    check_ahead(NOW + timedelta(days=365), NOW, -1)  # kept for ever
    with pytest.raises(BadRequest) as refused:
        check_ahead(NOW + timedelta(days=3.5, seconds=1), NOW, week_ms)
    message = str(refused.value)
    assert "84.0 h ahead, more than half the retention of kill.requests (168.0 h)" in message
    assert "jobreaper.io/kill-timestamp=2026-11-27T04:00:01Z" in message


def test_a_request_the_killer_would_dead_letter_is_refused_before_sending() -> None:
    build_request("batch", "etl", now=NOW, reason="r" * 1024)
    with pytest.raises(BadRequest, match=r"reason: String should have at most 1024 characters"):
        build_request("batch", "etl", now=NOW, reason="r" * 1025)
    with pytest.raises(BadRequest, match=r"namespace"):
        build_request("n" * 64, "etl", now=NOW)


def test_a_cancellation_carries_what_was_asked_and_is_bounded_like_a_request() -> None:
    cancel = build_cancel("batch", "etl", now=NOW, reason="r", job_uid="")
    assert isinstance(cancel, KillCancelRequested)
    assert (cancel.namespace, cancel.job_name, cancel.reason) == ("batch", "etl", "r")
    assert cancel.job_uid is None, "an empty uid pins nothing"
    assert cancel.requested_at == NOW and cancel.requested_by
    assert cancel.kafka_key() == "batch/etl", "same key, same partition, as the requests"
    build_cancel("batch", "etl", now=NOW, reason="r" * 1024)
    with pytest.raises(BadRequest, match=r"reason: String should have at most 1024 characters"):
        build_cancel("batch", "etl", now=NOW, reason="r" * 1025)
    with pytest.raises(BadRequest, match=r"requested_by"):
        build_cancel("batch", "etl", now=NOW, requested_by="w" * 257)
    with pytest.raises(BadRequest, match=r"job_name"):
        build_cancel("batch", "j" * 254, now=NOW)


def test_cancel_with_a_time_is_a_usage_error_and_publishes_nothing() -> None:
    env = {"JOBREAPER_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # nothing listens: never reached
    done = CliRunner().invoke(
        app, ["kill", "batch/etl", "--cancel", "--at", "+5m", "--no-check"], env=env
    )
    assert done.exit_code == 2, done.output
    assert "--cancel takes no --at" in done.output
