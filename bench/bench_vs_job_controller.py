"""jobreaper beside its peer, the Kubernetes Job controller, killing Jobs at the same instants.

    eval "$(uv run jobreaper-dev stack env --name NAME)"     # a running local stack
    uv run python bench/bench_vs_job_controller.py [--jobs 50] [--deadline 30]

On one stack, in one fresh namespace, at the same moment it creates ``--jobs``
Jobs of each kind (one pod each, kwok keeps it running, ``backoffLimit`` 6 as
Kubernetes defaults):

- **peer**: ``spec.activeDeadlineSeconds = --deadline``, out of jobreaper's scope
  (no opt-in label): the Job controller alone kills them, due at
  ``status.startTime + deadline`` (the instant the controller itself reckons from);
- **jobreaper**: opted in, annotated ``jobreaper.io/kill-timestamp`` = creation
  time + ``--deadline``: jobreaper's watcher, killer and executor (this process,
  the e2e harness) kill them.

It watches the Jobs until each has a terminal condition, then reads the API
server's audit log and prints, per kind, p50/p99/max of

1. **first pod write - due**: the first accepted patch or delete of one of the
   Job's pods by a controller (jobreaper's executor or the kube-controller-manager;
   kwok's own writes are the kubelet's part and are left out);
2. **due -> terminal**: the due time to the moment this script's watch saw the
   Job's ``Failed`` condition (both kinds seen by the same watch);

and the pods created after the due time (replacements a kill should prevent).
Goal (issue #17): jobreaper's p99 no worse than the Job controller's. Prints the
machine load: the figures of a loaded machine are worse than the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch

from devtools.stack.api import stack_from_env
from tests.e2e.harness import System, rfc3339
from tests.integration.helpers import EXECUTOR_USER_AGENT, create_namespace, job_manifest

KILL_TIMESTAMP = "jobreaper.io/kill-timestamp"
PEER, OURS = "peer", "jobreaper"


@dataclass
class Seen:
    """What the watch saw of one Job."""

    kind: str
    due: datetime | None = None
    terminal_at: datetime | None = None
    reason: str = ""
    conditions: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def describe(values_s: list[float]) -> str:
    if not values_s:
        return "no samples"
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {pct(ms, 0.5):7.0f} ms  p99 {pct(ms, 0.99):7.0f} ms  "
        f"max {max(ms):7.0f} ms  (n={len(ms)})"
    )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def create_jobs(
    batch: client.BatchV1Api, namespace: str, count: int, deadline_s: int
) -> None:
    """Both kinds, interleaved, so that neither is created (and due) earlier."""
    slots = asyncio.Semaphore(16)

    async def one(kind: str, i: int) -> None:
        async with slots:
            if kind == PEER:
                body = job_manifest(
                    f"peer-{i:04d}",
                    run="never",
                    backoff_limit=6,
                    active_deadline_seconds=deadline_s,
                    enforce=None,
                )
            else:
                due = datetime.now(UTC) + timedelta(seconds=deadline_s)
                body = job_manifest(
                    f"ours-{i:04d}",
                    run="never",
                    backoff_limit=6,
                    annotations={KILL_TIMESTAMP: rfc3339(due)},
                )
            await batch.create_namespaced_job(namespace, body)

    await asyncio.gather(*(one(kind, i) for i in range(count) for kind in (PEER, OURS)))


def observe(seen: dict[str, Seen], job: Any) -> None:
    name = job.metadata.name
    entry = seen.setdefault(name, Seen(PEER if name.startswith("peer-") else OURS))
    if entry.due is None:
        if entry.kind == PEER and job.status and job.status.start_time:
            entry.due = job.status.start_time + timedelta(seconds=job.spec.active_deadline_seconds)
        elif entry.kind == OURS and job.metadata.annotations:
            entry.due = parse_time(job.metadata.annotations[KILL_TIMESTAMP])
    for cond in (job.status and job.status.conditions) or []:
        label = f"{cond.type}/{cond.reason}"
        if label not in entry.conditions:
            entry.conditions.append(label)
        terminal = cond.type in ("Failed", "Complete") and cond.status == "True"
        if terminal and entry.terminal_at is None:
            entry.terminal_at = datetime.now(UTC)
            entry.reason = label


async def watch_jobs(
    batch: client.BatchV1Api, namespace: str, seen: dict[str, Seen], total: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last_print = 0.0
    while time.monotonic() < deadline:
        listed = await batch.list_namespaced_job(namespace)
        for job in listed.items:
            observe(seen, job)
        w = watch.Watch()
        try:
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                async for event in w.stream(
                    batch.list_namespaced_job,
                    namespace,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    observe(seen, event["object"])
                    done = sum(1 for s in seen.values() if s.terminal_at is not None)
                    if time.monotonic() - last_print > 5:
                        last_print = time.monotonic()
                        print(f"  terminal {done}/{total}; {load()}", flush=True)
                    if done >= total:
                        return
        except TimeoutError:
            break
        finally:
            w.stop()


def audit_of(audit_log: Path, namespace: str) -> list[dict[str, Any]]:
    quoted = f'"{namespace}"'
    with audit_log.open() as f:
        return [json.loads(line) for line in f if quoted in line]


def by_controller(entry: dict[str, Any]) -> bool:
    agent = str(entry.get("userAgent", ""))
    return agent.startswith(EXECUTOR_USER_AGENT) or "kube-controller-manager" in agent


def first_pod_writes(
    entries: list[dict[str, Any]], namespace: str
) -> dict[str, tuple[datetime, str]]:
    """Per Job name, the first accepted pod patch/delete by a controller, and by whom."""
    first: dict[str, tuple[datetime, str]] = {}
    for e in entries:
        ref = e.get("objectRef", {})
        if (
            e.get("stage") != "ResponseComplete"
            or e.get("verb") not in ("patch", "delete")
            or ref.get("resource") != "pods"
            or ref.get("subresource")
            or ref.get("namespace") != namespace
            or not 200 <= int(e.get("responseStatus", {}).get("code", 0)) < 300
            or not by_controller(e)
        ):
            continue
        job = str(ref.get("name", "")).rsplit("-", 1)[0]
        at = parse_time(e["stageTimestamp"])
        who = "jobreaper" if str(e["userAgent"]).startswith(EXECUTOR_USER_AGENT) else "job-ctrl"
        if job not in first or at < first[job][0]:
            first[job] = (at, f"{who} {e['verb']}")
    return first


def creations_after_due(
    entries: list[dict[str, Any]], namespace: str, seen: dict[str, Seen]
) -> Counter[str]:
    late: Counter[str] = Counter()
    for e in entries:
        ref = e.get("objectRef", {})
        if (
            e.get("stage") == "ResponseComplete"
            and e.get("verb") == "create"
            and ref.get("resource") == "pods"
            and not ref.get("subresource")
            and 200 <= int(e.get("responseStatus", {}).get("code", 0)) < 300
        ):
            name = str((e.get("responseObject") or {}).get("metadata", {}).get("name", ""))
            name = name or str(ref.get("name", ""))
            job = name.rsplit("-", 1)[0]
            entry = seen.get(job)
            if entry and entry.due and parse_time(e["stageTimestamp"]) > entry.due:
                late[entry.kind] += 1
    return late


def report(seen: dict[str, Seen], entries: list[dict[str, Any]], namespace: str) -> None:
    firsts = first_pod_writes(entries, namespace)
    late = creations_after_due(entries, namespace, seen)
    print()
    for kind in (PEER, OURS):
        jobs = {n: s for n, s in seen.items() if s.kind == kind}
        write_lat = [
            (firsts[n][0] - s.due).total_seconds() for n, s in jobs.items() if n in firsts and s.due
        ]
        end_lat = [
            (s.terminal_at - s.due).total_seconds()
            for s in jobs.values()
            if s.terminal_at and s.due
        ]
        who = Counter(firsts[n][1] for n in jobs if n in firsts)
        reasons = Counter(s.reason or "not terminal" for s in jobs.values())
        title = "Job controller (spec.activeDeadlineSeconds)" if kind == PEER else "jobreaper"
        print(f"{title}: {len(jobs)} Jobs")
        print(f"  first pod write - due:  {describe(write_lat)}")
        print(f"  due -> terminal (seen): {describe(end_lat)}")
        print(f"  first writer: {dict(who)}; terminal: {dict(reasons)}")
        print(f"  pods created after the due time: {late.get(kind, 0)}")


async def steps(system: System) -> None:
    """Where jobreaper's time went, per step, from its own commands and results."""
    commands = {c.command_id: c for c in await system.commands()}
    by_step: dict[str, tuple[list[float], list[float], Counter[int]]] = {}
    for r in await system.results():
        c = commands.get(r.command_id)
        if c is None:
            continue
        decided, applied, calls = by_step.setdefault(c.step, ([], [], Counter()))
        decided.append((c.decided_at - c.due_at).total_seconds())
        applied.append((r.applied_at - c.due_at).total_seconds())
        calls[r.attempts] += 1
    print("jobreaper's steps (its own records):")
    for step, (decided, applied, calls) in sorted(by_step.items()):
        print(f"  {step:<20} decided - due: {describe(decided)}")
        print(f"  {'':<20} applied - due: {describe(applied)}; API calls {dict(calls)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="Jobs of each kind")
    parser.add_argument("--deadline", type=int, default=30, help="s from creation to the kill")
    args = parser.parse_args()
    stack = stack_from_env()
    if stack is None or stack.audit_log is None:
        raise SystemExit('no stack: run eval "$(uv run jobreaper-dev stack env --name NAME)" first')
    print(f"start: {load()}")
    namespace = f"bench-vs-{uuid.uuid4().hex[:6]}"
    system = System(stack, namespace, f"{namespace}.")
    api = await system._api()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    await create_namespace(core, namespace)
    try:
        await system.start()
        t0 = time.monotonic()
        await create_jobs(batch, namespace, args.jobs, args.deadline)
        print(
            f"{2 * args.jobs} Jobs created in {time.monotonic() - t0:.1f} s; "
            f"kills due in ~{args.deadline} s"
        )
        seen: dict[str, Seen] = {}
        await watch_jobs(batch, namespace, seen, 2 * args.jobs, timeout=args.deadline + 300)
        await asyncio.sleep(1)  # the audit log is written just after each response
        report(seen, audit_of(stack.audit_log, namespace), namespace)
        await steps(system)
        print(f"end: {load()}")
    finally:
        async with asyncio.timeout(60):
            await core.delete_namespace(namespace)
        await system.stop()


if __name__ == "__main__":
    asyncio.run(main())
