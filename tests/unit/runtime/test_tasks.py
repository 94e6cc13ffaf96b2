"""Tasks supervised together: the first to end ends all (with its error), a stop ends
all, and leaving the block cancels and awaits every task; ``until_stopped`` races one
coroutine against the stop event."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.tasks import Supervisor, until_stopped


class Probe:
    """A task body that runs until cancelled and records that it was, and how."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False
        self.cleaned_up = False

    async def forever(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            await asyncio.sleep(0)  # cleanup that awaits: the block must wait for it
            self.cleaned_up = True


async def test_a_failed_task_is_raised_and_the_others_are_cancelled_and_awaited() -> None:
    other = Probe()

    async def fail() -> None:
        await other.started.wait()
        raise OSError("broker gone")

    async def supervise() -> None:
        async with Supervisor(asyncio.Event()) as tasks:
            tasks.start(other.forever(), name="other")
            tasks.start(fail(), name="failing")
            await tasks.wait()

    with pytest.raises(OSError, match="broker gone"):
        await supervise()
    assert other.cancelled and other.cleaned_up


async def test_stopping_ends_the_wait_with_true_and_the_tasks_still_run_until_the_block_ends() -> (
    None
):
    stopping = asyncio.Event()
    probe = Probe()
    async with Supervisor(stopping) as tasks:
        task = tasks.start(probe.forever())
        await probe.started.wait()
        asyncio.get_running_loop().call_soon(stopping.set)
        assert await tasks.wait() is True
        assert not task.done(), "the caller may still drain before the block ends"
    assert probe.cancelled and probe.cleaned_up and task.cancelled()


async def test_a_task_that_returns_ends_the_wait_with_false() -> None:
    probe = Probe()

    async def quick() -> None:
        await probe.started.wait()

    async with Supervisor(asyncio.Event()) as tasks:
        tasks.start(probe.forever())
        tasks.start(quick())
        assert await tasks.wait() is False
    assert probe.cancelled


async def test_a_background_task_ends_nothing_and_its_error_is_not_raised() -> None:
    stopping = asyncio.Event()
    probe = Probe()

    async def broken_background() -> None:
        raise RuntimeError("a warning failed")

    async with Supervisor(stopping) as tasks:
        background = tasks.start(broken_background(), ends_all=False)
        tasks.start(probe.forever())
        await asyncio.sleep(0.01)
        assert background.done()
        asyncio.get_running_loop().call_later(0.01, stopping.set)
        assert await tasks.wait() is True
    assert probe.cancelled


async def test_an_error_in_the_block_cancels_the_tasks() -> None:
    probe = Probe()

    async def supervise() -> None:
        async with Supervisor() as tasks:
            tasks.start(probe.forever())
            await probe.started.wait()
            raise KeyError("caller's own error")

    with pytest.raises(KeyError):
        await supervise()
    assert probe.cancelled and probe.cleaned_up


async def test_without_a_stop_event_the_wait_is_for_the_first_task_to_end() -> None:
    async def answer() -> int:
        return 42

    async with Supervisor() as tasks:
        done = tasks.start(answer())
        assert await tasks.wait() is False
    assert done.result() == 42


async def test_until_stopped_returns_the_result_or_raises_the_error() -> None:
    async def answer() -> str:
        await asyncio.sleep(0)
        return "delivered"

    async def fail() -> str:
        raise ConnectionError("refused")

    assert await until_stopped(answer(), asyncio.Event()) == "delivered"
    with pytest.raises(ConnectionError, match="refused"):
        await until_stopped(fail(), asyncio.Event())


async def test_until_stopped_cancels_the_coroutine_and_answers_none_on_stop() -> None:
    stopping = asyncio.Event()
    probe = Probe()
    asyncio.get_running_loop().call_later(0.01, stopping.set)
    assert await asyncio.wait_for(until_stopped(probe.forever(), stopping), 60) is None
    assert probe.cancelled and probe.cleaned_up


async def test_until_stopped_is_cancelled_with_its_caller() -> None:
    probe = Probe()
    caller = asyncio.create_task(until_stopped(probe.forever(), asyncio.Event()))
    await probe.started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert probe.cancelled and probe.cleaned_up
