"""The watcher's refresh sweep: oldest first, only listed streams, at the rate set."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from kubernetes_asyncio import client

from bench.sample_objects import job_pod
from schemas.observations import PodObserved
from services.runtime.settings import KafkaSettings
from services.watcher import wire
from services.watcher.convert import pod_observation
from services.watcher.reflector import Reflector
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _observations(first: int, count: int) -> list[PodObserved]:
    out = []
    for i in range(first, first + count):
        obs = pod_observation(msgspec.convert(job_pod(i), wire.Pod), "added", NOW)
        assert obs is not None
        out.append(obs)
    return out


def _watcher(streams: list[Reflector], synced: set[int]) -> Watcher:
    watcher = Watcher(
        cast(client.ApiClient, object()),
        KafkaSettings(),
        WatcherSettings(events=False, identity="unit"),
    )
    watcher._streams = [(cast(Any, None), r) for r in streams]
    watcher._synced = synced
    watcher._queue = asyncio.Queue()
    return watcher


async def test_a_sweep_publishes_the_oldest_first_within_its_budget_at_the_rate() -> None:
    now = time.time()
    old = _observations(0, 120)
    # Records written 100..219 s ago; refresh after 60 s: all due, the oldest first.
    ages = {o.uid: now - 100 - i for i, o in enumerate(old)}
    listed = Reflector(wire.Pod, old, ages)
    fresh = _observations(500, 5)
    recent = Reflector(wire.Pod, fresh, {o.uid: now - 1 for o in fresh})
    unlisted = Reflector(wire.Pod, _observations(900, 5), {})  # its list has not run yet
    watcher = _watcher([listed, recent, unlisted], synced={0, 1})

    started = time.monotonic()
    queued = await watcher._sweep(after_s=60, rate=200, sweep_s=0.25)
    took = time.monotonic() - started
    assert queued == 50, "rate * sweep interval per sweep: the rest waits"
    sent = [watcher._queue.get_nowait() for _ in range(queued)]
    assert all(o.change == "refreshed" for o in sent)
    assert [o.uid for o in sent] == [o.uid for o in reversed(old)][:50], "oldest first"
    assert took >= 0.18, f"50 at 200/s in chunks of 20: two pauses of 0.1 s, took {took:.3f}"
    sample = watcher.registry.get_sample_value
    assert sample("jobreaper_watcher_refresh_due") == 120
    assert (sample("jobreaper_watcher_oldest_record_age_seconds") or 0) >= 219

    queued = await watcher._sweep(after_s=60, rate=1000, sweep_s=1)
    assert queued == 70, "the next sweep takes the rest; the refreshed and the fresh wait"
    rest = {watcher._queue.get_nowait().uid for _ in range(queued)}
    assert rest == {o.uid for o in old[:70]}
    assert await watcher._sweep(after_s=60, rate=1000, sweep_s=1) == 0
    watcher._synced.add(2)  # listed now: its objects, of unknown age, go first
    queued = await watcher._sweep(after_s=60, rate=1000, sweep_s=1)
    assert {watcher._queue.get_nowait().uid for _ in range(queued)} == set(unlisted.store)
