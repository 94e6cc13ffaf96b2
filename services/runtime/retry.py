"""Backoff: the one rule for how long to wait after a failure, and the one retry loop.

:class:`Backoff` is the rule every retry in the services follows: the first
wait, doubled after each further failure up to a cap, optionally drawn at
random from the band ``[(1 - jitter) * d, d]`` so that replicas do not retry
in step. :class:`Delays` counts the failures of one run of them (``next()``
before a wait, ``reset()`` after a success).

A service's *cycle* (a watch session, a consumer-group membership, a turn as
the config writer) ends by an error sooner or later. :func:`retry_until_stopped`
then runs a fresh cycle after the backoff, which starts small again once a
cycle has run well for a while: a failure after an hour of health is a new
failure, not the tenth in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff, with optional jitter."""

    initial_s: float
    """The wait after the first failure."""
    max_s: float
    """No wait is longer (``math.inf``: no cap)."""
    jitter: float = 0.0
    """A wait is drawn from ``[(1 - jitter) * d, d]``; 0: exactly ``d``."""

    def base_delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row (1, 2, ...), without jitter."""
        if failures < 1:
            raise ValueError("retries are counted from 1")
        # 2 ** 60 is already far past any cap; avoid float overflow for silly counts.
        return min(self.max_s, self.initial_s * 2.0 ** min(failures - 1, 60))

    def delay(self, failures: int, rand: random.Random | None = None) -> float:
        """The wait after ``failures`` failures in a row, jitter drawn from ``rand``."""
        base = self.base_delay(failures)
        if not self.jitter:
            return base
        draw: float = (rand or random).random()
        return base * (1 - self.jitter * draw)

    def delays(self, rand: random.Random | None = None) -> Delays:
        """A counter of one run of failures under this rule."""
        return Delays(self, rand)


class Delays:
    """The waits of one run of failures: ``next()`` before each wait, ``reset()`` after a
    success (the next failure waits ``initial_s`` again)."""

    def __init__(self, backoff: Backoff, rand: random.Random | None = None) -> None:
        self.backoff = backoff
        self.rand = rand
        self.failures = 0

    def next(self) -> float:
        """Count one more failure; the wait before the next try."""
        self.failures += 1
        return self.backoff.delay(self.failures, self.rand)

    def reset(self) -> None:
        self.failures = 0


async def sleep_unless_stopped(stopping: asyncio.Event, delay_s: float) -> bool:
    """Wait ``delay_s``, or less if ``stopping`` is set meanwhile; True if it is set."""
    if stopping.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay_s)
    return stopping.is_set()


async def retry_until_stopped(
    cycle: Callable[[], Awaitable[None]],
    *,
    stopping: asyncio.Event,
    on_failure: Callable[[Exception], None],
    retryable: tuple[type[Exception], ...] = (Exception,),
    first_delay_s: float = 0.5,
    max_delay_s: float = 15.0,
    healthy_after_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[asyncio.Event, float], Awaitable[bool]] = sleep_unless_stopped,
) -> None:
    """Run ``cycle`` until ``stopping`` is set, retrying ``retryable`` failures.

    ``on_failure`` sees each retryable failure (to record and log it); it may
    raise, for a failure no retry can cure (a permission denied), which ends
    the loop. Other exceptions end it too. The backoff wait ends early when
    ``stopping`` is set. ``clock`` and ``sleep``: for tests.
    """
    delays = Backoff(first_delay_s, max_delay_s).delays()
    while not stopping.is_set():
        started = clock()
        try:
            await cycle()
        except retryable as exc:
            on_failure(exc)
        if clock() - started > healthy_after_s:
            delays.reset()
        if stopping.is_set():
            return
        await sleep(stopping, delays.next())
