"""The shared retry loop: retries what it may, stops when asked, ends on the rest."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.retry import retry_until_stopped


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
