"""The mass-disruption guard's decision time after the N-th node turns unreachable.

1,000 nodes in 10 zones of 100, 10 pods on each (10,000 pods, Jobs of 10), every pod
stuck in deletion since 0 s (force timeout 900 s: not due yet, so a tripping looks
at the zone's 1,000 pods again and sets their timers). Nodes of zone 0 go
unreachable one a second; after each observation: ``evolve`` + ``decide`` (CPU
time). The 55th trips the guard (0.55 * 100). Reports the decision that tripped
it and the others (median, max).

    uv run python bench/bench_guard.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from core import decide, evolve, new_state
from schemas.events import ForceDeletionHeld, ForceDeletionPaused
from schemas.observations import JobObserved, NodeObserved, PodObserved

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ZONES, PER_ZONE, PODS_PER_NODE, PODS_PER_JOB = 10, 100, 10, 10


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def node(t: float, name: str, zone: str, status: str, rv: int) -> NodeObserved:
    return NodeObserved(
        change="modified",
        observed_at=at(t),
        resource_version=str(rv),
        name=name,
        uid=f"u-{name}",
        status=status,
        zone=zone,
    )


def main() -> None:
    state = new_state()
    state.announces = True
    rv = 1
    nodes = [(f"z{z}-n{i}", f"z{z}") for z in range(ZONES) for i in range(PER_ZONE)]
    for name, zone in nodes:
        rv += 1
        evolve(state, node(0, name, zone, "ready", rv))
    pod_no = 0
    for name, _ in nodes:
        for _ in range(PODS_PER_NODE):
            job = f"j{pod_no // PODS_PER_JOB}"
            if pod_no % PODS_PER_JOB == 0:
                rv += 1
                evolve(
                    state,
                    JobObserved(
                        change="added",
                        observed_at=at(0),
                        resource_version=str(rv),
                        uid=f"uid-{job}",
                        namespace="ns",
                        name=job,
                    ),
                )
            rv += 1
            evolve(
                state,
                PodObserved(
                    change="modified",
                    observed_at=at(0),
                    resource_version=str(rv),
                    uid=f"pod-{pod_no}",
                    namespace="ns",
                    name=f"p{pod_no}",
                    job_name=job,
                    job_uid=f"uid-{job}",
                    phase="Running",
                    node_name=name,
                    deletion_timestamp=at(0),
                ),
            )
            pod_no += 1
    decide(state, at(1))  # the pods' timers
    times: list[float] = []
    tripped_at = None
    for i in range(PER_ZONE):
        rv += 1
        obs = node(10 + i, f"z0-n{i}", "z0", "unreachable", rv)
        started = time.process_time()
        evolve(state, obs)
        d = decide(state, at(10 + i))
        elapsed = time.process_time() - started
        times.append(elapsed)
        if any(isinstance(e, ForceDeletionPaused) for e in d.kill_events):
            tripped_at = i
            held = sum(isinstance(e, ForceDeletionHeld) for e in d.kill_events)
            print(
                f"the {i + 1}-th unreachable node tripped the guard: evolve + decide "
                f"{elapsed * 1000:.2f} ms CPU ({len(state.nodes)} nodes, {pod_no} pods)"
                f"{f', {held} holds' if held else ''}"
            )
    others = [t for i, t in enumerate(times) if i != tripped_at]
    print(
        f"the other {len(others)} observations: median {statistics.median(others) * 1000:.2f} ms,"
        f" max {max(others) * 1000:.2f} ms CPU"
    )


if __name__ == "__main__":
    main()
