"""Benchmark: ``load_timeline`` for one Job among many, reading its one partition
per topic, against reading every partition (what a scan would cost).

    eval "$(uv run jobreaper-dev stack env --name audit)"   # any running stack: Kafka is used
    uv run python bench/bench_audit.py [--jobs 600] [--pods 4] [--updates 20]

Publishes, on fresh topics (6 partitions), ``--jobs`` Jobs with ``--pods`` pods
each and ``--updates`` observations per pod, then times ``load_timeline`` for one
Job (best of 3) and a full read of the same topics. No assertions: it reports
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import ConsumerRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.annotations import ENFORCE
from schemas.observations import JobObserved, PodObserved
from services.audit import load_timeline
from services.audit.history import KEYED_BY_JOB, WRITTEN_BY_KILLER
from services.runtime.kafka import (
    ensure_topics,
    make_consumer,
    make_producer,
    read_to_end,
    topic_partitions,
)
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def publish(kafka: KafkaSettings, jobs: int, pods: int, updates: int) -> int:
    names = TopicNames(kafka.topic_prefix)
    producer = make_producer(kafka, client_id="bench-audit")
    await producer.start()
    sent = 0
    try:
        for j in range(jobs):
            job = JobObserved(
                change="added",
                observed_at=T0,
                resource_version="1",
                uid=f"job-{j}",
                namespace="bench",
                name=f"job-{j}",
                labels={ENFORCE: "on"},
            )
            batch = [outgoing(names, job, source="/bench")]
            for p in range(pods):
                for u in range(updates):
                    pod = PodObserved(
                        change="modified",
                        observed_at=T0 + timedelta(seconds=u),
                        resource_version=str(u),
                        uid=f"pod-{j}-{p}",
                        namespace="bench",
                        name=f"job-{j}-{p}",
                        job_name=f"job-{j}",
                        job_uid=f"job-{j}",
                        phase="Running",
                        node_name=f"node-{u % 3}",
                    )
                    batch.append(outgoing(names, pod, source="/bench"))
            for r in batch:
                await producer.send(r.topic, r.value, key=r.key, headers=r.headers)
            sent += len(batch)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def read_everything(kafka: KafkaSettings) -> int:
    names = TopicNames(kafka.topic_prefix)
    partitions = await topic_partitions(
        kafka, [names(t) for t in (*KEYED_BY_JOB, *WRITTEN_BY_KILLER)]
    )
    count = 0

    def keep(_: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal count
        count += 1

    consumer = make_consumer(kafka, client_id="bench-scan", group_id=None)
    await consumer.start()
    try:
        await read_to_end(consumer, partitions, keep)
    finally:
        await consumer.stop()
    return count


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args()
    kafka = KafkaSettings(topic_prefix=f"bench-audit-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka, job_partitions=6)
    sent = await publish(kafka, args.jobs, args.pods, args.updates)
    print(f"published {sent} observations for {args.jobs} Jobs on 6 partitions")
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        timeline = await load_timeline(kafka, "bench", "job-7")
        timings.append(time.perf_counter() - started)
    print(
        f"load_timeline(one Job, its partitions only): best {min(timings) * 1000:.0f} ms "
        f"({len(timeline.entries)} entries, {len(timeline.pods)} pods)"
    )
    started = time.perf_counter()
    count = await read_everything(kafka)
    print(
        f"reading every partition instead: {(time.perf_counter() - started) * 1000:.0f} ms "
        f"({count} records)"
    )


if __name__ == "__main__":
    asyncio.run(main())
