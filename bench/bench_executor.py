"""The executor against the real stack: kill latency and throughput of a burst.

    eval "$(uv run jobreaper-dev stack env)"      # a running local stack
    uv run python bench/bench_executor.py [--pods 300] [--jobs 30] [--partitions 6] [--no-events]
        [--read-first]

1. Creates ``--pods`` running pods (kwok) in a fresh namespace, of ``--jobs``
   Jobs (so spread over the partitions; the executor only touches a pod owned by
   its command's Job).
2. Starts an Executor in-process (Kubernetes Events on) and waits until ready.
3. Produces one ``set-active-deadline`` command per pod at once, each due
   when produced, and waits for every result on ``kill.results``.

Prints the kill latency (``applied_at - due_at``, as the executor's histogram
measures it) percentiles and the burst's throughput. Each command carries
the pod's resourceVersion (as the killer's do), so it is one PATCH written
unread (``--read-first``: without it, a GET and a PATCH), plus its share of
one Kafka transaction per batch, and two Event creations in the background.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import NamedTuple

import orjson
from kubernetes_asyncio import client

from schemas.commands import CommandApplied, CommandIssued
from services.executor.service import Executor
from services.executor.settings import ExecutorSettings
from services.runtime.kafka import ensure_topics, make_consumer, make_producer, topic_partitions
from services.runtime.kube import KubeApiError, load_api_client, request_json
from services.runtime.logging import configure_logging
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames


class BenchPod(NamedTuple):
    name: str
    uid: str
    job: str
    job_uid: str


async def create_pods(
    api: client.ApiClient, namespace: str, count: int, jobs: int
) -> list[BenchPod]:
    """``count`` never-ending pods of ``jobs`` Jobs (the executor only touches a pod
    its command's Job owns), once all of them exist."""
    per_job = -(-count // jobs)

    async def one(j: int) -> None:
        pods = min(per_job, count - j * per_job)
        if pods <= 0:
            return
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"job-{j}"},
            "spec": {
                "parallelism": pods,
                "completions": pods,
                "backoffLimit": 0,
                "template": {
                    "metadata": {
                        "annotations": {
                            "jobreaper.test/ignore-deadline": "true",
                            "pod-complete.stage.kwok.x-k8s.io/delay": "never",
                        }
                    },
                    "spec": {
                        "containers": [{"name": "main", "image": "x"}],
                        "restartPolicy": "Never",
                    },
                },
            },
        }
        await request_json(api, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", body=body)

    await asyncio.gather(*(one(j) for j in range(jobs)))
    while True:
        raw = await request_json(api, "GET", f"/api/v1/namespaces/{namespace}/pods")
        found = []
        for p in orjson.loads(raw)["items"]:
            (owner,) = p["metadata"]["ownerReferences"]
            found.append(
                BenchPod(p["metadata"]["name"], p["metadata"]["uid"], owner["name"], owner["uid"])
            )
        if len(found) >= count:
            return sorted(found)
        await asyncio.sleep(0.5)


async def wait_running(api: client.ApiClient, namespace: str, count: int) -> dict[str, str]:
    """Until ``count`` pods run; their resourceVersions by name (what the killer has
    from the watcher when it decides)."""
    while True:
        raw = await request_json(api, "GET", f"/api/v1/namespaces/{namespace}/pods")
        running = {
            p["metadata"]["name"]: p["metadata"]["resourceVersion"]
            for p in orjson.loads(raw)["items"]
            if p["status"].get("phase") == "Running"
        }
        if len(running) >= count:
            return running
        await asyncio.sleep(0.5)


async def main(pods: int, jobs: int, partitions: int, events: bool, read_first: bool) -> None:
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    kafka = KafkaSettings(
        bootstrap=bootstrap,
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
        job_partitions=partitions,
    )
    await ensure_topics(kafka, job_partitions=partitions)
    api = await load_api_client(None)
    namespace = f"bench-exec-{uuid.uuid4().hex[:6]}"
    await request_json(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    try:
        while True:
            try:
                await request_json(
                    api, "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
                )
                break
            except KubeApiError:
                await asyncio.sleep(0.2)
        created = await create_pods(api, namespace, pods, jobs)
        await wait_running(api, namespace, pods)
        await asyncio.sleep(2)  # kwok's last status writes settle
        versions = await wait_running(api, namespace, pods)
        print(f"{pods} pods running in {namespace}")

        executor_api = await load_api_client(None)
        executor = Executor(
            executor_api,
            kafka,
            ExecutorSettings(group_id=f"bench-{uuid.uuid4().hex[:6]}", events=events),
        )
        task = asyncio.create_task(executor.run())
        while not executor.readiness()[0]:
            await asyncio.sleep(0.1)

        now = datetime.now(UTC)
        commands = [
            CommandIssued(
                command_id=uuid.uuid4().hex,
                step="set-active-deadline",
                namespace=namespace,
                job_name=pod.job,
                job_uid=pod.job_uid,
                pod_name=pod.name,
                pod_uid=pod.uid,
                pod_resource_version=None if read_first else versions[pod.name],
                active_deadline_seconds=3600,
                trigger="Killed",
                reason="Killed",
                rule="ladder.active-deadline",
                config_version=0,
                due_at=now,
                decided_at=now,
            )
            for pod in created
        ]
        producer = make_producer(kafka, client_id="bench")
        await producer.start()
        started = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        names = TopicNames(kafka.topic_prefix)
        futures = []
        for cmd in commands:
            r = outgoing(names, cmd, source="/bench")
            futures.append(await producer.send(r.topic, r.value, key=r.key, headers=r.headers))
        await asyncio.gather(*futures)
        await producer.stop()

        results: dict[str, CommandApplied] = {}
        reader = make_consumer(kafka, client_id="bench-reader", group_id=None)
        await reader.start()
        reader.assign(await topic_partitions(kafka, [names("kill.results")]))
        await reader.seek_to_beginning()
        while len(results) < len(commands):
            batches = await reader.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    message = CODEC.decode(rec.headers, rec.value).message
                    if isinstance(message, CommandApplied):
                        results[message.command_id] = message
        elapsed = time.perf_counter() - started
        await reader.stop()
        executor.stop()
        await task
        await executor_api.close()

        latencies = sorted((r.applied_at - now).total_seconds() for r in results.values())
        outcomes = {r.outcome for r in results.values()}

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

        calls = Counter(r.attempts for r in results.values())
        print(f"outcomes: {outcomes}; API calls per command: {dict(sorted(calls.items()))}")
        print(
            f"kill latency (applied_at - due_at) over {len(latencies)} commands due at once: "
            f"p50 {pct(0.5) * 1000:.0f} ms, p90 {pct(0.9) * 1000:.0f} ms, "
            f"p99 {pct(0.99) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
            f"mean {statistics.mean(latencies) * 1000:.0f} ms"
        )
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        rate = len(results) / elapsed
        print(f"burst: {len(results)} results in {elapsed:.2f} s = {rate:.0f} commands/s")
        print(f"this process's CPU (executor + bench): {cpu.ru_utime + cpu.ru_stime - cpu0:.2f} s")
    finally:
        await request_json(api, "DELETE", f"/api/v1/namespaces/{namespace}")
        await api.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--no-events", action="store_true", help="no Kubernetes Events")
    parser.add_argument(
        "--read-first",
        action="store_true",
        help="commands without the pod's resourceVersion: the executor reads (GET) first",
    )
    args = parser.parse_args()
    configure_logging("warning")
    asyncio.run(main(args.pods, args.jobs, args.partitions, not args.no_events, args.read_first))
