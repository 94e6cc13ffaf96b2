"""Benchmark of the pure killer core (no Kafka, no Kubernetes).

    uv run python bench/bench_core.py [--pods 100000] [--events 300000]

Prints:

1. throughput: a realistic mix of observations (Jobs created, their pods
   pending -> scheduled -> running -> succeeded, Job status updates, nodes
   going NotReady, kill requests for some Jobs, the killer's own commands and
   results folded back) through ``evolve`` + ``decide`` on one core, with
   ``decide`` after every event and after batches of 100 events (what the
   runtime does per Kafka poll); the clock advances with the events so timers
   fire along the way. Time is the process's CPU time (one thread), best of
   ``--repeat`` runs, so a busy host skews it less;
2. memory: bytes of state per tracked pod at ``--pods`` pods (tracemalloc:
   everything the state keeps alive, after the events themselves are dropped).

No assertions: it reports figures.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import decide, evolve, new_state
from core.evolve import Event
from schemas.annotations import ENFORCE
from schemas.commands import CommandApplied
from schemas.observations import (
    ContainerSummary,
    JobCondition,
    JobObserved,
    NodeObserved,
    PodObserved,
)
from schemas.requests import KillRequested

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODES = [f"node-{i:03d}" for i in range(200)]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Workload:
    """Generates a plausible event stream for a batch cluster."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.rv = 0

    def _rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def job(
        self, t: float, i: int, *, active: int, done: bool = False, kill: bool = False
    ) -> JobObserved:
        ann = {"jobreaper.io/kill-timestamp": at(t + 30).isoformat()} if kill else {}
        conditions = (
            (JobCondition(type="Complete", status="True", last_transition_time=at(t)),)
            if done
            else ()
        )
        return JobObserved(
            change="added" if active == 0 and not done else "modified",
            observed_at=at(t),
            resource_version=self._rv(),
            uid=f"job-uid-{i:08d}",
            namespace=f"team-{i % 50}",
            name=f"batch-{i:08d}",
            labels={
                ENFORCE: "on",
                "app": "batch",
                "team": f"team-{i % 50}",
                "job-name": f"batch-{i:08d}",
            },
            annotations=ann,
            creation_timestamp=at(t),
            active_deadline_seconds=3600,
            start_time=at(t),
            conditions=conditions,
            active=active,
            succeeded=0 if not done else 1,
        )

    def pod(
        self,
        t: float,
        i: int,
        k: int,
        *,
        phase: str,
        node: str | None,
        start: float | None,
        running: bool,
        change: str = "modified",
    ) -> PodObserved:
        containers: tuple[ContainerSummary, ...] = ()
        if start is not None:
            containers = (
                ContainerSummary(
                    name="main",
                    state="running" if running else "terminated",
                    started_at=at(start),
                    exit_code=None if running else 0,
                ),
            )
        return PodObserved(
            change=change,
            observed_at=at(t),
            resource_version=self._rv(),
            uid=f"pod-uid-{i:08d}-{k}-aaaaaaaaaaaaaaaa",
            namespace=f"team-{i % 50}",
            name=f"batch-{i:08d}-{k}-x7k2p",
            job_name=f"batch-{i:08d}",
            job_uid=f"job-uid-{i:08d}",
            creation_timestamp=at(t),
            phase=phase,
            node_name=node,
            start_time=None if start is None else at(start),
            containers=containers,
        )

    def jobs(self, n_jobs: int, pods_per_job: int, spacing: float) -> Iterator[Event]:
        """Each Job: created, pods pending, scheduled, running, then (most)
        succeed; ~3% get a kill annotation; ~1% of the time a node flaps."""
        rng = self.rng
        for i in range(n_jobs):
            t = i * spacing
            kill = rng.random() < 0.03
            yield self.job(t, i, active=0)
            nodes = [rng.choice(NODES) for _ in range(pods_per_job)]
            for k in range(pods_per_job):
                yield self.pod(t, i, k, phase="Pending", node=None, start=None, running=False)
            for k in range(pods_per_job):
                yield self.pod(
                    t + 1, i, k, phase="Pending", node=nodes[k], start=None, running=False
                )
            yield self.job(t + 2, i, active=pods_per_job, kill=kill)
            for k in range(pods_per_job):
                yield self.pod(
                    t + 3, i, k, phase="Running", node=nodes[k], start=t + 3, running=True
                )
            if rng.random() < 0.01:
                yield NodeObserved(
                    change="modified",
                    observed_at=at(t + 4),
                    resource_version=self._rv(),
                    name=rng.choice(NODES),
                    uid="n",
                    status=rng.choice(["ready", "not-ready"]),
                )
            if not kill and rng.random() < 0.9:
                for k in range(pods_per_job):
                    yield self.pod(
                        t + 20, i, k, phase="Succeeded", node=nodes[k], start=t + 3, running=False
                    )
                yield self.job(t + 21, i, active=0, done=True)


def with_kill_requests(events: list[Event]) -> list[Event]:
    """``events`` with kill requests for a few Jobs by name, spread through the stream."""
    for j in range(0, len(events), 997):
        ev = events[j]
        if isinstance(ev, JobObserved):
            events.insert(
                j + 1,
                KillRequested(
                    request_id=f"r{j}",
                    namespace=ev.namespace,
                    job_name=ev.name,
                    requested_by="bench",
                    requested_at=ev.observed_at,
                ),
            )
    return events


def throughput(n_events: int, batch: int, pods_per_job: int = 3) -> tuple[int, float, int, int]:
    """(events, seconds, commands, kill events) for evolve + decide over the mix."""
    wl = Workload()
    per_job = 4 + 3 * pods_per_job
    events = with_kill_requests(
        list(wl.jobs(n_events // per_job + 1, pods_per_job, spacing=0.5))[:n_events]
    )
    state = new_state()
    n_cmds = n_kill_events = 0
    # The pre-generated events would not exist in a real consumer (each record is
    # dropped once folded): keep the garbage collector from scanning them.
    gc.collect()
    gc.freeze()
    started = time.process_time()
    pending: list[Event] = []
    for idx, ev in enumerate(events):
        state = evolve(state, ev)
        if (idx + 1) % batch == 0:
            now = getattr(ev, "observed_at", None) or getattr(ev, "requested_at", T0)
            assert isinstance(now, datetime)
            d = decide(state, now)
            n_cmds += len(d.commands)
            n_kill_events += len(d.kill_events)
            # Fold our own output back and apply it (results), as the runtime does.
            for c in d.commands:
                pending.append(c)
                pending.append(
                    # built unvalidated, like the pre-generated observations: decoding
                    # records is the consumer's cost, not the core's
                    CommandApplied.model_construct(
                        command_id=c.command_id,
                        step=c.step,
                        namespace=c.namespace,
                        job_name=c.job_name,
                        job_uid=c.job_uid,
                        pod_name=c.pod_name,
                        pod_uid=c.pod_uid,
                        attempt=c.attempt,
                        outcome="applied",
                        applied_at=c.decided_at,
                    )
                )
            pending.extend(d.kill_events)
            for own in pending:
                state = evolve(state, own)
            pending.clear()
    elapsed = time.process_time() - started
    gc.unfreeze()
    return len(events), elapsed, n_cmds, n_kill_events


def memory(n_pods: int, pods_per_job: int) -> tuple[int, int, int]:
    """(tracked pods, bytes, jobs) of state after folding a cluster with n_pods
    running pods; events are generated and dropped one by one."""
    wl = Workload(seed=11)
    n_jobs = n_pods // pods_per_job
    gc.collect()
    tracemalloc.start()
    state = new_state()
    for i in range(n_jobs):
        t = i * 0.01
        state = evolve(state, wl.job(t, i, active=pods_per_job))
        for k in range(pods_per_job):
            node = NODES[(i * pods_per_job + k) % len(NODES)]
            state = evolve(
                state,
                wl.pod(t, i, k, phase="Running", node=node, start=t, running=True, change="added"),
            )
    decide(state, at(n_jobs * 0.01 + 1))
    gc.collect()
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return len(state.pods), current, n_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (noisy hosts)")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, one core, best of {args.repeat}")
    for batch in (1, 100):
        runs = [throughput(args.events, batch) for _ in range(args.repeat)]
        n, secs, cmds, kev = min(runs, key=lambda r: r[1])
        print(
            f"throughput (decide every {batch:>3} events): {n:,} events in {secs:.2f} s = "
            f"{n / secs:,.0f} events/s  ({cmds} commands, {kev} kill events)"
        )
    for ppj in (1, 4):
        pods, used, jobs = memory(args.pods, ppj)
        print(
            f"memory ({pods:,} running pods, {ppj} per Job, {jobs:,} Jobs): "
            f"{used / 2**20:,.1f} MiB = {used / pods:,.0f} bytes per tracked pod"
        )


if __name__ == "__main__":
    main()
