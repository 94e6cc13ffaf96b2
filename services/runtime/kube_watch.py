"""Watching the Kubernetes API: the one reconnecting watch loop of the services.

A watcher of anything (the watcher's Jobs, pods and nodes; the config
service's ConfigMap) lists first, then calls :func:`watch` from the list's
resourceVersion. :func:`watch` opens ``?watch=1`` with bookmarks and a
server-side timeout, hands every line to the caller's ``parse`` (which
remembers each resourceVersion it sees, so a reconnect resumes from the last
one) and yields what ``parse`` returns. It reconnects, after a capped
backoff that starts again at each yielded event, when the connection drops
or the API server answers with a retryable status; at a clean end (the
server-side timeout) at once. It raises :class:`Gone` on ``410 Gone``, when
the version is no longer available: the caller lists again. Any other error
answer, and whatever ``parse`` raises (``Gone`` for a 410 ERROR line), ends
it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from kubernetes_asyncio import client

from .kube import KubeApiError, raw_request
from .retry import Backoff

T = TypeVar("T")

WATCH_BACKOFF = Backoff(0.2, 10.0)

DROPPED: tuple[type[Exception], ...] = (TimeoutError, OSError, aiohttp.ClientError, ValueError)
"""A watch connection that raised one of these is unusable: reconnect. ValueError:
aiohttp's "Line is too long", and a line ``parse`` cannot decode as JSON."""


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP or watch-event 410): list again."""


@dataclass(frozen=True)
class Interruption:
    """Why a watch is about to reconnect, for the caller's logs and counters."""

    error: str
    dropped: bool
    """True: an open stream broke; False: the API server refused the request (retryable)."""
    retry_in_s: float


def _ignore(_: Interruption) -> None:
    pass


async def watch(
    api: client.ApiClient,
    path: str,
    *,
    resource_version: Callable[[], str],
    parse: Callable[[bytes], T | None],
    timeout_s: int = 300,
    selectors: Sequence[tuple[str, str]] = (),
    on_interrupted: Callable[[Interruption], None] = _ignore,
    backoff: Backoff = WATCH_BACKOFF,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[T]:
    """The changes of the objects at ``path`` from ``resource_version()`` on, forever.

    ``parse`` gets each non-blank line; it returns what to yield, or None for
    a line to skip (a bookmark, a malformed line), and keeps the resourceVersion
    that ``resource_version`` returns up to date. ``selectors``: extra query
    parameters (``labelSelector``, ``fieldSelector``).
    """
    delays = backoff.delays()
    while True:
        query = [
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version()),
            ("timeoutSeconds", str(timeout_s)),
            *selectors,
        ]
        try:
            response = await raw_request(api, "GET", path, query=query, timeout=timeout_s + 30)
        except KubeApiError as exc:
            if exc.status == 410:
                raise Gone(str(exc)) from exc
            if not exc.retryable:
                raise
            delay = delays.next()
            on_interrupted(Interruption(str(exc), dropped=False, retry_in_s=delay))
            await sleep(delay)
            continue
        try:
            while True:
                line: bytes = await response.content.readline()
                if not line:
                    break  # the server-side timeout: watch again from where we are
                if line.isspace():
                    continue
                item = parse(line)
                if item is not None:
                    delays.reset()
                    yield item
        except DROPPED as exc:
            delay = delays.next()
            error = f"{type(exc).__name__}: {exc}"
            on_interrupted(Interruption(error, dropped=True, retry_in_s=delay))
            await sleep(delay)
        finally:
            response.release()
