"""Property tests over random scripts played against a kwok-like simulated
cluster (``sim.py``): determinism, the safety rules of the ladder, and that
every pod of a killed Job ends done."""

from __future__ import annotations

import difflib
import itertools
import os
import random
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import GlobalInputs, KillerState, decide, evolve, new_state
from schemas.commands import CommandIssued
from schemas.events import ForceDeletionForbidden, ForceDeletionHeld, JobKilled, KillStarted
from schemas.topics import CONFIG, K8S_NODES

from .harness import at
from .sim import Sim, make_sim

DEEP = os.environ.get("JOBREAPER_PROPERTY_EXAMPLES")
"""Set, e.g. ``JOBREAPER_PROPERTY_EXAMPLES=5000``, for a deeper, randomized search
than the suite's fixed 150 examples per property."""
FAST = settings(
    max_examples=int(DEEP) if DEEP else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not DEEP,
    database=None,
)

_advance = st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.0, 5.0, 30.0, 200.0, 1000.0]))
_lose = st.tuples(st.just("lose"), st.integers(0, 1))
_kill = st.tuples(
    st.just("kill"), st.integers(0, 2), st.sampled_from([0.0, 0.5, 10.0, 300.0, 1000.0])
)
_cancel = st.tuples(st.just("cancel"), st.integers(0, 2))
actions = st.one_of(
    # repeated entries weigh the draw towards what exercises the ladder
    _advance,
    _advance,
    _advance,
    _lose,
    _lose,
    _kill,
    _kill,
    st.tuples(st.just("schedule"), st.integers(0, 8), st.integers(0, 1)),
    st.tuples(st.just("finish"), st.integers(0, 8)),
    st.tuples(st.just("recover"), st.integers(0, 1)),
    st.tuples(st.just("ext_delete"), st.integers(0, 8)),
    st.tuples(st.just("delete_job"), st.integers(0, 2)),
    st.tuples(st.just("suspend"), st.integers(0, 2)),
    st.tuples(st.just("fail_job"), st.integers(0, 2)),
    st.tuples(st.just("recreate_job"), st.integers(0, 2)),
    st.tuples(st.just("kill_pinned"), st.integers(0, 4), st.sampled_from([0.0, 10.0])),
    _cancel,
    _cancel,
    st.tuples(st.just("cancel_pinned"), st.integers(0, 4)),
    st.tuples(st.just("config"), st.integers(0, 9)),
    # the force-deletion policies, fences and the rate limit (sim.CONFIGS[6:])
    st.tuples(st.just("config"), st.integers(6, 9)),
    # the lost-node trigger (sim.CONFIGS[10:])
    st.tuples(st.just("config"), st.integers(10, 11)),
    st.tuples(st.just("fence"), st.integers(0, 1)),
    st.tuples(st.just("fence"), st.integers(0, 1)),
    st.tuples(st.just("decide_past"), st.sampled_from([1.0, 100.0])),
    st.tuples(st.just("approach"), st.sampled_from([0.000001, 0.5])),
    st.tuples(st.just("approach"), st.sampled_from([0.000001, 0.5])),
)
_rarely = st.sampled_from([False, False, False, True])
pod_shapes = st.tuples(
    _rarely,
    st.sampled_from([None, None, 2, 3600]),
    st.sampled_from([None, 0, 1, 0, 1]),
    _rarely,
)
shapes = st.lists(
    # (forbid force deletion on the Job, its pods, shadow)
    st.tuples(_rarely, st.lists(pod_shapes, min_size=1, max_size=3), _rarely),
    min_size=1,
    max_size=3,
)
scripts = st.tuples(shapes, st.lists(actions, max_size=25), st.integers(0, 2**16 - 1))

SETTLE = 20_000.0
"""Seconds to run after the script so every ladder can finish."""


def play(
    script: tuple[Any, ...],
    fold_back: bool = True,
    checks: list[Any] | None = None,
    check: Callable[[Sim, CommandIssued], None] | None = None,
) -> Sim:
    """Play ``script``; ``checks`` see each command as it is issued, ``check`` sees it
    with the simulated cluster as it is then."""
    shape, steps, fail_mask = script
    sim = make_sim(shape, fold_back=fold_back, fail_mask=fail_mask)
    sim.checks.extend(checks or [])
    if check is not None:
        sim.checks.append(lambda c: check(sim, c))
    sim.start()
    for action in steps:
        sim.act(action)
    sim.advance(SETTLE)
    return sim


def dumps(sim: Sim) -> list[str]:
    return [m.model_dump_json() for m in [*sim.commands, *sim.events]]


@FAST
@given(scripts)
def test_pure_and_deterministic(script: tuple[Any, ...]) -> None:
    """The same inputs give the same outputs, whether or not the runtime folds
    the core's own output back (folding it is idempotent)."""
    first = play(script)
    assert dumps(play(script)) == dumps(first)
    assert dumps(play(script, fold_back=False)) == dumps(first)


@FAST
@given(scripts)
def test_replay_then_redecide_yields_nothing_new(script: tuple[Any, ...]) -> None:
    """State rebuilt from the recorded log (observations, results and the core's
    own output) decides nothing new at the last ``now``."""
    sim = play(script)
    state = new_state()
    for ev in sim.log:
        state = evolve(state, ev)
    d = decide(state, at(sim.now))
    assert d.commands == ()
    assert [e for e in d.kill_events if not isinstance(e, KillStarted)] == []
    assert [e for e in d.kill_events if isinstance(e, KillStarted)] == []


def rebuilt(log: list[Any], rng: random.Random) -> KillerState:
    """A state built as the killer's shell builds one after a restart or rebalance:
    seeded from its memory of the nodes and config topics as far as it had read
    them, then the Job-keyed topics, and the global records that arrive meanwhile,
    folded in whatever interleaving the consumer's fetches give (each topic in its
    own order)."""
    memory = GlobalInputs()
    globals_ = [ev for ev in log if ev.TOPIC in (K8S_NODES, CONFIG)]
    read = rng.randint(0, len(globals_))
    for ev in globals_[:read]:
        memory.fold(ev)
    state = memory.seed(new_state())
    topics: dict[str, deque[Any]] = {}
    for ev in globals_[read:]:
        topics.setdefault(ev.TOPIC, deque()).append(ev)
    for ev in log:
        if ev.TOPIC not in (K8S_NODES, CONFIG):
            topics.setdefault(ev.TOPIC, deque()).append(ev)
    queues = list(topics.values())
    while queues:
        queue = rng.choice(queues)
        ev = queue.popleft()
        if ev.TOPIC not in (K8S_NODES, CONFIG) or memory.fold(ev):
            evolve(state, ev)  # a global record as the shell folds it: if news
        if not queue:
            queues.remove(queue)
    return state


@FAST
@given(scripts, st.integers(0, 25), st.integers(0, 2**32 - 1))
def test_a_state_rebuilt_mid_run_decides_what_the_continuous_one_decides(
    script: tuple[Any, ...], cut: int, seed: int
) -> None:
    """The killer's claim "no step lost or issued twice after a restart", and on
    time: swap the state for one rebuilt from the log at any point of a run, decide
    at the same instants, and every command and kill event is the same, byte for
    byte (ids, due and decided times included)."""
    whole = play(script)
    shape, steps, fail_mask = script
    sim = make_sim(shape, fold_back=True, fail_mask=fail_mask)
    sim.start()
    for i, action in enumerate(steps):
        if i == cut:
            sim.state = rebuilt(sim.log, random.Random(seed))
        sim.act(action)
    if cut >= len(steps):
        sim.state = rebuilt(sim.log, random.Random(seed))
    sim.advance(SETTLE)
    got, expected = dumps(sim), dumps(whole)
    assert got == expected, "\n".join(difflib.unified_diff(expected, got, lineterm="", n=0))


@FAST
@given(scripts)
def test_no_command_id_twice_and_never_before_due(script: tuple[Any, ...]) -> None:
    sim = play(script)
    ids = [c.command_id for c in sim.commands]
    assert len(ids) == len(set(ids))
    for c in sim.commands:
        assert c.due_at <= c.decided_at
    # Kill requests are never acted on before their time: a Killed command is
    # never decided before the earliest kill_at requested for its Job.
    from schemas.requests import KillRequested

    earliest: dict[str, Any] = {}
    for ev in sim.log:
        if isinstance(ev, KillRequested) and ev.kill_at is not None:
            prev = earliest.get(ev.job_name)
            earliest[ev.job_name] = ev.kill_at if prev is None else min(prev, ev.kill_at)
    for c in sim.commands:
        if c.trigger == "Killed" and c.step != "annotate-job":  # a due kill is shown early
            assert c.job_name in earliest
            assert c.decided_at >= earliest[c.job_name]
            assert c.due_at >= earliest[c.job_name]


@FAST
@given(scripts)
def test_a_requested_kill_starts_only_as_the_newest_uncancelled_request_says(
    script: tuple[Any, ...],
) -> None:
    """Rule *cancel and postpone*: the decision that starts a ``Killed`` kill of a Job
    comes no earlier than the time of the newest request for it fed before that
    decision, and never when a cancellation came after that request (the
    simulation reads its own record: ``Sim.requested``). After it starts,
    nothing undoes it: the every-pod-ends-done property covers that."""
    started: set[str | None] = set()

    def check(sim: Sim, c: CommandIssued) -> None:
        if c.trigger != "Killed" or c.step == "annotate-job" or c.job_uid in started:
            return
        started.add(c.job_uid)
        assert c.job_uid is not None
        found, kill_at = sim.requested(c.job_uid)
        assert found, "killed without a request"
        assert kill_at is not None, "a cancelled kill started"
        assert c.decided_at >= at(kill_at), "started before the newest request's time"

    play(script, check=check)


@FAST
@given(scripts)
def test_a_job_shows_its_kill_in_order(script: tuple[Any, ...]) -> None:
    """Rule *job.show-kill*: what a Job shows of its kill (the sim records every value
    written, by ``annotate-job`` and ``fail-job``) never goes back: ``due`` and
    ``cancelled`` only before ``killing``, ``killed`` last and once, and only for a Job
    whose kill ended (its ``JobKilled``); ``due`` only for a kill time in the future."""
    sim = play(script)
    killed_jobs = {e.job_uid for e in sim.events if type(e).__name__ == "JobKilled"}
    for job in sim.jobs:
        shown = job.shown
        if "killing" in shown:
            after = shown[shown.index("killing") + 1 :]
            assert set(after) <= {"killed"}, shown
        if "killed" in shown:
            assert shown.count("killed") == 1 and shown[-1] == "killed", shown
            assert job.uid in killed_jobs
        for a, b in itertools.pairwise(shown):
            assert not (a == b == "cancelled"), shown
    for c in sim.commands:
        if c.step == "annotate-job" and c.kill_state == "due":
            assert c.kill_due_at is not None and c.kill_due_at > c.decided_at
            assert c.trigger == "Killed", c


@FAST
@given(scripts)
def test_never_raises_active_deadline(script: tuple[Any, ...]) -> None:
    seen: list[CommandIssued] = []

    def check(sim: Sim, c: CommandIssued) -> None:
        if c.step != "set-active-deadline":
            return
        pod = sim.pod_by_uid(c.pod_uid)
        assert c.active_deadline_seconds is not None and c.active_deadline_seconds >= 1
        if pod.ads is not None:
            assert c.active_deadline_seconds < pod.ads, (c.active_deadline_seconds, pod.ads)
        seen.append(c)

    play(script, check=check)


@FAST
@given(scripts)
def test_never_force_deletes_when_forbidden_or_disabled(script: tuple[Any, ...]) -> None:

    def check(sim: Sim, c: CommandIssued) -> None:
        if c.step == "delete":
            pod = sim.pod_by_uid(c.pod_uid)
            if c.rule == "ladder.delete-after-timeout":
                # K: when the kill of this pod was decided (its KillStarted).
                k = min(
                    e.decided_at
                    for e in sim.events
                    if isinstance(e, KillStarted) and any(r.uid == c.pod_uid for r in e.pods)
                )
                timeout = sim.config.delete_killing_tasks_timeout_seconds
                assert c.due_at >= k + timedelta(seconds=timeout) or pod.node is None
            return
        if c.step != "force-delete":
            return
        pod = sim.pod_by_uid(c.pod_uid)
        assert not pod.forbid and not pod.job.forbid
        config = sim.config
        timeout = config.force_delete_task_timeout_seconds
        assert timeout > 0
        assert config.force_delete_policy != "never"
        if c.rule == "ladder.force-delete-fenced":
            # Only on a fenced node: tainted, or lost past the configured time.
            assert pod.node is not None
            assert pod.node in sim.fenced or (
                config.fence_unreachable_after_seconds > 0 and not sim.nodes[pod.node]
            )
        else:
            assert c.rule == "ladder.force-delete"
            assert config.force_delete_policy == "afterTimeout"
            # Rule *force.volume*: a ReadWriteOnce claim only on a fenced node.
            assert not pod.rwo, "a pod with a ReadWriteOnce claim forced on an unfenced node"
        if c.rule == "ladder.force-delete" and pod.deletion is not None:
            assert c.due_at >= at(pod.deletion) + timedelta(seconds=timeout)
        elif pod.deletion is None:
            # Shadowed, so never deleted: the timer runs from the would-apply of its
            # delete (the simulated executor answers when the delete is decided).
            assert c.shadow
            deleted = [
                d.decided_at for d in sim.commands if d.pod_uid == c.pod_uid and d.step == "delete"
            ]
            assert deleted
            if c.rule == "ladder.force-delete":
                assert c.due_at >= min(deleted) + timedelta(seconds=timeout)
        assert c.grace_period_seconds == 0
        # The rate limit: fewer than the limit decided in the second before this one.
        limit = config.max_force_deletions_per_second_per_partition
        if limit > 0:
            index = next(i for i, x in enumerate(sim.commands) if x is c)
            window = c.decided_at - timedelta(seconds=1)
            before = [
                x
                for x in sim.commands[:index]
                if x.step == "force-delete" and x.decided_at > window
            ]
            assert len(before) < limit, (c, before)

    sim = play(script, check=check)
    # At most one alert per pod, one hold per pod and reason.
    alerted = [e.pod_uid for e in sim.events if isinstance(e, ForceDeletionForbidden)]
    assert len(alerted) == len(set(alerted))
    held = [(e.pod_uid, e.waits_for) for e in sim.events if isinstance(e, ForceDeletionHeld)]
    assert len(held) == len(set(held))


lost_node_scripts = st.builds(
    lambda shape, first, before, lose, after, mask: (
        shape,
        [first, *before, ("lose", lose), *after],
        mask,
    ),
    shapes,
    st.tuples(st.just("config"), st.integers(10, 11)),
    st.lists(actions, max_size=6),
    st.integers(0, 1),
    st.lists(actions, max_size=19),
    st.integers(0, 2**16 - 1),
)
"""Scripts that start under the lost-node trigger and lose a node (``scripts`` reach
it rarely)."""


@FAST
@given(lost_node_scripts)
def test_the_lost_node_trigger_deletes_only_pods_of_nodes_lost_that_long(
    script: tuple[Any, ...],
) -> None:
    """Rule *node lost*: a ``NodeLost`` delete comes only when configured, for a pod
    outside any kill, not yet deleted, whose node has been lost (continuously) for
    ``deleteOnNodeLostAfterSeconds``, and never earlier; it kills no Job (no
    ``KillStarted``, no ``fail-job`` with that trigger); its force step is a force
    step like any other (checked by the force property above)."""

    def check(sim: Sim, c: CommandIssued) -> None:
        if c.trigger != "NodeLost":
            return
        assert c.step in ("delete", "force-delete"), c
        pod = sim.pod_by_uid(c.pod_uid or "")
        if c.step == "delete":
            after = sim.config.delete_on_node_lost_after_seconds
            assert after > 0 and c.rule == "ladder.node-lost-timeout"
            assert pod.node is not None and not sim.nodes[pod.node]
            lost = sim.lost_at[pod.node]
            assert c.due_at == at(lost) + timedelta(seconds=after)
            assert c.decided_at >= c.due_at
            assert not any(
                isinstance(e, KillStarted) and any(r.uid == c.pod_uid for r in e.pods)
                for e in sim.events
            ), "a pod of a kill gets the kill's ladder"
        else:
            assert any(
                d.pod_uid == c.pod_uid and d.step == "delete" and d.trigger == "NodeLost"
                for d in sim.commands
            )

    sim = play(script, check=check)
    assert not any(isinstance(e, KillStarted) and e.trigger == "NodeLost" for e in sim.events)
    assert not any(c.step == "fail-job" and c.trigger == "NodeLost" for c in sim.commands)


@FAST
@given(scripts)
def test_every_pod_of_a_killed_job_ends_done(script: tuple[Any, ...]) -> None:
    sim = play(script)
    force_off = sim.config.force_delete_task_timeout_seconds == 0
    # Every pod of a killed Job.
    killed_jobs = {(e.job_name, e.job_uid) for e in sim.events if isinstance(e, KillStarted)}
    for job in sim.jobs:
        if (job.name, job.uid) not in killed_jobs or job.shadow:
            continue  # (a shadowed Job's pods end only if they end by themselves)
        for pod in job.pods:
            _check_ends_done(sim, pod, force_off)
    # Every episode whose pods are all done was reported killed, exactly once (each
    # part once). (A Job re-created under the same name has its own episodes: keyed
    # by uid too.)
    parts = [
        (e.job_name, e.job_uid, e.episode, e.part, e.parts)
        for e in sim.events
        if isinstance(e, JobKilled)
    ]
    assert len(parts) == len(set(parts))
    killed = {which[:3] for which in parts}
    for job, uid, episode, _, of in parts:
        assert {p for j, u, ep, p, _ in parts if (j, u, ep) == (job, uid, episode)} == set(
            range(1, of + 1)
        )
    for e in sim.events:
        if isinstance(e, KillStarted):
            which = (e.job_name, e.job_uid, e.episode)
            pods = [
                sim.pod_by_uid(ref.uid)
                for s in sim.events
                if isinstance(s, KillStarted) and (s.job_name, s.job_uid, s.episode) == which
                for ref in s.pods
            ]
            if all(p.done for p in pods):
                assert which in killed


@FAST
@given(scripts, st.integers(0, 25), st.integers(0, 2**32 - 1))
def test_with_one_pod_per_part_the_properties_still_hold(
    script: tuple[Any, ...], cut: int, seed: int
) -> None:
    """The same scripts with ``KillStarted``/``JobKilled`` split into parts of one pod
    (the real bound, 1,000 pods, is out of these small Jobs' reach): a rebuilt state
    folding the parts still decides what the continuous one does, and every pod of a
    killed Job still ends done, each episode reported killed once, in every part."""
    with mock.patch("schemas.events.MAX_PODS_PER_PART", 1):
        test_a_state_rebuilt_mid_run_decides_what_the_continuous_one_decides.hypothesis.inner_test(  # type: ignore[attr-defined]
            script, cut, seed
        )
        test_every_pod_of_a_killed_job_ends_done.hypothesis.inner_test(script)  # type: ignore[attr-defined]
        sim = play(script)
    started = [e for e in sim.events if isinstance(e, KillStarted)]
    assert all(len(e.pods) + len(e.already_done) <= 1 for e in started)


LADDER = ("set-active-deadline", "delete", "force-delete")


@FAST
@given(scripts)
def test_shadow_jobs_get_no_write_and_their_ladder_runs_on_by_its_clock(
    script: tuple[Any, ...],
) -> None:
    """Shadow mode (``jobreaper.io/enforce: shadow`` on some Jobs): every command and
    kill event of a shadowed Job says ``shadow`` and those of the others do not (the
    simulated executor writes nothing for them, ``would-apply``); per pod its steps
    come in ladder order, each once; and a shadowed pod that never ends goes on to a
    (would-apply) force deletion, as the live ladder would, unless force deletion is
    forbidden or off (or ``forceDeletePolicy`` holds it: ``never``, or ``whenFenced``
    on a node not fenced, which says so; or a ReadWriteOnce claim on a node not
    fenced, which says so too)."""
    sim = play(script)
    jobs = {j.uid: j for j in sim.jobs}
    for c in sim.commands:
        assert c.shadow == jobs[c.job_uid].shadow, c
    for e in sim.events:
        uid = getattr(e, "job_uid", None)
        if uid in jobs:
            assert e.shadow == jobs[uid].shadow, e
    steps: dict[str, list[str]] = {}
    for c in sim.commands:
        if c.pod_uid is not None and jobs[c.job_uid].shadow:
            steps.setdefault(c.pod_uid, []).append(c.step)
    for pod_uid, taken in steps.items():
        assert taken == sorted(set(taken), key=LADDER.index), (pod_uid, taken)
    force_off = sim.config.force_delete_task_timeout_seconds == 0
    started = {
        ref.uid for e in sim.events if isinstance(e, KillStarted) and e.shadow for ref in e.pods
    }
    for uid in started:
        pod = sim.pod_by_uid(uid)
        policy = sim.config.force_delete_policy
        if pod.done or force_off or pod.forbid or pod.job.forbid or policy == "never":
            continue
        if (policy == "whenFenced" or pod.rwo) and pod.node not in sim.fenced:
            # Held for a fence that never came (forceDeletePolicy: whenFenced, or a
            # ReadWriteOnce claim): said so.
            assert any(
                isinstance(e, ForceDeletionHeld) and e.pod_uid == uid and e.shadow
                for e in sim.events
            ), uid
            continue
        assert "force-delete" in steps.get(uid, []), (uid, steps.get(uid))


def _check_ends_done(sim: Sim, pod: Any, force_off: bool) -> None:
    if pod.done:
        return
    # The only pods allowed to survive: stuck in deletion on a lost node, with force
    # deletion forbidden or disabled (and said so), or held for a fence that never came.
    assert pod.node is not None and not sim.nodes[pod.node], pod
    assert pod.deletion is not None, pod
    policy = sim.config.force_delete_policy
    if force_off:
        return
    if policy == "whenFenced" and pod.node not in sim.fenced:
        holds = [e for e in sim.events if isinstance(e, ForceDeletionHeld)]
        assert any(e.pod_uid == pod.uid and e.waits_for == "fence" for e in holds), pod
        return
    if pod.rwo and policy == "afterTimeout" and not (pod.forbid or pod.job.forbid):
        assert pod.node not in sim.fenced, pod
        holds = [e for e in sim.events if isinstance(e, ForceDeletionHeld)]
        assert any(e.pod_uid == pod.uid and e.waits_for == "volume" for e in holds), pod
        return
    assert pod.forbid or pod.job.forbid or policy == "never", pod
    alerts = [e for e in sim.events if isinstance(e, ForceDeletionForbidden)]
    assert any(e.pod_uid == pod.uid for e in alerts)
