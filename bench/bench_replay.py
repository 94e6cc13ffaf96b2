"""Benchmark of ``jobreaper replay``'s walk (no Kafka).

    uv run python bench/bench_replay.py [--jobs 10000] [--batch 50] [--repeat 3]

Generates a realistic history in-process: bench_core's workload (Jobs of 3 pods
created, scheduled, running, 90% succeeding, Job status updates, ~3% kill
annotations, kill requests, node flaps), fed in time order to an in-process
killer partition (tests/unit/replay/recorder.py: the live killer's folding,
deciding every ``--batch`` records, commands, kill events, results as the
executor would write them, and a ``DecisionRecorded`` per decision), encoded as
Kafka records with the real codec.

Then, on one core (CPU time of this thread, best of ``--repeat``):

1. decode: every record through ``CODEC.decode`` (what reading the topics costs
   beyond Kafka itself);
2. walk: ``replay()`` over the history, decode included (fresh records each
   run): fold every record below each decision's positions, decide at the
   recorded ``now``, compare commands and kill events byte for byte;
3. walk without decode (records already decoded), to show the split.

events/s = records of the folded topics (observations, requests, nodes, config,
the killer's own commands, results and kill events) / seconds. No assertions:
it prints figures (and fails loudly if the replay diverges, which would be a bug).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_core import Workload, with_kill_requests
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.topics import KILL_DECISIONS
from services.replay.history import History, Rec, decode_all
from services.replay.report import replay
from services.replay.whatif import assumed_applied
from services.runtime.memory import no_cycle_collection
from tests.unit.replay.recorder import Recorder

CONFIG = {"deleteKillingTasksTimeoutSeconds": 30, "forceDeleteTaskTimeoutSeconds": 60}


def generate(n_jobs: int, batch: int) -> Recorder:
    wl = Workload()
    events = with_kill_requests(list(wl.jobs(n_jobs, 3, spacing=0.5)))

    def when(ev: object) -> datetime:
        at = getattr(ev, "observed_at", None) or getattr(ev, "requested_at", None)
        assert isinstance(at, datetime)
        return at

    events.sort(key=when)
    rec = Recorder()
    first = when(events[0])
    rec.put(
        ConfigSnapshot(
            version=1, config=KillerConfig.model_validate(CONFIG), author="b", changed_at=first
        ),
        first,
    )
    for i, ev in enumerate(events):
        now = when(ev)
        rec.put(ev, now)
        if (i + 1) % batch == 0:
            decision = rec.step(now)
            for cmd in decision.commands:  # the executor's results
                result = assumed_applied(cmd, now)
                rec.put(result, now)
    return rec


def fresh(history: History) -> History:
    """The same records, not decoded yet."""
    copy = History()
    for key, stream in history.streams.items():
        copy.streams[key] = [
            Rec(r.topic, r.partition, r.offset, r.timestamp_ms, r.value, r.headers) for r in stream
        ]
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    started = time.process_time()
    rec = generate(args.jobs, args.batch)
    generated_s = time.process_time() - started
    history = rec.history
    folded_topics = sum(len(s) for (t, _), s in history.streams.items() if t != KILL_DECISIONS)
    decisions = len(history.stream(KILL_DECISIONS, 0))
    commands = len(history.stream("kill.commands", 0))
    print(
        f"history: {args.jobs} Jobs, {folded_topics} records to fold, {decisions} decisions, "
        f"{commands} commands (generated in {generated_s:.1f} s CPU)"
    )

    best_decode = best_walk = best_walk_only = float("inf")
    folded = 0
    for _ in range(args.repeat):
        copy = fresh(history)
        gc.collect()
        with no_cycle_collection():  # as the replay CLI runs
            t0 = time.process_time()
            decode_all(copy)
            best_decode = min(best_decode, time.process_time() - t0)

        copy = fresh(history)
        gc.collect()
        with no_cycle_collection():
            t0 = time.process_time()
            report = replay(copy)
            best_walk = min(best_walk, time.process_time() - t0)
            if report.divergences:
                raise SystemExit(f"the replay diverged: {report.divergences[0]}")
            folded = report.total("folded") + report.total("undecodable")

            t0 = time.process_time()
            replay(copy)  # decoded already
            best_walk_only = min(best_walk_only, time.process_time() - t0)

    total = sum(len(s) for s in history.streams.values())
    print(f"decode:           {total / best_decode:>10,.0f} records/s ({total} records)")
    print(
        f"walk with decode: {folded / best_walk:>10,.0f} events/s "
        f"({folded} folded, {decisions} decisions compared, {best_walk:.2f} s)"
    )
    print(f"walk, decoded:    {folded / best_walk_only:>10,.0f} events/s ({best_walk_only:.2f} s)")


if __name__ == "__main__":
    main()
