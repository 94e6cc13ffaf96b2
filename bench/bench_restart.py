"""Killer restart-to-ready with a big log, with and without snapshots (issue 8).

    eval "$(uv run jobreaper-dev stack env --name NAME)"
    uv run python -m bench.bench_restart --events 1000000 --prefix bench-restart-1m.

1. Unless ``--prefix`` already holds ``--events`` observations, creates its
   topics and writes them (Jobs with running pods, as bench_killer writes
   them, but from pre-encoded templates, one producer, big batches: ~1M in
   a minute or two). The topics are kept: the next run with the same prefix
   reuses them (``--fresh`` writes a new prefix).
2. A killer process with an empty snapshot directory: full replay, time to
   ready and RSS; it then writes a snapshot of every partition (time, bytes).
3. A new killer process with that directory: loads the snapshots, folds the
   (empty) tail: time to ready and RSS.

Each killer runs in its own process, so its peak RSS is its own, and its time
is measured from ``Killer.run()`` (after imports) to readiness; the time to
join the group and be assigned is shown apart. Target (issue 8): ready
within 5 s with a snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.bench_killer import observations
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.kafka import client_kwargs, ensure_topics, topic_partitions
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

SENTINEL = 987654321
"""A job number written into the templates, replaced by the real one (its digits
also start every resource version of that Job, so those follow)."""


def templates() -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """One Job's records (JobObserved, 3 pods pending then running), encoded once."""
    names = TopicNames("")
    out = []
    for message in observations(7, offset=SENTINEL):
        record = outgoing(names, message, source="/bench")
        assert record.key is not None
        out.append((record.topic, record.key, record.value, record.headers))
    return out


async def produce(kafka: KafkaSettings, events: int, partitions: int) -> None:
    """Pre-encoded records (a byte replace per record, no pydantic), one producer with
    big batches; a Job's records all go to partition ``job % partitions`` (the killer
    needs a Job in one partition, not a particular hash)."""
    names = TopicNames(kafka.topic_prefix)
    marker = str(SENTINEL).encode()
    producer = AIOKafkaProducer(
        **client_kwargs(kafka),
        client_id="bench-restart",
        acks=1,
        linger_ms=50,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    await producer.start()
    start = time.perf_counter()
    sent = 0
    try:
        pending = []
        job = 0
        while sent < events:
            number = str(job).encode()
            for topic, key, value, headers in templates_cache:
                if sent >= events:
                    break
                ce = [(k, f"bench-{sent}".encode()) if k == "ce_id" else (k, v) for k, v in headers]
                pending.append(
                    await producer.send(
                        names(topic),
                        value.replace(marker, number),
                        key=key.replace(marker, number),
                        headers=ce,
                        partition=job % partitions,
                    )
                )
                sent += 1
            job += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                rate = sent / (time.perf_counter() - start)
                print(f"\r  {sent:,} written ({rate:,.0f}/s)", end="", flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    took = time.perf_counter() - start
    print(f"\rwrote {sent:,} observations in {took:.1f} s ({sent / took:,.0f}/s)")


templates_cache = templates()


async def records_in(kafka: KafkaSettings) -> int:
    names = TopicNames(kafka.topic_prefix)
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="bench-restart")
    await admin.start()
    try:
        # Listed first: describing a missing topic would auto-create it (3 partitions).
        exists = names("k8s.objects") in await admin.list_topics()
    finally:
        await admin.close()
    if not exists:
        return 0
    parts = await topic_partitions(kafka, [names("k8s.objects")])
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), client_id="bench-restart", group_id=None)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def counter(killer: Killer, name: str) -> float:
    return killer.registry.get_sample_value(name) or 0.0


async def run_killer(args: argparse.Namespace) -> dict[str, Any]:
    """One killer process: time to ready, RSS, and (with --wait-snapshots) the writes."""
    kafka = KafkaSettings(
        bootstrap=os.environ["JOBREAPER_KAFKA_BOOTSTRAP"],
        topic_prefix=args.prefix,
        job_partitions=args.partitions,
    )
    settings = KillerServiceSettings(
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        snapshot_dir=args.snapshot_dir,
        snapshot_every_s=3600,
        snapshot_every_records=1,  # a snapshot of each partition as soon as it is caught up
    )
    base_rss = rss_mib()
    killer = Killer(kafka, settings)
    start = time.perf_counter()
    task = asyncio.create_task(killer.run())
    assigned = None
    while not killer.readiness()[0] or len(killer.partitions) < args.partitions:
        if task.done():
            task.result()
        if assigned is None and killer.partitions:
            assigned = time.perf_counter() - start
        await asyncio.sleep(0.01)
    ready = time.perf_counter() - start
    out: dict[str, Any] = {
        "ready_s": ready,
        "assigned_s": assigned if assigned is not None else ready,
        "rss_mib": rss_mib(),
        "base_rss_mib": base_rss,
        "loaded": counter(killer, "jobreaper_killer_snapshots_loaded_total"),
        "folded": sum(
            s.value
            for m in killer.metrics.folded.collect()
            for s in m.samples
            if s.name.endswith("_total")
        ),
        "partitions": len(killer.partitions),
    }
    if args.wait_snapshots:
        written_from = time.perf_counter()
        while counter(killer, "jobreaper_killer_snapshots_written_total") < len(killer.partitions):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        out["snapshots_s"] = time.perf_counter() - written_from
        out["snapshot_bytes"] = sum(
            s.value for m in killer.metrics.snapshot_bytes.collect() for s in m.samples
        )
        freeze = killer.registry.get_sample_value("jobreaper_killer_snapshot_freeze_seconds_sum")
        out["freeze_s_total"] = freeze
        out["rss_after_snapshots_mib"] = rss_mib()
    killer.stop()
    await task
    return out


def killer_process(prefix: str, partitions: int, snapshot_dir: str, wait: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.bench_restart",
        "--phase",
        "killer",
        "--prefix",
        prefix,
        "--partitions",
        str(partitions),
        "--snapshot-dir",
        snapshot_dir,
    ] + (["--wait-snapshots"] if wait else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"killer process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--prefix", default="bench-restart.", help="reused when it has the data")
    parser.add_argument("--fresh", action="store_true", help="write to a new prefix")
    parser.add_argument("--phase", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--wait-snapshots", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit('no stack: run eval "$(uv run jobreaper-dev stack env --name NAME)" first')
    if args.phase == "killer":
        print(json.dumps(await run_killer(args)))
        return
    prefix = f"bench-restart-{uuid.uuid4().hex[:6]}." if args.fresh else args.prefix
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, job_partitions=args.partitions)
    have = await records_in(kafka)
    if have >= args.events:
        print(f"reusing {have:,} observations on prefix {prefix!r}")
    else:
        if have:
            raise SystemExit(f"{prefix!r} has {have:,} observations, fewer than asked: use --fresh")
        await ensure_topics(kafka, job_partitions=args.partitions)
        await produce(kafka, args.events, args.partitions)
        have = args.events
    if args.phase == "produce":
        return
    snapshots = tempfile.mkdtemp(prefix="bench-snapshots-")
    try:
        full = killer_process(prefix, args.partitions, snapshots, wait=True)
        print(
            f"full replay: {full['folded']:,.0f} records to ready in {full['ready_s']:.2f} s "
            f"(assigned after {full['assigned_s']:.2f} s); RSS {full['rss_mib']:.0f} MiB "
            f"(before the killer {full['base_rss_mib']:.0f} MiB)"
        )
        print(
            f"snapshots: {full['partitions']} partitions written in {full['snapshots_s']:.2f} s, "
            f"{full['snapshot_bytes'] / 2**20:.1f} MiB, partitions frozen "
            f"{full['freeze_s_total']:.2f} s in total; "
            f"RSS after {full['rss_after_snapshots_mib']:.0f} MiB"
        )
        warm = killer_process(prefix, args.partitions, snapshots, wait=False)
        print(
            f"from snapshots: ready in {warm['ready_s']:.2f} s (assigned after "
            f"{warm['assigned_s']:.2f} s, {warm['loaded']:.0f} snapshots loaded, "
            f"{warm['folded']:,.0f} records folded); RSS {warm['rss_mib']:.0f} MiB"
        )
    finally:
        shutil.rmtree(snapshots, ignore_errors=True)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    asyncio.run(main())
