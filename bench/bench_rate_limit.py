"""Benchmark of the core's force-deletion rate limit under a mass event.

    uv run python bench/bench_rate_limit.py [--pods 1000 10000] [--limit 20]

Every pod (Jobs of 10) is stuck in deletion and comes due for force deletion in
the same second; ``decide`` is called at each ``next_due_at`` (the killer's
timers) and its output folded back, until every pod is force-deleted. Prints the
decisions, the seconds they span and ``decide``'s CPU time (total and worst).
No assertions: it reports figures (docs/core.md, "Figures").
"""

from __future__ import annotations

import argparse
import time

from core import decide, evolve, new_state
from tests.unit.core.harness import Builder, at, snapshot


def run(pods: int, limit: int) -> str:
    b = Builder()
    state = new_state()
    evolve(
        state,
        snapshot(1, forceDeleteTaskTimeoutSeconds=10, maxForceDeletionsPerSecondPerPartition=limit),
    )
    for j in range(pods // 10):
        name = f"j{j:05d}"
        evolve(state, b.job(0, name=name, uid=f"u{j}"))
        for i in range(10):
            evolve(state, b.pod(0, f"{name}-p{i}", job=name, job_uid=f"u{j}", deletion=5))
    decide(state, at(1))
    t, decisions, forced, cpu, worst = 15.0, 0, 0, 0.0, 0.0
    while forced < pods:
        started = time.process_time()
        d = decide(state, at(t))
        spent = time.process_time() - started
        for message in (*d.commands, *d.kill_events):
            evolve(state, message)
        forced += len(d.commands)
        cpu, worst, decisions = cpu + spent, max(worst, spent), decisions + 1
        t = (d.next_due_at - at(0)).total_seconds() if d.next_due_at else t + 1
    return (
        f"{pods:,} pods stuck, limit {limit}/s: {decisions} decisions over {t - 15:.0f} s, "
        f"decide CPU {cpu:.2f} s in all, worst {worst * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()
    for pods in args.pods:
        print(run(pods, args.limit))


if __name__ == "__main__":
    main()
