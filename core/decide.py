"""``decide(state, now, config) -> Decision``: what to do at ``now``.

``decide`` looks only at Job generations marked dirty by ``evolve`` and at
timers that are due (a heap of due times), never at every pod. It records
what it decided in ``state`` (K, issued commands, episodes, alerts), so calling
it again, or folding its own output back with ``evolve``, yields nothing new.
Same state, ``now`` and config give the same output: generations are visited
in key order, pods in their (deterministic) insertion order, and ids are
derived. Nothing is ever issued before its ``due_at``; ``now`` going
backwards only delays.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import insort
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

from schemas.commands import CommandIssued, Rule, Trigger
from schemas.events import (
    MAX_GUARD_NODES,
    ForceDeletionForbidden,
    ForceDeletionHeld,
    ForceDeletionPaused,
    ForceDeletionResumed,
    JobKilled,
    KillStarted,
    KillStep,
    PodEnd,
    PodEnding,
    PodRef,
    job_killed_parts,
    kill_started_parts,
)

from .evolve import mark_node_pods
from .fail_job import FAIL_JOB, RULE_FAILURE_TARGET, fail_job_due
from .guard import EVERY_ZONE, Trip, resumed_until, trips
from .ladder import (
    RATE_WINDOW_US,
    active_deadline,
    active_deadline_value,
    api_delete,
    force_delete,
    force_forbidden_by,
    force_since,
    node_fence_us,
    node_lost_delete,
    rate_slot,
    volume_holds,
)
from .settings import AFTER_TIMEOUT, FORCE_POLICIES, OFF, SHADOW, WHEN_FENCED, Effective, Resolver
from .show import KILL_TIMESTAMP, KILLING, RULE_SHOW, SHOW_JOB, wanted
from .state import (
    ADS,
    CLEAN,
    DELETE,
    ENDED_ALREADY_DONE,
    FAILED_RETRY,
    FORCE,
    FULL_DIRTY,
    HELD_FENCE,
    HELD_GUARD,
    HELD_RATE,
    HELD_VOLUME,
    ISSUED,
    JOB_DIRTY,
    STEP_NAMES,
    Cmd,
    Episode,
    JobGen,
    KillerState,
    Latch,
    PodState,
    from_us,
    mark_gen,
    mark_pod,
    pod_order,
    to_us,
)
from .triggers import (
    ENDS_JOB,
    JOB_TRIGGERS,
    LIFTED,
    NODE_LOST,
    PENDING_POD_TRIGGERS,
    RUNNING_POD_TRIGGERS,
    STUCK_TERMINATING,
    Candidate,
)

if TYPE_CHECKING:
    from schemas.config import ConfigSnapshot

KillEvent = (
    KillStarted
    | KillStep
    | ForceDeletionForbidden
    | ForceDeletionHeld
    | JobKilled
    | ForceDeletionPaused
    | ForceDeletionResumed
)


class Decision(NamedTuple):
    """The output of one ``decide``."""

    commands: tuple[CommandIssued, ...] = ()
    kill_events: tuple[KillEvent, ...] = ()
    """In order: the guard's ``ForceDeletionPaused``/``Resumed`` (partition 0 only),
    then per Job, ``KillStarted``, then steps and alerts, then ``JobKilled`` (each of
    the two in parts 1..n when it lists more pods than one record holds)."""
    next_due_at: datetime | None = None
    """When to call ``decide`` again if no event arrives first (None: no timer)."""


def command_id(job_uid: str | None, pod_uid: str, step: str, attempt: int) -> str:
    """Derived, reproducible command id: 32 hex digits of sha256 over
    (job uid, pod uid, step, attempt)."""
    # surrogatepass: total (a lone surrogate is no UTF-8; the JSON edge refuses it,
    # pydantic's Python validation does not), and the same bytes for every valid uid.
    raw = f"{job_uid or ''}\x1f{pod_uid}\x1f{step}\x1f{attempt}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


def event_id(event: KillEvent) -> str:
    """Derived, reproducible CloudEvents id of a kill event: 32 hex digits of sha256
    over its type and JSON (the same decision, the same id; replay compares them)."""
    digest = hashlib.sha256(event.CE_TYPE.encode() + event.model_dump_json().encode())
    return digest.hexdigest()[:32]


_NO_CONFIG = "built-in defaults"
"""The config key while no snapshot was folded (a string, so it survives pickling)."""


class _Ctx:
    __slots__ = (
        "commands",
        "events",
        "force_recent",
        "now",
        "now_us",
        "prev_timers",
        "resolver",
        "state",
        "trips",
    )

    def __init__(
        self,
        state: KillerState,
        now: datetime,
        now_us: int,
        resolver: Resolver,
        tripped: dict[str, Trip],
    ) -> None:
        self.state = state
        self.trips = tripped
        """The zones where the mass-disruption guard is tripped (``core.guard``)."""
        # normalised to UTC, as the models would
        self.now = now if now.tzinfo is UTC else from_us(now_us)
        self.now_us = now_us
        self.resolver = resolver
        self.commands: list[CommandIssued] = []
        self.events: list[KillEvent] = []
        self.force_recent: list[int] | None = None
        """The rate limit's window, sorted (built on first need: ``_force_slot``)."""
        self.prev_timers: dict[PodState, int] = {}
        """Timers of the pods being looked at, as they were before: a timer that
        comes out the same keeps its heap entry (no push)."""


def decide(state: KillerState, now: datetime, config: ConfigSnapshot | None = None) -> Decision:
    """Decide at ``now`` (an aware datetime, the clock as an input).

    ``config``: the snapshot to decide under; ``None`` uses the newest one folded
    into ``state`` (built-in defaults, version 0, before any). Passing another
    snapshot answers "what would this configuration have done" (what-if replay).
    Mutates ``state`` to record the decision.
    """
    snapshot = config if config is not None else state.config
    config_key: object = snapshot if snapshot is not None else _NO_CONFIG
    resolver = state.resolver
    decided = state.decided_config
    if (decided is not config_key and decided != config_key) or not isinstance(resolver, Resolver):
        if decided is not None:
            # Every timeout may have changed: look at every Job generation once.
            for ks in state.keys.values():
                for gen in ks.gens:
                    mark_gen(state, gen, FULL_DIRTY)
        state.decided_config = config_key
        resolver = state.resolver = Resolver(snapshot)
    if now.tzinfo is None or now.utcoffset() is None:
        now = now.replace(tzinfo=UTC)  # total: a naive clock reading is taken as UTC
    now_us = to_us(now)
    tripped, alerts = _guard(state, resolver, now)
    heap = state.heap
    dirty = state.dirty
    if not dirty and not alerts and (not heap or heap[0][0] > now_us):
        return _nothing(state, heap)
    ctx = _Ctx(state, now, now_us, resolver, tripped)
    ctx.events.extend(alerts)

    while heap and heap[0][0] <= now_us:
        due, _, gen, pod = heapq.heappop(heap)
        if pod is not None:
            if pod.timer_us == due:
                pod.timer_us = None
                if not pod.gen.removed:
                    mark_pod(state, pod)
        elif gen.timer_us == due:
            gen.timer_us = None
            if not gen.removed:
                mark_gen(state, gen, JOB_DIRTY)

    dirty = state.dirty
    if dirty:
        gens = list(dirty) if len(dirty) == 1 else sorted(dirty, key=_gen_order)
        dirty.clear()
        for gen in gens:
            if not gen.removed:
                _eval_gen(ctx, gen)

    while heap and not _live(heap[0]):
        heapq.heappop(heap)
    if not ctx.commands and not ctx.events:
        return _nothing(state, heap)
    return Decision(tuple(ctx.commands), tuple(ctx.events), _next_due(state, heap))


def _guard(
    state: KillerState, resolver: Resolver, now: datetime
) -> tuple[dict[str, Trip], list[KillEvent]]:
    """Rule *force.guard*: the tripped zones, computed again only when a node, a
    resume or the config changed; the pods on the nodes of a zone that tripped or
    lifted are looked at again. A state that ``announces`` (partition 0) raises one
    ``ForceDeletionPaused`` per tripping and one ``ForceDeletionResumed`` when it
    lifts."""
    cached = state.guard
    if (
        isinstance(cached, tuple)
        and cached[0] == state.nodes_version
        and cached[1] is resolver
        and isinstance(cached[2], dict)
    ):
        return cached[2], []
    old: dict[str, Trip] = cached[2] if isinstance(cached, tuple) else {}
    now_trips = trips(state.nodes, resolver.guard, state.resumes)
    changed = {z for z in old.keys() ^ now_trips.keys()}
    if changed:
        for name in sorted(n for n, node in state.nodes.items() if node.zone in changed):
            mark_node_pods(state, name)
    state.guard = (state.nodes_version, resolver, now_trips)
    if not state.announces:
        return now_trips, []
    alerts: list[KillEvent] = []
    opened = state.guard_open
    g = resolver.guard
    for zone in sorted(now_trips.keys() - opened.keys()):
        trip = now_trips[zone]
        opened[zone] = trip.tripped_us
        alerts.append(
            ForceDeletionPaused(
                zone=zone,
                tripped_at=from_us(trip.tripped_us),
                silent_nodes=len(trip.silent),
                zone_nodes=trip.zone_nodes,
                nodes=trip.silent[:MAX_GUARD_NODES],
                min_nodes=g.min_nodes,
                fraction=float(g.fraction),
                window_seconds=g.window_us // 1_000_000,
                config_version=resolver.version,
                decided_at=now,
            )
        )
    ended = sorted(opened.keys() - now_trips.keys())
    if ended:
        unresumed = trips(state.nodes, g, {})
        for zone in ended:
            tripped_us = opened.pop(zone)
            by_operator = zone in unresumed
            resumed_us = resumed_until(state.resumes, zone) if by_operator else None
            who = None
            if resumed_us is not None:
                own = state.resumes.get(zone)
                who = state.resumed_by.get(zone if own == resumed_us else EVERY_ZONE)
            alerts.append(
                ForceDeletionResumed(
                    zone=zone,
                    tripped_at=from_us(tripped_us),
                    cause="operator" if by_operator else "nodes-returned",
                    requested_by=who,
                    requested_at=None if resumed_us is None else from_us(resumed_us),
                    decided_at=now,
                )
            )
    return now_trips, alerts


def _next_due(
    state: KillerState, heap: list[tuple[int, int, JobGen, PodState | None]]
) -> datetime | None:
    if not heap:
        return None
    due = heap[0][0]
    cached = state.next_due
    if cached is not None and cached[0] == due:
        return cached[1]
    state.next_due = (due, from_us(due))
    return state.next_due[1]


def _nothing(state: KillerState, heap: list[tuple[int, int, JobGen, PodState | None]]) -> Decision:
    """A decision with no output (the common case), shared while the next due time holds."""
    due = heap[0][0] if heap else None
    cached = state.empty
    if cached is not None and cached[0] == due and isinstance(cached[1], Decision):
        return cached[1]
    decision = Decision((), (), _next_due(state, heap))
    state.empty = (due, decision)
    return decision


def _gen_order(gen: JobGen) -> tuple[str, str]:
    return (gen.key, gen.uid)


def _live(entry: tuple[int, int, JobGen, PodState | None]) -> bool:
    due, _, gen, pod = entry
    if pod is not None:
        return pod.timer_us == due and not pod.gen.removed
    return gen.timer_us == due and not gen.removed


def _pod_timer(ctx: _Ctx, pod: PodState, due: int) -> None:
    """Wake ``pod`` at ``due`` (the earliest of what its evaluation asks for). A heap
    entry is live while ``pod.timer_us`` equals its due time; others are skipped."""
    now_us = ctx.now_us
    if due <= now_us:
        return
    t = pod.timer_us
    if t is None or due < t or t <= now_us:
        pod.timer_us = due
        if ctx.prev_timers.get(pod) != due:
            state = ctx.state
            state.seq += 1
            heapq.heappush(state.heap, (due, state.seq, pod.gen, pod))


def _gen_timer(ctx: _Ctx, gen: JobGen, due: int, prev: int | None) -> None:
    if due <= ctx.now_us:
        return
    gen.timer_us = due
    if prev != due:
        state = ctx.state
        state.seq += 1
        heapq.heappush(state.heap, (due, state.seq, gen, None))


# --- one Job generation -----------------------------------------------------------


def _eval_gen(ctx: _Ctx, gen: JobGen) -> None:
    state = ctx.state
    now_us = ctx.now_us
    level = gen.dirty
    full = level == FULL_DIRTY
    dirty_pods = gen.dirty_pods or []
    gen.dirty = CLEAN
    gen.dirty_pods = None
    for pod in dirty_pods:
        pod.dirty = False
    eff = ctx.resolver.for_gen(gen)
    # Each pod looked at asks for its timer afresh (see _pod_timer).
    prev = ctx.prev_timers
    for pod in gen.pods if full else dirty_pods:
        if pod.timer_us is not None:
            prev[pod] = pod.timer_us
            pod.timer_us = None

    latch = gen.latch
    enforcing = eff.enforce != OFF
    if not enforcing:
        # Rule *scope*: out of scope, no trigger fires and no pod gets a step (a kill
        # latched while in scope waits; switched on, FULL_DIRTY looks at it again).
        latch = None
        gen.timer_us = None
    elif latch is not None and (lifted := LIFTED.get(latch.trigger)) is not None and lifted(gen):
        # E.g. resumed: the kill stops for new pods (killed ones finish their ladder).
        latch = gen.latch = None
        full = True
    if enforcing and latch is None:
        latch = _fire(ctx, gen, eff, gen.pods if full else dirty_pods, level >= JOB_DIRTY)
        if latch is not None:
            full = True
    if latch is not None:
        _fail_job(ctx, gen, latch, eff)  # first: the Job stops before its pods go

    started: list[PodState] = []
    already_done: list[PodState] | None = None
    steps: list[KillEvent] = []
    # By name (``gen.pods`` is kept so), not in folding order: a rebuilt state, which
    # folds each topic in its own order, must issue what the continuous one did.
    if full:
        pods = list(gen.pods)
    else:
        pods = dirty_pods if len(dirty_pods) < 2 else sorted(dirty_pods, key=pod_order)
    for pod in pods:
        if pod.seen_us is None or pod.gen is not gen:
            continue  # a placeholder, or moved to another generation
        if pod.done_us is not None:
            pod.timer_us = None  # nothing left to time for a done pod
            ep = pod.ep
            if ep is not None and not pod.counted:
                pod.counted = True
                ep.open_count -= 1
            continue
        if not enforcing or pod.released:
            continue  # rule *scope*: out of scope, or orphaned on purpose
        if pod.ep is None:
            if latch is None:
                if (
                    pod.deletion_us is not None
                    or pod.would_delete_us is not None
                    or (eff.node_lost_delete_us and pod.node is not None)
                ):
                    _ladder(ctx, gen, pod, eff, steps)  # stuck deletion, lost node only
                continue
            ep = gen.episode
            if ep is None or not ep.open:
                ep, already_done = _open_episode(gen, latch, now_us)
            pod.ep = ep
            ep.open_count += 1
            if pod.k_us is None:
                pod.k_us = now_us
                pod.kdue_us = max(latch.due_us, pod.seen_us)
            started.append(pod)
        _ladder(ctx, gen, pod, eff, steps)

    ep = gen.episode
    if started and ep is not None:
        ctx.events.extend(
            _kill_started(ctx, gen, ep, started, already_done or [], eff.enforce == SHADOW)
        )
    ctx.events.extend(steps)
    if ep is not None and ep.open and ep.open_count <= 0:
        ep.open = False
        ctx.events.extend(_job_killed(ctx, gen, ep, eff.enforce == SHADOW))
    if gen.uid and gen.observed and gen.deleted_us is None:
        _show(ctx, gen, latch, eff, enforcing)
    if (
        gen.alive <= 0
        and (ep is None or not ep.open)
        and (gen.deleted_us is not None or not gen.observed)
    ):
        _remove(state, gen)


def _fire(
    ctx: _Ctx, gen: JobGen, eff: Effective, pods: Iterable[PodState], job_level: bool
) -> Latch | None:
    """Rule *trigger selection*: the earliest due trigger of ``triggers.TRIGGERS``
    (Job-level or from a pod), ties by priority; timers for the ones still in the
    future. Job triggers are looked at only when Job-level facts changed
    (``job_level``) or their timer fired: when only pods changed they are as they
    were."""
    now_us = ctx.now_us
    best: Candidate | None = None
    if job_level:
        key = ctx.state.keys[gen.key]
        next_due: int | None = None
        for priority, due_of, job_trigger in JOB_TRIGGERS:
            due = due_of(gen, key)
            if due is None:
                continue
            if due > now_us:
                if next_due is None or due < next_due:
                    next_due = due
            elif best is None or (due, priority) < best[:2]:
                reason = job_trigger.reason
                best = Candidate(
                    due,
                    priority,
                    job_trigger.name,
                    job_trigger.name if reason is None else reason(gen),
                )
        prev = gen.timer_us
        gen.timer_us = None
        if next_due is not None:
            _gen_timer(ctx, gen, next_due, prev)
    for pod in pods:
        if pod.done_us is not None or pod.seen_us is None or pod.released:
            continue
        # The pod triggers of the pod's phase (triggers.PodPhase): pending until a
        # container started, running from then on.
        rows = PENDING_POD_TRIGGERS if pod.run_start_us is None else RUNNING_POD_TRIGGERS
        for priority, pod_due, pod_trigger in rows:
            due = pod_due(pod, gen, eff)
            if due is None:
                continue
            if due > now_us:
                _pod_timer(ctx, pod, due)
            elif best is None or (due, priority) < best[:2]:
                best = Candidate(due, priority, pod_trigger.name, pod_trigger.name)
    if best is None:
        return None
    gen.timer_us = None  # latched: Job-level triggers no longer matter
    gen.latch = Latch(best.trigger, best.reason, best.due_us)
    return gen.latch


def _open_episode(gen: JobGen, latch: Latch, now_us: int) -> tuple[Episode, list[PodState]]:
    gen.episodes += 1
    ep = gen.episode = Episode(gen.episodes, latch.trigger, latch.reason, latch.due_us, now_us)
    already: list[PodState] = []
    for pod in gen.pods:
        if pod.ep is None and pod.done_us is not None and pod.seen_us is not None:
            pod.ep = ep
            pod.ended = ENDED_ALREADY_DONE
            pod.counted = True
            already.append(pod)
    return ep, already


def _remove(state: KillerState, gen: JobGen) -> None:
    """Forget a deleted (or never observed) generation with no pod left."""
    ks = state.keys.get(gen.key)
    gen.removed = True
    if ks is None:
        return
    if gen in ks.gens:
        ks.gens.remove(gen)
    names = state.pod_names.get(gen.namespace)
    for pod in gen.pods:
        if state.pods.get(pod.uid) is pod:
            del state.pods[pod.uid]
        if names is not None and names.get(pod.name) is pod:
            del names[pod.name]
    if not ks.gens:
        del state.keys[gen.key]


def _fail_job(ctx: _Ctx, gen: JobGen, latch: Latch, eff: Effective) -> None:
    """Rule *job.failure-target*: issue the Job-level ``fail-job`` step once per
    attempt, at or after its due time (the latch's), in the decision that starts
    the kill; re-issue a failed one after its backoff (a Job timer)."""
    due = fail_job_due(gen, latch, latch.trigger in ENDS_JOB)
    if due is None:
        return
    attempt, at = due
    if at > ctx.now_us:
        if gen.timer_us != at:
            _gen_timer(ctx, gen, at, gen.timer_us)
        return
    gen.fail_cmd = Cmd(attempt, ISSUED)
    job_uid = gen.uid
    ctx.commands.append(
        CommandIssued(
            command_id=command_id(job_uid, "", FAIL_JOB, attempt),
            step=FAIL_JOB,
            namespace=gen.namespace,
            job_name=gen.name,
            job_uid=job_uid,
            trigger=latch.trigger,
            reason=latch.reason,
            rule=RULE_FAILURE_TARGET,
            config_version=eff.version,
            due_at=from_us(latch.due_us),
            decided_at=ctx.now,
            attempt=attempt,
            shadow=eff.enforce == SHADOW,
        )
    )


def _show(ctx: _Ctx, gen: JobGen, latch: Latch | None, eff: Effective, enforcing: bool) -> None:
    """Rule *job.show-kill* (``core.show``): tell the Job what it is to show when that
    changed. ``killing`` is written by ``fail-job`` itself: only remembered here."""
    want = wanted(gen, ctx.state.keys[gen.key], latch, enforcing, ctx.now_us)
    if want is None or want == gen.shown:
        return
    gen.shown = want
    if want.state == KILLING:
        return
    gen.show_attempt += 1
    attempt = gen.show_attempt
    trigger = latch.trigger if latch is not None else KILL_TIMESTAMP
    ctx.commands.append(
        CommandIssued(
            command_id=command_id(gen.uid, "", SHOW_JOB, attempt),
            step=SHOW_JOB,
            namespace=gen.namespace,
            job_name=gen.name,
            job_uid=gen.uid,
            trigger=trigger,
            reason=latch.reason if latch is not None else trigger,
            rule=RULE_SHOW,
            config_version=eff.version,
            due_at=ctx.now,
            decided_at=ctx.now,
            attempt=attempt,
            shadow=eff.enforce == SHADOW,
            kill_state=want.state,
            kill_due_at=from_us(want.due_us),
        )
    )


# --- one pod: the ladder ----------------------------------------------------------


def _ladder(ctx: _Ctx, gen: JobGen, pod: PodState, eff: Effective, steps: list[KillEvent]) -> None:
    ep = pod.ep
    node = ctx.state.nodes.get(pod.node) if pod.node is not None else None
    if ep is not None and pod.k_us is not None:
        lost_us = None if node is None else node.lost_us
        due = active_deadline(pod, eff, lost_us is not None, ctx.now_us)
        if due is not None:
            _step(ctx, gen, pod, ADS, due[0], due[1], ep.trigger, ep.reason, eff, steps)
        due = api_delete(pod, eff, lost_us)
        if due is not None:
            _step(ctx, gen, pod, DELETE, due[0], due[1], ep.trigger, ep.reason, eff, steps)
    elif ep is None and eff.node_lost_delete_us:
        # Rule *node lost*: outside any kill, a pod on a node lost long enough.
        due = node_lost_delete(pod, eff, None if node is None else node.lost_us)
        if due is not None:
            name = NODE_LOST.name
            _step(ctx, gen, pod, DELETE, due[0], due[1], name, name, eff, steps)
    since = force_since(pod)
    if since is None or eff.force_timeout_us == 0:
        return  # not being deleted, or force deletion disabled
    # Rule *force.guard*: in a tripped zone only an administrator's fence counts (a
    # mass event is when "unreachable for long" stops meaning "down").
    trip = None
    fence_after_us = ctx.resolver.fence_after_us
    if ctx.trips and node is not None and node.fenced_us is None:
        trip = ctx.trips.get(node.zone)
        if trip is not None:
            fence_after_us = 0
    # Rule *force.volume*: an exclusive claim (not opted in) makes afterTimeout wait for
    # a fence, as whenFenced does: at once on a fenced node, never by time on another.
    volume = eff.force_policy == AFTER_TIMEOUT and volume_holds(pod)
    fence_us = node_fence_us(node, fence_after_us)
    due = force_delete(pod, replace(eff, force_policy=WHEN_FENCED) if volume else eff, fence_us)
    # When something is due: the force deletion, or (held for a fence) the report that
    # it would have been, at the timeout.
    at = due[0] if due is not None else since + eff.force_timeout_us
    if at > ctx.now_us:
        _pod_timer(ctx, pod, at)
        return
    if ep is not None:
        trigger, reason = ep.trigger, ep.reason
    else:
        # Outside any kill: the force step of our own lost-node deletion, or of a
        # deletion by anyone else.
        ours = pod.cmds is not None and pod.cmds[DELETE] is not None
        trigger = NODE_LOST.name if ours else STUCK_TERMINATING.name
        reason = trigger
    forbidden_by = force_forbidden_by(pod, eff)
    if forbidden_by is not None:
        if not pod.forbidden_emitted:
            pod.forbidden_emitted = True
            steps.append(
                ForceDeletionForbidden(
                    namespace=gen.namespace,
                    job_name=gen.name,
                    job_uid=gen.uid or None,
                    pod_name=pod.name,
                    pod_uid=pod.uid,
                    forbidden_by=_FORBIDDEN_BY[forbidden_by],
                    trigger=trigger,
                    reason=reason,
                    since=from_us(since),
                    due_at=from_us(at),
                    decided_at=ctx.now,
                    shadow=eff.enforce == SHADOW,
                )
            )
        return
    if due is None and volume:
        # Held until its node is fenced (its observation marks the pod again).
        if not pod.held & HELD_VOLUME:
            pod.held |= HELD_VOLUME
            steps.append(_held(ctx, gen, pod, eff, "volume", trigger, reason, since, at, None))
        return
    if due is None:
        # Rule *force.when-fenced*: held until its node is fenced (its observation
        # marks the pod again).
        if not pod.held & HELD_FENCE:
            pod.held |= HELD_FENCE
            steps.append(_held(ctx, gen, pod, eff, "fence", trigger, reason, since, at, None))
        return
    if trip is not None:
        # Held until the guard lifts (its change marks the zone's pods again).
        if not pod.held & HELD_GUARD:
            pod.held |= HELD_GUARD
            steps.append(_held(ctx, gen, pod, eff, "guard", trigger, reason, since, at, None))
        return
    until = _step(ctx, gen, pod, FORCE, due[0], due[1], trigger, reason, eff, steps)
    if until is not None and not pod.held & HELD_RATE:
        pod.held |= HELD_RATE
        steps.append(_held(ctx, gen, pod, eff, "rate-limit", trigger, reason, since, at, until))


_FORBIDDEN_BY: dict[str, Literal["job", "pod", "policy"]] = {
    "job": "job",
    "pod": "pod",
    "policy": "policy",
}


def _held(
    ctx: _Ctx,
    gen: JobGen,
    pod: PodState,
    eff: Effective,
    waits_for: Literal["fence", "rate-limit", "guard", "volume"],
    trigger: Trigger,
    reason: str,
    since_us: int,
    due_us: int,
    until_us: int | None,
) -> ForceDeletionHeld:
    return ForceDeletionHeld(
        namespace=gen.namespace,
        job_name=gen.name,
        job_uid=gen.uid or None,
        pod_name=pod.name,
        pod_uid=pod.uid,
        node_name=pod.node,
        waits_for=waits_for,
        policy=FORCE_POLICIES[eff.force_policy],
        trigger=trigger,
        reason=reason,
        since=from_us(since_us),
        due_at=from_us(due_us),
        until=None if until_us is None else from_us(until_us),
        decided_at=ctx.now,
        shadow=eff.enforce == SHADOW,
    )


def _force_slot(ctx: _Ctx) -> int | None:
    """Rule *force.rate-limit*: None when one more force deletion may be decided now
    (and then it counts), else when one may."""
    recent = ctx.force_recent
    if recent is None:
        # Once per decide: drop what left the window, sort what is left.
        floor = ctx.now_us - RATE_WINDOW_US
        kept = ctx.state.force_recent
        for cid in [cid for cid, t in kept.items() if t <= floor]:
            del kept[cid]
        recent = ctx.force_recent = sorted(kept.values())
    return rate_slot(recent, ctx.resolver.force_limit, ctx.now_us)


def _step(
    ctx: _Ctx,
    gen: JobGen,
    pod: PodState,
    idx: int,
    due_us: int,
    rule: Rule,
    trigger: Trigger,
    reason: str,
    eff: Effective,
    steps: list[KillEvent],
) -> int | None:
    """Issue step ``idx`` once per attempt, at or after its due time; re-issue a
    failed one (attempt + 1) after its backoff. A force deletion over the rate limit
    waits for a slot: returns when (else None)."""
    cmds = pod.cmds
    rec = None if cmds is None else cmds[idx]
    if rec is None:
        attempt, at = 1, due_us
    elif rec.status == FAILED_RETRY:
        attempt, at = rec.attempt + 1, max(due_us, rec.retry_us)
    else:
        return None
    if at > ctx.now_us:
        _pod_timer(ctx, pod, at)
        return None
    if idx == FORCE:
        slot = _force_slot(ctx)
        if slot is not None:
            _pod_timer(ctx, pod, slot)
            return slot
    if cmds is None:
        cmds = pod.cmds = [None, None, None]
    cmds[idx] = Cmd(attempt, ISSUED)
    step = STEP_NAMES[idx]
    job_uid = gen.uid or None
    cid = command_id(job_uid, pod.uid, step, attempt)
    if idx == FORCE:
        ctx.state.force_recent[cid] = ctx.now_us
        if ctx.force_recent is not None:
            insort(ctx.force_recent, ctx.now_us)
    ads = active_deadline_value(pod, ctx.now_us) if idx == ADS else None
    grace = 0 if idx == FORCE else None
    # The executor writes the first step unread, conditional on this version: a pod
    # killed on time is usually as we last saw it. Deletions follow pods whose status
    # changes in ways the watcher does not publish (a lost node's pods are marked not
    # ready, an unschedulable pod's conditions): for them it reads first.
    due_at = from_us(due_us)
    version = eff.version
    ctx.commands.append(
        CommandIssued(
            command_id=cid,
            step=step,
            namespace=gen.namespace,
            job_name=gen.name,
            job_uid=job_uid,
            pod_name=pod.name,
            pod_uid=pod.uid,
            pod_resource_version=str(pod.rv) if idx == ADS and pod.rv >= 0 else None,
            active_deadline_seconds=ads,
            grace_period_seconds=grace,
            trigger=trigger,
            reason=reason,
            rule=rule,
            config_version=version,
            due_at=due_at,
            decided_at=ctx.now,
            attempt=attempt,
            shadow=eff.enforce == SHADOW,
        )
    )
    steps.append(
        KillStep(
            namespace=gen.namespace,
            job_name=gen.name,
            job_uid=job_uid,
            pod_name=pod.name,
            pod_uid=pod.uid,
            command_id=cid,
            step=step,
            attempt=attempt,
            trigger=trigger,
            reason=reason,
            rule=rule,
            config_version=version,
            due_at=due_at,
            decided_at=ctx.now,
            shadow=eff.enforce == SHADOW,
        )
    )
    return None


# --- public events ----------------------------------------------------------------


def _kill_started(
    ctx: _Ctx,
    gen: JobGen,
    ep: Episode,
    started: list[PodState],
    already: list[PodState],
    shadow: bool,
) -> tuple[KillStarted, ...]:
    """One ``KillStarted``, in parts if it lists many pods (``schemas.parts``)."""
    event = KillStarted(
        namespace=gen.namespace,
        job_name=gen.name,
        job_uid=gen.uid or None,
        episode=ep.number,
        trigger=ep.trigger,
        reason=ep.reason,
        due_at=from_us(ep.due_us),
        decided_at=ctx.now,
        shadow=shadow,
    )
    return kill_started_parts(
        event,
        tuple(PodRef(name=p.name, uid=p.uid) for p in started),
        tuple(PodRef(name=p.name, uid=p.uid) for p in already),
    )


def pod_end(pod: PodState) -> PodEnd:
    """How a done pod of an episode ended (rule *JobKilled endings*): a force
    deletion we issued wins (its containers may still be running), then
    exited (terminal phase, containers stopped), then deleted (gone)."""
    if pod.ended == ENDED_ALREADY_DONE:
        return "already-done"
    if pod.force_applied or (pod.cmds is not None and pod.cmds[FORCE] is not None and pod.gone):
        return "force-deleted"
    if pod.gone:
        return "deleted"
    return "exited"


def _job_killed(ctx: _Ctx, gen: JobGen, ep: Episode, shadow: bool) -> tuple[JobKilled, ...]:
    """One ``JobKilled``, in parts if it lists many pods (``schemas.parts``)."""
    endings: list[PodEnding] = []
    killed_us = ep.decided_us
    for pod in gen.pods:
        if pod.ep is not ep:
            continue
        endings.append(PodEnding(name=pod.name, uid=pod.uid, ended=pod_end(pod)))
        if pod.ended != ENDED_ALREADY_DONE and pod.done_us is not None:
            killed_us = max(killed_us, pod.done_us)
    event = JobKilled(
        namespace=gen.namespace,
        job_name=gen.name,
        job_uid=gen.uid or None,
        episode=ep.number,
        trigger=ep.trigger,
        reason=ep.reason,
        killed_at=from_us(killed_us),
        decided_at=ctx.now,
        shadow=shadow,
    )
    return job_killed_parts(event, tuple(endings))
