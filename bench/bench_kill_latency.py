"""Kill latency end to end on the real stack: 1,000 Jobs killed at staggered times.

    eval "$(uv run jobreaper-dev stack env --name NAME)"     # a running local stack
    uv run python bench/bench_kill_latency.py [--jobs 1000] [--spread-from 60] [--spread-to 120]

What runs: the real watcher, killer and executor on a fresh namespace and
topic prefix of the given stack; kwok runs the pods. By default **in this
process** (the e2e harness, ``tests/e2e/harness.py``: one asyncio loop, one
core, the bench's own polling included); with ``--processes`` each service is
its own process (``python -m services NAME run``), as deployed.

1. ``--jobs`` Jobs of one pod each (kwok keeps them running) are created, and
   the script waits until every pod is Running and the watcher has published it;
2. one ``KillRequested`` per Job is published in advance, ``kill_at`` spread
   evenly over ``[now + spread-from, now + spread-to]`` seconds;
3. when every Job is killed (``JobKilled``) it reads ``kill.commands`` and
   ``kill.results`` and prints, per command, kill latency = ``applied_at -
   due_at`` (the issue's definition: from when the rule made the step due to
   when the executor's write returned): a histogram, p50/p90/p99/max, the
   killer's part (``decided_at - due_at``), and steps applied per second;
4. where the rest went, from the executor's histograms: delivery (decision ->
   the executor has the command: the killer's transaction and the Kafka
   fetch), the API calls, and the executor's transactions (quantiles
   interpolated within histogram buckets, as Prometheus does).

Targets (issue #6): p50 < 200 ms, p99 < 1 s. Prints the machine load: the
figures of a loaded machine are worse than the code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from devtools.demo.processes import ServiceProcess, wait_ready
from devtools.stack.api import StackInfo, stack_from_env
from schemas.events import JobKilled
from schemas.observations import PodObserved
from schemas.requests import KillRequested
from services.executor.service import Executor
from services.runtime.kafka import ensure_topics
from tests.e2e.harness import PARTITIONS, System
from tests.integration.helpers import create_namespace, job_manifest, publish

BUCKETS_MS = (25, 50, 100, 200, 300, 500, 1000, 2000, 5000)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def histogram(values_ms: list[float]) -> list[str]:
    counts = Counter(next((b for b in BUCKETS_MS if v <= b), None) for v in values_ms)
    lines, low = [], 0
    for bound in (*BUCKETS_MS, None):
        n = counts.get(bound, 0)
        label = f"{low:>5}-{bound:<5} ms" if bound is not None else f"   > {low:<5} ms"
        bar = "#" * max(1 if n else 0, round(60 * n / max(1, len(values_ms))))
        lines.append(f"  {label} {n:6d} {bar}")
        low = bound if bound is not None else low
    return lines


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


async def create_jobs(batch: client.BatchV1Api, namespace: str, count: int) -> None:
    slots = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with slots:
            await batch.create_namespaced_job(namespace, job_manifest(f"j-{i:05d}", run="never"))

    await asyncio.gather(*(one(i) for i in range(count)))


async def wait_running(
    core: client.CoreV1Api, system: System, namespace: str, count: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pods = (await core.list_namespaced_pod(namespace)).items
        running = sum(1 for p in pods if p.status.phase == "Running")
        seen = {
            m.uid
            for m in await system.topic("k8s.objects")
            if isinstance(m, PodObserved) and m.phase == "Running"
        }
        print(f"  pods running {running}/{count}, on the topic {len(seen)}", flush=True)
        if running >= count and len(seen) >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {running}/{count} pods running after {timeout:.0f} s")
        await asyncio.sleep(5)


async def publish_requests(
    system: System, namespace: str, count: int, first: datetime, span_s: float
) -> None:
    now = datetime.now(UTC)
    requests = [
        KillRequested(
            request_id=uuid.uuid4().hex,
            namespace=namespace,
            job_name=f"j-{i:05d}",
            kill_at=first + timedelta(seconds=span_s * i / max(1, count - 1)),
            reason="bench",
            requested_by="bench_kill_latency",
            requested_at=now,
        )
        for i in range(count)
    ]
    await publish(system.kafka, *requests, source="/bench")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--spread-from", type=float, default=60.0, help="first kill_at, s ahead")
    parser.add_argument("--spread-to", type=float, default=120.0, help="last kill_at, s ahead")
    parser.add_argument(
        "--processes", action="store_true", help="run each service as its own process"
    )
    args = parser.parse_args()
    stack = stack_from_env()
    if stack is None:
        raise SystemExit('no stack: run eval "$(uv run jobreaper-dev stack env --name NAME)" first')
    print(f"start: {load()}")
    namespace = f"bench-kl-{uuid.uuid4().hex[:6]}"
    system = System(stack, namespace, f"{namespace}.")
    api = await system._api()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    await create_namespace(core, namespace)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-kill-latency-"))
    services: list[ServiceProcess] = []
    try:
        if args.processes:
            services = await start_processes(system, stack, namespace, log_dir)
        else:
            await system.start()
        t0 = time.monotonic()
        await create_jobs(batch, namespace, args.jobs)
        print(f"{args.jobs} Jobs created in {time.monotonic() - t0:.1f} s; waiting for pods")
        await wait_running(core, system, namespace, args.jobs, timeout=900)
        print(f"all running {time.monotonic() - t0:.1f} s after the first create; {load()}")
        first = datetime.now(UTC) + timedelta(seconds=args.spread_from)
        span = args.spread_to - args.spread_from
        await publish_requests(system, namespace, args.jobs, first, span)
        print(f"{args.jobs} kill requests published; kills due from {first:%H:%M:%S} for {span} s")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        deadline = time.monotonic() + args.spread_to + 300
        while True:
            await asyncio.sleep(5)
            killed = sum(isinstance(e, JobKilled) for e in await system.kill_events())
            print(f"  JobKilled {killed}/{args.jobs}; {load()}", flush=True)
            if killed >= args.jobs or time.monotonic() > deadline:
                break
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        await report(system, args.jobs)
        where = "the service processes" if services else "this process (all three)"
        print(f"CPU of this process during the kills: {cpu_s:.1f} s; the services ran in {where}")
        families = await executor_metrics(system, services)
        print("where the latency went (executor histograms):")
        for name, what in STAGES:
            print(f"  {what:<46} {describe(quantiles(families, name))}")
        print(f"end: {load()}")
    finally:
        for service in reversed(services):
            await service.stop()
        async with asyncio.timeout(30):
            await core.delete_namespace(namespace)
        await system.stop()  # closes the API clients, this one too
        if services:
            print(f"service logs: {log_dir}")


async def report(system: System, jobs: int) -> None:
    commands = {c.command_id: c for c in await system.commands()}
    results = [r for r in await system.results() if r.command_id in commands]
    latency_ms = [
        (r.applied_at - commands[r.command_id].due_at).total_seconds() * 1000 for r in results
    ]
    killer_ms = [(c.decided_at - c.due_at).total_seconds() * 1000 for c in commands.values()]
    steps = Counter(r.step for r in results)
    outcomes = Counter(r.outcome for r in results)
    calls = Counter(r.attempts for r in results)
    print(f"\ncommands {len(commands)}, results {len(results)}: {dict(steps)}; {dict(outcomes)}")
    print(f"API calls per command: {dict(sorted(calls.items()))} (1: written unread)")
    if not latency_ms:
        return
    print("kill latency (applied_at - due_at), every command:")
    print("\n".join(histogram(latency_ms)))
    print(
        f"  p50 {pct(latency_ms, 0.5):.0f} ms, p90 {pct(latency_ms, 0.9):.0f} ms, "
        f"p99 {pct(latency_ms, 0.99):.0f} ms, max {max(latency_ms):.0f} ms, "
        f"mean {statistics.mean(latency_ms):.0f} ms (target: p50 < 200 ms, p99 < 1000 ms)"
    )
    print(
        f"killer's part (decided_at - due_at): p50 {pct(killer_ms, 0.5):.0f} ms, "
        f"p99 {pct(killer_ms, 0.99):.0f} ms, max {max(killer_ms):.0f} ms"
    )
    applied = sorted(r.applied_at for r in results)
    span = (applied[-1] - applied[0]).total_seconds()
    per_second = Counter(int(a.timestamp()) for a in applied)
    print(
        f"steps applied: {len(applied)} over {span:.1f} s = {len(applied) / max(span, 1e-9):.1f}/s "
        f"average, busiest second {max(per_second.values())}; JobKilled "
        f"{sum(isinstance(e, JobKilled) for e in await system.kill_events())}/{jobs}"
    )


STAGES = (
    ("jobreaper_executor_command_delivery_seconds", "decided -> executor has it (Kafka)"),
    ("jobreaper_executor_apply_seconds", "API calls of a command"),
    ("jobreaper_executor_commit_seconds", "executor transaction (per batch)"),
)


async def start_processes(
    system: System, stack: StackInfo, namespace: str, log_dir: Path
) -> list[ServiceProcess]:
    """Watcher, killer and executor as processes on the harness's topics and config."""
    await ensure_topics(system.kafka, job_partitions=PARTITIONS)
    await system.configure()
    env = {
        **stack.env(),
        "JOBREAPER_KAFKA_TOPIC_PREFIX": system.prefix,
        "JOBREAPER_KAFKA_JOB_PARTITIONS": str(PARTITIONS),
        "JOBREAPER_LOG_FORMAT": "json",
        # Groups of their own: other runs on the same stack must not join them.
        "JOBREAPER_KILLER_GROUP_ID": f"killer-{system.run_id}",
        "JOBREAPER_EXECUTOR_GROUP_ID": f"executor-{system.run_id}",
        "JOBREAPER_EXECUTOR_TRANSACTIONAL_ID_PREFIX": f"executor-{system.run_id}",
    }
    watcher_env = {
        **env,
        "JOBREAPER_WATCHER_NAMESPACES": namespace,
        "JOBREAPER_WATCHER_LEASE_NAMESPACE": namespace,
    }
    services = [
        ServiceProcess.jobreaper("watcher", watcher_env, log_dir),
        ServiceProcess.jobreaper("killer", env, log_dir),
        ServiceProcess.jobreaper("executor", env, log_dir),
    ]
    for service in services:
        service.start()
    try:
        await wait_ready(services, timeout_s=120)
    except RuntimeError:
        for service in services:
            await service.stop()
        raise
    print(f"watcher, killer, executor ready as processes (logs in {log_dir})")
    return services


async def executor_metrics(system: System, services: list[ServiceProcess]) -> list[Metric]:
    """The executor's metric families: scraped from its process, or its registry."""
    for service in services:
        if service.name == "executor":
            url = f"http://127.0.0.1:{service.http_port}/metrics"
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                return list(text_string_to_metric_families(await response.text()))
    executor = system.service(Executor)
    return list(executor.registry.collect())


def quantiles(families: list[Metric], name: str) -> dict[float, float] | None:
    """p50/p90/p99 of a histogram (all label sets summed), interpolated in buckets."""
    cumulative: dict[float, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] == 0:
        return None
    total = cumulative[bounds[-1]]
    out: dict[float, float] = {}
    for q in (0.5, 0.9, 0.99):
        rank, low, below = q * total, 0.0, 0.0
        for bound in bounds:
            if cumulative[bound] >= rank:
                if bound == float("inf"):
                    out[q] = low  # beyond the last bucket: its lower bound
                else:
                    share = (rank - below) / max(cumulative[bound] - below, 1e-9)
                    out[q] = low + (bound - low) * share
                break
            low, below = bound, cumulative[bound]
    out[-1.0] = total
    return out


def describe(found: dict[float, float] | None) -> str:
    if found is None:
        return "no samples"
    return (
        f"p50 {found[0.5] * 1000:.0f} ms, p90 {found[0.9] * 1000:.0f} ms, "
        f"p99 {found[0.99] * 1000:.0f} ms (n={found[-1.0]:.0f})"
    )


if __name__ == "__main__":
    asyncio.run(main())
