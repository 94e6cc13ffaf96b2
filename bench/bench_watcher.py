"""The watcher end to end on the real stack: thousands of pods created on kwok.

    eval "$(uv run jobreaper-dev stack env)"      # a running local stack
    uv run python bench/bench_watcher.py [--pods 5000] [--per-job 100]

Creates ``--pods`` pods (Jobs of ``--per-job`` pods each; kwok runs each pod
for 2 s), runs one watcher in this process and reports:

- observations published per second while the burst lasts;
- the watcher's latency from receiving a change to Kafka acknowledging its
  record (p50, p99), from its ``publish_latency`` histogram. The API server
  is on loopback, so this is apiserver event -> record acknowledged minus a
  loopback hop; the API server's own queueing is not in it;
- with the stack's audit log (``JOBREAPER_AUDIT_LOG``, pods logged at level
  ``RequestResponse``): **API server write -> record acknowledged**, which
  includes the API server's own queueing and its watch cache. Each pod write
  of the audit log (create, update, patch, delete; pod and status) is matched
  to the observation the watcher published for it by pod uid and
  resourceVersion (the audit event's ``responseObject``); latency = the
  moment Kafka acknowledged that observation's batch - the write's
  ``stageTimestamp`` (response complete; the change is in etcd). Writes the
  watcher does not publish (a change of no field it models, a binding whose
  response is a Status) have no match and are counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from kubernetes_asyncio import client

from devtools.stack.audit_log import read_audit_events
from schemas.observations import PodObserved
from services.runtime.kube import load_api_client
from services.runtime.settings import KafkaSettings
from services.watcher.convert import Observation
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings
from tests.integration.helpers import job_manifest

WRITE_VERBS = ("create", "update", "patch", "delete")


class TimedWatcher(Watcher):
    """The watcher, noting when Kafka acknowledged each pod observation (by uid and
    resourceVersion): the other end of the audit-log latency."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acked: dict[tuple[str, str], float] = {}

    async def _send(self, producer: AIOKafkaProducer, batch: list[Observation]) -> None:
        await super()._send(producer, batch)
        acked = time.time()
        for obs in batch:
            if isinstance(obs, PodObserved):
                self.acked.setdefault((obs.uid, obs.resource_version), acked)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def audit_latencies(
    audit_log: Path, namespace: str, acked: dict[tuple[str, str], float]
) -> tuple[list[float], list[float], int]:
    """(write complete -> acked, request received -> acked) in seconds, and the
    number of pod writes with no published observation."""
    from_complete: list[float] = []
    from_received: list[float] = []
    unmatched = 0
    for event in read_audit_events(audit_log):
        ref = event.get("objectRef", {})
        if (
            event.get("stage") != "ResponseComplete"
            or ref.get("resource") != "pods"
            or ref.get("namespace") != namespace
            or event.get("verb") not in WRITE_VERBS
            or event.get("responseStatus", {}).get("code", 500) >= 300
        ):
            continue
        meta = (event.get("responseObject") or {}).get("metadata") or {}
        ack = acked.get((meta.get("uid", ""), meta.get("resourceVersion", "")))
        if ack is None:
            unmatched += 1
            continue
        complete = datetime.fromisoformat(event["stageTimestamp"]).timestamp()
        received = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        from_complete.append(ack - complete)
        from_received.append(ack - received)
    return from_complete, from_received, unmatched


def quantile(buckets: list[tuple[float, float]], total: float, q: float) -> float:
    """The upper bound of the histogram bucket holding quantile ``q``."""
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--per-job", type=int, default=100)
    args = parser.parse_args()
    kubeconfig = os.environ.get("JOBREAPER_KUBECONFIG")
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not (kubeconfig and bootstrap):
        raise SystemExit('no stack: run eval "$(uv run jobreaper-dev stack env)" first')
    api = await load_api_client(kubeconfig)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    await asyncio.sleep(1)
    watcher = TimedWatcher(
        api,
        KafkaSettings(bootstrap=bootstrap, topic_prefix=f"{namespace}.", job_partitions=6),
        WatcherSettings(namespaces=[namespace], lease_namespace=namespace),
    )
    task = asyncio.create_task(watcher.run())
    while not watcher.readiness()[1].startswith("leader"):
        await asyncio.sleep(0.1)
    start, base = time.perf_counter(), watcher.published
    for i in range(args.pods // args.per_job):
        await batch.create_namespaced_job(
            namespace, job_manifest(f"burst-{i}", run="2s", parallelism=args.per_job)
        )
    # Done when every pod succeeded and nothing was published for 3 s.
    last, last_change = watcher.published, time.perf_counter()
    while True:
        await asyncio.sleep(0.5)
        if watcher.published != last:
            last, last_change = watcher.published, time.perf_counter()
            continue
        if time.perf_counter() - last_change > 3:
            pods = (await core.list_namespaced_pod(namespace)).items
            if len(pods) >= args.pods and all(p.status.phase == "Succeeded" for p in pods):
                break
    took = last_change - start
    published = watcher.published - base
    samples = {s.name: s for m in watcher.metrics.publish_latency.collect() for s in m.samples}
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for m in watcher.metrics.publish_latency.collect()
        for s in m.samples
        if s.name.endswith("_bucket")
    )
    total = samples["jobreaper_watcher_publish_latency_seconds_count"].value
    print(f"pods {args.pods:,} in Jobs of {args.per_job}; observations published {published:,}")
    print(f"burst {took:.1f} s: {published / took:,.0f} observations/s published")
    print(
        f"receive -> acknowledged: p50 <= {quantile(buckets, total, 0.5) * 1000:.0f} ms, "
        f"p99 <= {quantile(buckets, total, 0.99) * 1000:.0f} ms (histogram bucket bounds)"
    )
    audit = os.environ.get("JOBREAPER_AUDIT_LOG")
    if audit:
        await asyncio.sleep(2)  # the audit log is written just after each response
        complete, received, unmatched = audit_latencies(Path(audit), namespace, watcher.acked)
        if complete:
            print(
                f"API server write complete -> acknowledged ({len(complete):,} pod writes matched"
                f" by uid+resourceVersion, {unmatched:,} not published): "
                f"p50 {pct(complete, 0.5) * 1000:.0f} ms, p99 {pct(complete, 0.99) * 1000:.0f} ms,"
                f" max {max(complete) * 1000:.0f} ms"
            )
            print(
                f"API server request received -> acknowledged: "
                f"p50 {pct(received, 0.5) * 1000:.0f} ms, p99 {pct(received, 0.99) * 1000:.0f} ms"
            )
        else:
            print(
                f"no pod write of the audit log matched ({unmatched:,} writes): are pods "
                "audited at level RequestResponse (stack up after this change)?"
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    watcher.stop()
    await task
    await core.delete_namespace(namespace)
    await api.close()


if __name__ == "__main__":
    asyncio.run(main())
