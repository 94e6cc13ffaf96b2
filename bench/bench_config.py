"""Benchmark: from an accepted ``PUT /config`` to a running killer holding the new version.

    eval "$(uv run jobreaper-dev stack env --name cfg)"   # any running stack: Kafka is used
    uv run python bench/bench_config.py [--changes 100] [--pause 0.05]

Runs, in this process, a config service (``source=http``, no Lease: the
Lease is not on the path of a change; ``api_auth=none`` on loopback: with
authentication a writer's TokenReview and SubjectAccessReview are cached
10 s, so only the first PUT of a token would pay them) and a killer
(``services.killer.service.Killer``) on fresh topics of the stack's Kafka,
then makes ``--changes`` changes one after another. For each: the time of
the PUT itself (request to 200, the snapshot committed in its transaction),
and the time from the 200 to the killer holding that version
(``killer.config.version``, polled every millisecond). Prints p50, p90, p99
and max of both. The target of issue 7 is p99 < 1 s for the second figure.

No assertions: it reports figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.config.service import ConfigService
from services.config.settings import ConfigServiceSettings
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.logging import configure_logging
from services.runtime.settings import KafkaSettings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def report(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name:<34} n={len(ms):<4} p50={percentile(ms, 50):7.1f} ms  "
        f"p90={percentile(ms, 90):7.1f} ms  p99={percentile(ms, 99):7.1f} ms  "
        f"max={max(ms):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
    )


async def wait_until(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def main(changes: int, pause: float) -> None:
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit(
            "bench: set JOBREAPER_KAFKA_BOOTSTRAP "
            '(eval "$(uv run jobreaper-dev stack env --name cfg)")'
        )
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, job_partitions=1)
    config = ConfigService(
        kafka,
        ConfigServiceSettings(
            source="http", lease=False, api_auth="none", api_port=0, identity="bench"
        ),
    )
    killer = Killer(kafka, KillerServiceSettings(group_id=f"bench-{prefix}", identity="bench"))
    config_task = asyncio.create_task(config.run())
    await wait_until("config service writer", lambda: config.readiness()[0])
    killer_task = asyncio.create_task(killer.run())
    await wait_until("killer ready", lambda: killer.readiness()[0])
    print(
        f"topics {prefix}*  kafka {bootstrap}  killer max_poll_wait_s="
        + f"{killer.settings.max_poll_wait_s}"
    )

    put_s: list[float] = []
    reach_s: list[float] = []
    url = f"http://127.0.0.1:{config.http.bound_port}/config"
    try:
        async with aiohttp.ClientSession() as session:
            version = config.head.version
            for n in range(changes):
                body = json.dumps({"deleteKillingTasksTimeoutSeconds": 60 + n % 2 + 2 * n})
                sent = time.perf_counter()
                async with session.put(
                    url, data=body, headers={"If-Match": f'"{version}"'}
                ) as answer:
                    result = await answer.json()
                    if answer.status != 200 or not result.get("published"):
                        raise SystemExit(f"bench: PUT {n} -> {answer.status} {result}")
                accepted = time.perf_counter()
                version = result["version"]
                # The killer has no event to await: poll its state every millisecond.
                while killer.config is None or killer.config.version < version:
                    await asyncio.sleep(0.001)
                reached = time.perf_counter()
                put_s.append(accepted - sent)
                reach_s.append(reached - accepted)
                await asyncio.sleep(pause)
    finally:
        killer.stop()
        config.stop()
        for task in (killer_task, config_task):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
    print(f"{changes} changes, one after another, {pause * 1000:.0f} ms apart")
    report("PUT accepted (committed)", put_s)
    report("accepted -> killer holds version", reach_s)
    report("PUT sent -> killer holds version", [a + b for a, b in zip(put_s, reach_s, strict=True)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between changes")
    args = parser.parse_args()
    configure_logging("warning", "console")
    asyncio.run(main(args.changes, args.pause))
