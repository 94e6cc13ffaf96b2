"""The one retry loop of the long-running services.

A service's *cycle* (a watch session, a consumer-group membership, a turn as
the config writer) ends by an error sooner or later. The service then runs a
fresh cycle after a capped exponential backoff, which starts small again once a
cycle has run well for a while: a failure after an hour of health is a new
failure, not the tenth in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable


async def retry_until_stopped(
    cycle: Callable[[], Awaitable[None]],
    *,
    stopping: asyncio.Event,
    on_failure: Callable[[Exception], None],
    retryable: tuple[type[Exception], ...] = (Exception,),
    first_delay_s: float = 0.5,
    max_delay_s: float = 15.0,
    healthy_after_s: float = 60.0,
) -> None:
    """Run ``cycle`` until ``stopping`` is set, retrying ``retryable`` failures.

    ``on_failure`` sees each retryable failure (to record and log it); it may
    raise, for a failure no retry can cure (a permission denied), which ends
    the loop. Other exceptions end it too. The backoff wait ends early when
    ``stopping`` is set.
    """
    delay = first_delay_s
    while not stopping.is_set():
        started = time.monotonic()
        try:
            await cycle()
        except retryable as exc:
            on_failure(exc)
        if time.monotonic() - started > healthy_after_s:
            delay = first_delay_s
        if stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(delay * 2, max_delay_s)
