"""Supervising tasks that run together until one ends or the service stops.

A service runs a few tasks at once (the watcher: a publisher and a reflector
per stream; the config service: the tail of its topic and the writer) and
must end them together: when one ends by itself (its error ends the whole,
as the first thing the caller sees), or when the service is told to stop.
Either way every task is cancelled and awaited before the caller goes on.

Not :class:`asyncio.TaskGroup`: it raises an ``ExceptionGroup`` (the callers
retry on specific exception types, which ``except`` no longer matches), waits
for every task to end by itself, and knows no stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class Supervisor:
    """``async with Supervisor(stopping) as tasks``: ``tasks.start(...)`` each,
    then ``await tasks.wait()``; leaving the block cancels and awaits them all
    (their errors then are not raised: the first one was, by ``wait``)."""

    def __init__(self, stopping: asyncio.Event | None = None) -> None:
        self.stopping = stopping
        self._ending: set[asyncio.Task[Any]] = set()
        """The tasks whose end ends the whole."""
        self._all: list[asyncio.Task[Any]] = []

    def start(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None, ends_all: bool = True
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task until the block is left. ``ends_all=False``: a
        background task whose end (or error) ends nothing and is not reported."""
        task = asyncio.create_task(coro, name=name)
        self._all.append(task)
        if ends_all:
            self._ending.add(task)
        return task

    async def wait(self) -> bool:
        """Until a task ends or ``stopping`` is set. Raises the error of a task that
        failed; True if the service is stopping (and no task failed), False if a task
        returned by itself."""
        stop = asyncio.create_task(self.stopping.wait()) if self.stopping is not None else None
        waited = {*self._ending, *([stop] if stop is not None else [])}
        try:
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stop is not None:
                stop.cancel()
        for task in self._all:
            if task in done:
                task.result()  # a failed task fails the whole
        return stop is not None and stop in done

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._all:
            task.cancel()
        await asyncio.gather(*self._all, return_exceptions=True)


async def until_stopped(coro: Coroutine[Any, Any, T], stopping: asyncio.Event) -> T | None:
    """Run ``coro`` until it ends (its result, or its error) or ``stopping`` is set:
    then it is cancelled and awaited, and the answer is None."""
    task = asyncio.create_task(coro)
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()
