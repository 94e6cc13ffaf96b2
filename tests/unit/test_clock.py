"""The API server's clock as a lower bound (services/runtime/clock.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.runtime.clock import ApiClock

T = datetime(2026, 12, 6, 9, 0, 0, tzinfo=UTC)


def _date(server: datetime) -> str:
    """An HTTP Date header: whole seconds, truncated."""
    return format_datetime(server.replace(microsecond=0), usegmt=True)


@given(
    offset_ms=st.integers(-120_000, 120_000),
    samples=st.lists(
        st.tuples(st.integers(0, 10_000_000), st.integers(0, 200_000)), min_size=1, max_size=40
    ),
)
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_the_measured_clock_is_never_ahead_of_the_servers(
    offset_ms: int, samples: list[tuple[int, int]]
) -> None:
    """Whatever the true offset, phases and round trips: now() <= the server's time."""
    offset = timedelta(milliseconds=offset_ms)
    clock = ApiClock(local=lambda: T)
    for start_us, rtt_us in sorted(samples):
        sent = T + timedelta(microseconds=start_us)
        received = sent + timedelta(microseconds=rtt_us)
        answered = sent + (received - sent) / 2  # when the server read its clock
        clock.sample(sent, _date(answered + offset), received)
        assert clock.offset <= offset
    assert clock.now() <= T + offset


def test_samples_at_varied_phases_make_the_bound_tight() -> None:
    offset = timedelta(seconds=-30, milliseconds=-437)  # a host clock 30.437 s ahead
    clock = ApiClock(local=lambda: T)
    for i in range(12):
        sent = T + timedelta(milliseconds=83 * i)
        received = sent + timedelta(milliseconds=2)
        clock.sample(sent, _date(sent + timedelta(milliseconds=1) + offset), received)
    error = offset - clock.offset
    assert timedelta(0) <= error < timedelta(milliseconds=100), error


def test_a_bad_date_header_is_not_a_sample() -> None:
    clock = ApiClock(local=lambda: T)
    assert not clock.sample(T, "yesterday", T)
    assert not clock.measured and clock.now() == T


def test_an_unreachable_api_server_keeps_the_last_offset() -> None:
    clock = ApiClock(local=lambda: T)
    clock.sample(T, _date(T + timedelta(seconds=10)), T)

    async def down() -> str:
        raise ConnectionError("refused")

    assert not asyncio.run(clock.probe_once(down))
    assert clock.failures == 1 and clock.offset == timedelta(seconds=10)
