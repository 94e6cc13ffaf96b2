"""POSTing one alert until the webhook takes it.

2xx: delivered. 429: wait its ``Retry-After`` (seconds or an HTTP date, capped),
else the backoff. 5xx, 408, timeouts, connection errors: capped exponential
backoff with jitter, for ever (at-least-once: an alert is never dropped because
the receiver is down). Any other 4xx: the request itself is wrong (bad URL,
token, payload); retrying cannot help, so it is reported ``rejected`` and skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from services.runtime.logging import get_logger
from services.runtime.retry import Backoff

log = get_logger(__name__)

Verdict = Literal["delivered", "rejected"]


@dataclass(frozen=True)
class WebhookBackoff(Backoff):
    """The runtime's :class:`Backoff`, jittered over the upper half of each doubled,
    capped delay, and how long a 429's ``Retry-After`` may make us wait at most."""

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.5
    retry_after_max_s: float = 300.0


def endpoint(url: str) -> str:
    """What logs may say of a webhook URL: its scheme, host and port. The path and
    query (Slack's token), and any user:password, stay out."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(unparsable URL)"
    if not host:
        return "(no host)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait per a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    backoff: WebhookBackoff,
    *,
    timeout_s: float = 10.0,
    on_retry: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Verdict, int]:
    """POST ``payload`` until a 2xx (``delivered``) or a final 4xx (``rejected``);
    returns the verdict and the last status. Cancel it to give up (on stop)."""
    failures = 0
    while True:
        retry_after: float | None = None
        try:
            async with session.post(
                url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as answer:
                status = answer.status
                await answer.read()
                if 200 <= status < 300:
                    return "delivered", status
                if 400 <= status < 500 and status not in (408, 429):
                    return "rejected", status
                if status == 429:
                    retry_after = retry_after_s(answer.headers.get("Retry-After"))
                reason = str(status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
        failures += 1
        wait = backoff.delay(failures)
        if retry_after is not None:
            wait = min(retry_after, backoff.retry_after_max_s)
        on_retry(reason)
        log.warning(
            "notify.retry", endpoint=endpoint(url), reason=reason, retry_in_s=round(wait, 3)
        )
        await sleep(wait)
