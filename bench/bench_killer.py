"""The killer over real Kafka: rebuild from the log and live folding throughput.

    eval "$(uv run jobreaper-dev stack env)"      # a running local stack
    uv run python bench/bench_killer.py [--events 1000000] [--partitions 6]

1. Writes ``--events`` observations (Jobs with running pods, as the watcher
   writes them) to fresh topics.
2. Starts a Killer and times its rebuild: assignment to every partition
   caught up (folded and ready to decide), and the process's peak RSS.
3. With the killer running, another process writes ``--events`` more; times
   how long the killer takes to fold and decide them all as they arrive
   (Kafka consume, decode, evolve, decide). On 2 cores the writer, the broker
   and the killer share the machine, so this is bounded by the writer too.
4. The killer's own capacity on the live path: its partitions are paused
   while another process writes ``--events`` more, then resumed, and the
   backlog is timed until folded and decided (the same loop as live: every
   batch folded, then a decision per partition; not the rebuild path).

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
from typing import Any, cast

from aiokafka import AIOKafkaConsumer

from schemas.annotations import ENFORCE
from schemas.base import Message
from schemas.observations import ContainerSummary, JobObserved, PodObserved
from services.audit.history import partition_for
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
            labels={ENFORCE: "on"},
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


async def produce(
    kafka: KafkaSettings, count: int, offset: int, partitions: int, *, on_cue: bool = False
) -> float:
    """Write ``count`` observations, keyed and partitioned as the watcher's are; the
    time of the writes alone: records are encoded and batched per partition first
    (one ``send`` per record costs about as much CPU as the killer's fold).
    ``on_cue``: print "encoded" and wait for a line on stdin before writing."""
    names = TopicNames(kafka.topic_prefix)
    producer = make_producer(kafka, client_id="bench")
    await producer.start()
    batches: list[tuple[str, int, Any]] = []
    open_batches: dict[tuple[str, int], Any] = {}
    for message in observations(count, offset=offset):
        r = outgoing(names, message, source="/bench")
        assert r.key is not None
        where = (r.topic, partition_for(r.key.decode(), partitions))
        batch = open_batches.get(where)
        if (
            batch is None
            or batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is None
        ):
            batch = open_batches[where] = producer.create_batch()
            batches.append((*where, batch))
            batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
    for _, _, batch in batches:
        batch.close()
    if on_cue:
        print("encoded", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    start = time.perf_counter()
    try:
        sent = [await producer.send_batch(b, topic, partition=p) for topic, p, b in batches]
        await asyncio.gather(*sent)
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
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit('no stack: run eval "$(uv run jobreaper-dev stack env)" first')
    if args.produce_only:
        settings = KafkaSettings(bootstrap=bootstrap, topic_prefix=args.prefix)
        took = await produce(settings, args.events, args.offset, args.partitions, on_cue=True)
        print(f"written in {took:.2f} s", flush=True)
        return
    kafka = KafkaSettings(
        bootstrap=bootstrap,
        topic_prefix=f"bench-{uuid.uuid4().hex[:6]}.",
        job_partitions=args.partitions,
    )
    await ensure_topics(kafka, job_partitions=args.partitions)
    print(f"start: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    writer = await writer_process(kafka, args.events, 0, args.partitions)
    await go(writer)
    print(f"wrote {args.events:,} observations in {await finished(writer)}")

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

    # Written by another process, so the killer has this one's core to itself.
    target = folded(killer) + args.events
    writer = await writer_process(kafka, args.events, 10_000_000, args.partitions)
    start = time.perf_counter()
    await go(writer)
    while folded(killer) < target:
        await asyncio.sleep(0.01)
    live = time.perf_counter() - start
    wrote = await finished(writer)
    print(
        f"live: {args.events:,} observations written by another process in {wrote} (sends "
        f"only, encoded before), folded and decided in {live:.2f} s "
        f"({args.events / live:,.0f} events/s end to end, as they were written)"
    )

    # The real aiokafka consumer (the shell's protocol has no pause/resume).
    consumer = cast(AIOKafkaConsumer, killer._consumer)
    assert consumer is not None
    tps = consumer.assignment()
    consumer.pause(*tps)
    target = folded(killer) + args.events
    writer = await writer_process(kafka, args.events, 20_000_000, args.partitions)
    await go(writer)
    await finished(writer)
    cpu0, start = time.process_time(), time.perf_counter()
    consumer.resume(*tps)
    while folded(killer) < target:
        await asyncio.sleep(0.01)
    drained, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(
        f"backlog: {args.events:,} observations waiting in Kafka folded and decided in "
        f"{drained:.2f} s ({args.events / drained:,.0f} events/s; CPU of the killer's "
        f"process {cpu:.2f} s = {args.events / cpu:,.0f} events per CPU second)"
    )
    print(f"end: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    killer.stop()
    await task


def folded(killer: Killer) -> float:
    return sum(
        s.value
        for m in killer.metrics.folded.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


async def writer_process(
    kafka: KafkaSettings, events: int, offset: int, partitions: int
) -> asyncio.subprocess.Process:
    """A process that encodes ``events`` observations and writes them on cue."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_killer",
        "--produce-only",
        "--events",
        str(events),
        "--offset",
        str(offset),
        "--partitions",
        str(partitions),
        "--prefix",
        str(kafka.topic_prefix),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdout is not None
    line = await writer.stdout.readline()
    if line.strip() != b"encoded":
        raise SystemExit(f"the writer process failed (exit {await writer.wait()})")
    return writer


async def go(writer: asyncio.subprocess.Process) -> None:
    assert writer.stdin is not None
    writer.stdin.write(b"go\n")
    await writer.stdin.drain()


async def finished(writer: asyncio.subprocess.Process) -> str:
    """Wait for the writer; its "written in N s"."""
    out, _ = await writer.communicate()
    return out.decode().strip().removeprefix("written in ") or "?"


if __name__ == "__main__":
    asyncio.run(main())
