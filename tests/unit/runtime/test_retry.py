"""The one backoff rule and the shared retry loop: retries what it may, stops when
asked, ends on the rest, and starts its backoff small again after a healthy cycle."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from services.runtime.retry import Backoff, Delays, retry_until_stopped, sleep_unless_stopped


def test_delays_double_then_stay_at_the_cap() -> None:
    backoff = Backoff(0.2, 10.0)
    assert [backoff.delay(n) for n in range(1, 10)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0
    ]  # fmt: skip
    assert backoff.delay(10_000) == 10.0, "no float overflow however many failures"


def test_no_cap_keeps_doubling() -> None:
    assert [Backoff(0.5, math.inf).delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_failures_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff(1.0, 2.0).delay(0)


def test_jitter_draws_from_the_upper_band_and_reaches_both_ends() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.5)
    rand = random.Random(3)
    for n in range(1, 6):
        base = backoff.base_delay(n)
        drawn = [backoff.delay(n, rand) for _ in range(400)]
        assert all(base * 0.5 <= d <= base for d in drawn)
        assert min(drawn) < base * 0.55 and max(drawn) > base * 0.95, "a band, not a point"


def test_delays_count_a_run_of_failures_and_start_again_after_a_success() -> None:
    delays: Delays = Backoff(0.2, 1.0).delays()
    assert [delays.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    delays.reset()
    assert [delays.next(), delays.next()] == [0.2, 0.4]


async def test_sleep_unless_stopped_says_whether_it_was_stopped() -> None:
    stopping = asyncio.Event()
    assert await sleep_unless_stopped(stopping, 0.001) is False
    asyncio.get_running_loop().call_later(0.01, stopping.set)
    started = time.monotonic()
    assert await sleep_unless_stopped(stopping, 3600) is True
    assert time.monotonic() - started < 60
    assert await sleep_unless_stopped(stopping, 3600) is True, "already set: at once"


async def test_the_backoff_grows_with_failures_and_starts_small_after_a_healthy_cycle() -> None:
    stopping = asyncio.Event()
    now = 0.0
    waits: list[float] = []
    ran_for = [0.0, 0.0, 0.0, 120.0, 0.0, 0.0]  # the fourth cycle runs two healthy minutes

    def clock() -> float:
        return now

    async def cycle() -> None:
        nonlocal now
        now += ran_for[len(waits)]
        raise OSError("down")

    async def sleep(_: asyncio.Event, delay: float) -> bool:
        waits.append(delay)
        if len(waits) == len(ran_for):
            stopping.set()
        return stopping.is_set()

    await retry_until_stopped(
        cycle,
        stopping=stopping,
        on_failure=lambda e: None,
        first_delay_s=1.0,
        max_delay_s=4.0,
        healthy_after_s=60.0,
        clock=clock,
        sleep=sleep,
    )
    assert waits == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]


async def test_retries_retryable_failures_until_stopped() -> None:
    stopping = asyncio.Event()
    seen: list[Exception] = []
    calls = 0

    async def cycle() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            stopping.set()
            return
        raise OSError(f"failure {calls}")

    await retry_until_stopped(cycle, stopping=stopping, on_failure=seen.append, first_delay_s=0.001)
    assert calls == 3
    assert [str(e) for e in seen] == ["failure 1", "failure 2"]


async def test_a_failure_on_failure_raises_ends_the_loop() -> None:
    async def cycle() -> None:
        raise PermissionError("denied")

    def fatal(exc: Exception) -> None:
        raise RuntimeError("give up") from exc

    with pytest.raises(RuntimeError, match="give up"):
        await retry_until_stopped(cycle, stopping=asyncio.Event(), on_failure=fatal)


async def test_a_failure_that_is_not_retryable_propagates() -> None:
    async def cycle() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await retry_until_stopped(
            cycle, stopping=asyncio.Event(), on_failure=lambda e: None, retryable=(OSError,)
        )


async def test_stopping_interrupts_the_backoff_wait() -> None:
    stopping = asyncio.Event()

    async def cycle() -> None:
        asyncio.get_running_loop().call_soon(stopping.set)
        raise OSError("down")

    # With a one-hour backoff, only the stop event can end this promptly.
    await asyncio.wait_for(
        retry_until_stopped(
            cycle, stopping=stopping, on_failure=lambda e: None, first_delay_s=3600
        ),
        timeout=60,
    )
