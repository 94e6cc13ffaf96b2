"""The killer over real Kafka: rebuild from the log and live folding throughput.

    eval "$(uv run jobreaper stack env)"      # a running local stack
    uv run python bench/bench_killer.py [--events 1000000] [--partitions 6]

1. Writes ``--events`` observations (Jobs with running pods, as the watcher
   writes them) to fresh topics.
2. Starts a Killer and times its rebuild: assignment to every partition
   caught up (folded and ready to decide), and the process's peak RSS.
3. With the killer running, writes ``--events`` more and times how long it
   takes to fold and decide them all: the live, end-to-end throughput
   (Kafka consume, decode, evolve, decide).

Targets (issue 6): >= 20,000 observations/s end to end on 2 cores; restart
to ready with 1,000,000 events and snapshots: ``bench/bench_restart.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from schemas.base import Message
from schemas.observations import ContainerSummary, JobObserved, PodObserved
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

T0 = datetime.now(UTC)  # fresh: no pending timeout or deadline fires during the run


def observations(count: int, *, offset: int = 0, pods_per_job: int = 3) -> Iterator[Message]:
    """Jobs with running pods: per Job one JobObserved, then each pod pending, then running."""
    made, job = 0, offset
    while made < count:
        ns, name = f"team-{job % 50}", f"job-{job}"
        job_uid = f"j-{job}"
        yield JobObserved(
            change="added",
            observed_at=T0,
            resource_version=str(job * 10),
            uid=job_uid,
            namespace=ns,
            name=name,
            start_time=T0,
            active=pods_per_job,
        )
        made += 1
        for k in range(pods_per_job):
            for phase in ("Pending", "Running"):
                if made >= count:
                    return
                running = phase == "Running"
                yield PodObserved(
                    change="added" if not running else "modified",
                    observed_at=T0,
                    resource_version=str(job * 10 + k * 2 + running + 1),
                    uid=f"p-{job}-{k}",
                    namespace=ns,
                    name=f"{name}-{k}",
                    job_name=name,
                    job_uid=job_uid,
                    phase=phase,
                    node_name=f"node-{k}",
                    start_time=T0 + timedelta(seconds=1) if running else None,
                    containers=(ContainerSummary(name="main", state="running", started_at=T0),)
                    if running
                    else (),
                )
                made += 1
        job += 1


async def produce(kafka: KafkaSettings, count: int, offset: int) -> float:
    names = TopicNames(kafka.topic_prefix)
    producer = make_producer(kafka, client_id="bench")
    await producer.start()
    start = time.perf_counter()
    try:
        pending = []
        for message in observations(count, offset=offset):
            r = outgoing(names, message, source="/bench")
            pending.append(await producer.send(r.topic, r.value, key=r.key, headers=r.headers))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - start


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--produce-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit('no stack: run eval "$(uv run jobreaper stack env)" first')
    if args.produce_only:
        settings = KafkaSettings(bootstrap=bootstrap, topic_prefix=args.prefix)
        await produce(settings, args.events, 10_000_000)
        return
    kafka = KafkaSettings(
        bootstrap=bootstrap,
        topic_prefix=f"bench-{uuid.uuid4().hex[:6]}.",
        job_partitions=args.partitions,
    )
    await ensure_topics(kafka, job_partitions=args.partitions)
    took = await produce(kafka, args.events, 0)
    print(f"wrote {args.events:,} observations in {took:.1f} s ({args.events / took:,.0f}/s)")

    base_rss = rss_mib()
    killer = Killer(kafka, KillerServiceSettings(group_id=f"bench-{uuid.uuid4().hex[:6]}"))
    start = time.perf_counter()
    task = asyncio.create_task(killer.run())
    while not killer.readiness()[0]:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    rebuild = time.perf_counter() - start
    print(
        f"rebuild: {args.events:,} events to ready in {rebuild:.2f} s "
        f"({args.events / rebuild:,.0f} events/s); peak RSS {rss_mib():.0f} MiB "
        f"(before the killer {base_rss:.0f} MiB)"
    )

    folded_before = sum(
        s.value
        for m in killer.metrics.folded.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    # Written by another process, so the killer has this one's core to itself.
    start = time.perf_counter()
    producing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_killer",
        "--produce-only",
        "--events",
        str(args.events),
        "--prefix",
        kafka.topic_prefix,
    )
    target = folded_before + args.events
    while True:
        folded = sum(
            s.value
            for m in killer.metrics.folded.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        if folded >= target:
            break
        await asyncio.sleep(0.05)
    live = time.perf_counter() - start
    await producing.wait()
    print(
        f"live: {args.events:,} observations (written by another process) folded and decided "
        f"in {live:.2f} s ({args.events / live:,.0f} events/s end to end)"
    )
    killer.stop()
    await task


if __name__ == "__main__":
    asyncio.run(main())
