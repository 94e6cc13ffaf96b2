"""``evolve(state, event) -> state``: fold one event into the state.

``evolve`` **mutates** ``state`` and returns it (the caller treats its input
as consumed); it never decides anything, only records facts and marks what
changed dirty for the next ``decide``. It never raises on odd input:

* out-of-order events: per object, an event whose resourceVersion is not newer
  than the one folded is dropped (versions compared as integers when both are
  decimal, else taken in arrival order, see ``state.parse_rv``); a deletion is
  final and always taken; nothing comes back from a deletion (tombstones);
* a pod name re-used by a new uid means the old pod is gone (names are unique
  per namespace); a stale event about the older pod cannot displace the newer;
* our own commands, their results and kill events about pods not observed yet
  create *placeholders* that are never acted on until observed: a rebuild
  folds each topic in its own order, so a result can come before the pod's
  first observation and its command (nothing may be lost for that);
* the state does not depend on how the topics' records interleave, only on
  each topic's own order (a property test checks it).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

from schemas.annotations import forbids_force_deletion, job_annotations, safe_to_force_delete
from schemas.base import job_key
from schemas.commands import CommandApplied, CommandIssued
from schemas.config import ConfigSnapshot
from schemas.events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    ForceDeletionPaused,
    ForceDeletionResumed,
    JobKilled,
    KillStarted,
    KillStep,
)
from schemas.observations import (
    DELETED_CHANGES,
    JobObserved,
    NodeObserved,
    PodObserved,
)
from schemas.requests import ForceResumeRequested, KillCancelRequested, KillRequested

from .guard import EVERY_ZONE
from .ladder import LADDER_FACTS, RULE_DELETE_AFTER_TIMEOUT, is_done, retry_backoff_us
from .show import SHOW_JOB
from .state import (
    APPLIED,
    DELETE,
    ENDED_ALREADY_DONE,
    FAILED_RETRY,
    FORCE,
    FULL_DIRTY,
    HELD_BITS,
    ISSUED,
    JOB_DIRTY,
    PHASES,
    REFUSED,
    SECOND,
    STEP_INDEX,
    UNKNOWN,
    Cmd,
    Episode,
    JobGen,
    KeyState,
    KillerState,
    Latch,
    NodeState,
    PodState,
    Request,
    Shown,
    add_pod,
    find_gen,
    mark_gen,
    mark_pod,
    parse_rv,
    to_us,
)
from .triggers import JOB_FACTS, POD_FACTS, STEP_TRIGGERS, TERMINAL_CONDITIONS

Event = (
    PodObserved
    | JobObserved
    | NodeObserved
    | KillRequested
    | KillCancelRequested
    | ConfigSnapshot
    | CommandIssued
    | CommandApplied
    | KillStarted
    | KillStep
    | ForceDeletionForbidden
    | ForceDeletionHeld
    | JobKilled
    | ForceResumeRequested
    | ForceDeletionPaused
    | ForceDeletionResumed
)
"""Everything ``evolve`` folds. Anything else is ignored."""

_intern = sys.intern


def evolve(state: KillerState, event: Event) -> KillerState:
    """Fold ``event`` into ``state`` (in place) and return it."""
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event)
    return state


# --- lookups ------------------------------------------------------------------


def _key(state: KillerState, namespace: str, name: str) -> tuple[str, KeyState]:
    key = job_key(namespace, name)
    ks = state.keys.get(key)
    if ks is None:
        ks = state.keys[key] = KeyState(_intern(namespace), name)
    return key, ks


def _gen(ks: KeyState, key: str, uid: str) -> JobGen:
    gen = find_gen(ks, uid)
    if gen is None:
        gen = JobGen(key, ks.namespace, ks.name, uid)
        ks.gens.append(gen)
    return gen


def _placeholder(
    state: KillerState, namespace: str, job_name: str, job_uid: str | None, name: str, uid: str
) -> PodState:
    """The pod ``uid``; a placeholder (never acted on) if it was not observed yet."""
    pod = state.pods.get(uid)
    if pod is None:
        key, ks = _key(state, namespace, job_name)
        gen = _gen(ks, key, job_uid or "")
        pod = state.pods[uid] = PodState(uid, name, gen)
        add_pod(gen, pod)
    return pod


def _set_gone(state: KillerState, pod: PodState, at_us: int) -> None:
    if pod.gone:
        _done_at(pod, at_us)
        return
    pod.gone = True
    if pod.seen_us is not None:
        pod.gen.alive -= 1
    _done_at(pod, at_us)
    _unindex_node(state, pod)
    mark_pod(state, pod)


def _done_at(pod: PodState, at_us: int) -> None:
    """A pod is done at the earliest evidence of it: the earliest wins, whatever order
    the evidence is folded in (a force deletion's result and the watcher's deletion
    event come on two topics; taking the first folded made a replay's ``JobKilled``
    differ from the live one in ``killed_at``)."""
    if pod.done_us is None or at_us < pod.done_us:
        pod.done_us = at_us


def _unindex_node(state: KillerState, pod: PodState) -> None:
    if pod.node is not None:
        on_node = state.node_pods.get(pod.node)
        if on_node is not None:
            on_node.discard(pod)


_PER_JOB_LABELS = frozenset(
    {
        "job-name",
        "controller-uid",
        "batch.kubernetes.io/job-name",
        "batch.kubernetes.io/controller-uid",
    }
)
"""Labels Kubernetes sets on every Job with a per-Job value: no override selects on them."""
_NO_LABELS: dict[str, str] = {}


def _selectable_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels an override may select on, keys and values interned (they repeat
    across Jobs); all Jobs without such labels share one empty dict."""
    out = {_intern(k): _intern(v) for k, v in labels.items() if k not in _PER_JOB_LABELS}
    return out if out else _NO_LABELS


def _labels_changed(raw: dict[str, str], current: Mapping[str, str]) -> bool:
    """Whether the selectable labels differ from ``current`` (without building them)."""
    n = 0
    for k, v in raw.items():
        if k in _PER_JOB_LABELS:
            continue
        if current.get(k) != v:
            return True
        n += 1
    return n != len(current)


# --- observations ---------------------------------------------------------------


def _first_sighting(state: KillerState, pod: PodState, rv: int, at_us: int) -> bool:
    """Name index on a pod's first observation. Returns False when this pod is an
    older incarnation of a name already taken by a newer pod (a stale event)."""
    names = state.pod_names.get(pod.gen.namespace)
    if names is None:
        names = state.pod_names[pod.gen.namespace] = {}
    other = names.get(pod.name)
    if other is not None and other is not pod and not other.gone:
        if rv >= 0 and other.rv > rv:
            return False
        _set_gone(state, other, at_us)
    names[pod.name] = pod
    return True


def _on_pod(state: KillerState, ev: PodObserved) -> None:
    # The hot path of the killer: every pod event of the cluster comes through here.
    deleted = ev.change in DELETED_CHANGES
    rv = parse_rv(ev.resource_version)
    pod = state.pods.get(ev.uid)
    if pod is None:
        key, ks = _key(state, ev.namespace, ev.job_name)
        gen = _gen(ks, key, ev.job_uid or "")
        pod = state.pods[ev.uid] = PodState(ev.uid, ev.name, gen)
        add_pod(gen, pod)
        if deleted:
            # Never seen alive: keep a tombstone so a stale event cannot revive it.
            pod.seen_us = pod.done_us = to_us(ev.observed_at)
            pod.gone = True
            pod.rv = rv
            mark_pod(state, pod)
            return
    else:
        if pod.gone:
            return  # a tombstone: nothing comes back from a deletion
        if not deleted and rv >= 0 and rv <= pod.rv:
            return  # stale or duplicate
        gen = pod.gen
        if ev.job_uid and not gen.uid and pod.ep is None:
            # Learnt the owner of a pod first found by label: move it.
            ks = state.keys[gen.key]
            gen.pods.remove(pod)
            if pod.seen_us is not None:
                gen.alive -= 1
            gen = pod.gen = _gen(ks, gen.key, ev.job_uid)
            add_pod(gen, pod)
            if pod.seen_us is not None:
                gen.alive += 1
    if pod.seen_us is None:
        obs_us = to_us(ev.observed_at)
        if not _first_sighting(state, pod, rv, obs_us):
            pod.seen_us = obs_us
            pod.gone = True
            pod.done_us = obs_us
            return
        pod.seen_us = obs_us
        gen.alive += 1
        if pod.k_us is not None and pod.kdue_us < obs_us:
            # A placeholder whose kill was folded first (a rebuild's order): the kill
            # became due for it when it was first seen, as ``decide`` reckons.
            pod.kdue_us = obs_us
    pod.rv = rv
    if deleted:
        _set_gone(state, pod, to_us(ev.observed_at))
        return
    # No controlling Job any more (or never): orphaned on purpose, left alone.
    pod.released = ev.job_uid is None

    phase = pod.phase = PHASES.get(ev.phase, UNKNOWN)
    # creationTimestamp and startTime never change once set: convert them once.
    if pod.created_us is None and ev.creation_timestamp is not None:
        pod.created_us = to_us(ev.creation_timestamp)
    if ev.start_time is None:
        pod.start_us = None
    elif pod.start_us is None:
        pod.start_us = to_us(ev.start_time)
    deletion = ev.deletion_timestamp
    if deletion is None:
        pod.deletion_us = pod.deletion_req_us = None
    else:
        pod.deletion_us = to_us(deletion)
        grace = ev.deletion_grace_period_seconds
        pod.deletion_req_us = pod.deletion_us - (grace or 0) * SECOND
    pod.ads = ev.active_deadline_seconds
    if ev.annotations or ev.labels:
        pod.forbid = forbids_force_deletion(ev.annotations, ev.labels)[0]
        pod.safe_force = safe_to_force_delete(ev.annotations)[0]
    else:
        pod.forbid = pod.safe_force = False
    pod.exclusive_claim = any(_exclusive(claim.access_modes) for claim in ev.claims)
    running = False
    run_start = pod.run_start_us
    for c in ev.containers:
        if c.state == "running":
            running = True
        if run_start is None and c.started_at is not None:
            run_start = to_us(c.started_at)
        # (an earlier start than the one recorded cannot appear later: kept as is)
    pod.running = running
    pod.run_start_us = run_start

    node = ev.node_name
    if node != pod.node:
        _unindex_node(state, pod)
        pod.node = None if node is None else _intern(node)
    if pod.done_us is None and is_done(phase, running, False):
        pod.done_us = to_us(ev.observed_at)
    if pod.done_us is not None:
        _unindex_node(state, pod)
    elif pod.node is not None:
        on_node = state.node_pods.get(pod.node)
        if on_node is None:
            on_node = state.node_pods[pod.node] = set()
        on_node.add(pod)
    mark_pod(state, pod)


EXCLUSIVE_MODES: Final = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})
"""Access modes that let one node write: a second writer beside a force-deleted pod
whose processes still run there (a partition, not a dead node) can corrupt it."""


def _exclusive(modes: tuple[str, ...]) -> bool:
    """A claim whose modes include an exclusive one, or are unknown (the worst case)."""
    return not modes or any(mode in EXCLUSIVE_MODES for mode in modes)


def _on_job(state: KillerState, ev: JobObserved) -> None:
    deleted = ev.change in DELETED_CHANGES
    rv = parse_rv(ev.resource_version)
    key, ks = _key(state, ev.namespace, ev.name)
    gen = find_gen(ks, ev.uid)
    if gen is None:
        gen = _gen(ks, key, ev.uid)
    elif gen.deleted_us is not None or (not deleted and gen.observed and rv >= 0 and rv <= gen.rv):
        return  # a tombstone, or stale / duplicate
    level = JOB_DIRTY
    if not gen.observed:
        gen.observed = True
        level = FULL_DIRTY
    gen.rv = rv
    if gen.created_us is None and ev.creation_timestamp is not None:
        gen.created_us = to_us(ev.creation_timestamp)

    if deleted:
        _job_deleted(state, ks, gen, to_us(ev.observed_at))
        mark_gen(state, gen, level)
        return

    if ev.deletion_timestamp is not None:
        gen.deleting = True

    # One live Job per name: a different live uid means the older one is gone.
    current = find_gen(ks, ks.current) if ks.current is not None else None
    if current is not None and current is not gen and current.deleted_us is None:
        if (gen.created_us or 0) >= (current.created_us or 0):
            _job_deleted(state, ks, current, gen.created_us or to_us(ev.observed_at))
            mark_gen(state, current, JOB_DIRTY)
            ks.current = gen.uid
        else:
            _job_deleted(state, ks, gen, to_us(ev.observed_at))  # about the older Job
            mark_gen(state, gen, level)
            return
    else:
        ks.current = gen.uid

    if _labels_changed(ev.labels, gen.labels):
        gen.labels = _selectable_labels(ev.labels)
        gen.eff_key = None
        level = FULL_DIRTY
    # What the triggers (``triggers.TRIGGERS``) and the ladder read of the Job, before:
    # a status-only update (counts moving) that changes none of it needs no new decision.
    before = _facts(gen)
    # Parsed at the edge, totally: an invalid value counts as absent (the watcher
    # tells the user), except forbid-force-deletion, which an invalid value sets.
    ann = job_annotations(ev.annotations)
    gen.ann = dataclasses.replace(ann, invalid=()) if ann.invalid else ann

    gen.ads = ev.active_deadline_seconds
    gen.start_us = None if ev.start_time is None else to_us(ev.start_time)
    gen.suspend = ev.suspend
    suspended_cond = False
    suspended_since: int | None = None
    finished: tuple[int, str] | None = None
    for cond in ev.conditions:
        if cond.status != "True":
            continue
        ltt = (
            to_us(ev.observed_at)
            if cond.last_transition_time is None
            else to_us(cond.last_transition_time)
        )
        if cond.type == "Suspended":
            suspended_cond = True
            suspended_since = ltt
        elif cond.type in TERMINAL_CONDITIONS and (finished is None or ltt < finished[0]):
            finished = (ltt, cond.reason or cond.type)
    gen.suspended_cond = suspended_cond
    if not ev.suspend:
        gen.suspended_since_us = None
    elif suspended_since is not None:
        gen.suspended_since_us = suspended_since
    elif gen.suspended_since_us is None:
        gen.suspended_since_us = to_us(ev.observed_at)
    if finished is None:
        gen.finished_us, gen.finished_reason = None, ""
    else:
        gen.finished_us, gen.finished_reason = finished
    gen.has_active = ev.active > 0 or (ev.terminating or 0) > 0
    after = _facts(gen)
    if after != before:
        if after[1] != before[1]:
            level = FULL_DIRTY
        mark_gen(state, gen, level)
    elif level == FULL_DIRTY:
        mark_gen(state, gen, level)


_EVERY_POD_FACTS: Final = tuple(dict.fromkeys(POD_FACTS + LADDER_FACTS))
"""What the pod triggers and the ladder read of the Job: a change makes ``decide``
look at every pod again."""
_JOB_ONLY_FACTS: Final = tuple(f for f in JOB_FACTS if f not in _EVERY_POD_FACTS)
"""What only the Job triggers read: a change makes ``decide`` look at them again."""

Facts = tuple[tuple[object, ...], tuple[object, ...]]


def _getter(*groups: tuple[str, ...]) -> Callable[[JobGen], Facts]:
    """``lambda gen: ((gen.<path>, ...), ...)``, one tuple per group, compiled from the
    paths (constants of the trigger table, checked to be dotted names) as
    ``namedtuple`` and ``dataclasses`` compile theirs: plain attribute loads, which
    the interpreter specializes, take half the time of ``operator.attrgetter``'s
    generic lookups (measured: 200 ns against 460 ns for 16 facts; ``evolve`` takes
    them twice per Job observation)."""
    for path in (path for group in groups for path in group):
        if not all(part.isidentifier() for part in path.split(".")):
            raise ValueError(f"not a field path: {path!r}")
    body = "".join("(" + "".join(f"gen.{path}, " for path in group) + "), " for group in groups)
    getter: Callable[[JobGen], Facts] = eval(f"lambda gen: ({body})", {})
    return getter


_facts: Final = _getter(_JOB_ONLY_FACTS, _EVERY_POD_FACTS)
"""Every fact a trigger or the ladder reads of a generation (taken before and after
folding a Job observation): the Job-only ones, and those read for every pod."""


def _job_deleted(state: KillerState, ks: KeyState, gen: JobGen, at_us: int) -> None:
    gen.deleted_us = at_us
    if ks.deleted_us is None or at_us > ks.deleted_us:
        ks.deleted_us = at_us
    if ks.current == gen.uid:
        ks.current = None
    ownerless = find_gen(ks, "")
    if ownerless is not None and ownerless is not gen:
        mark_gen(state, ownerless, JOB_DIRTY)


OUT_OF_SERVICE: Final = "node.kubernetes.io/out-of-service"
"""The taint of non-graceful node shutdown: an administrator says the node is down
(fenced), and its pods may be force-deleted."""


def fold_node(node: NodeState, ev: NodeObserved) -> bool | None:
    """Fold one observation into a node's state: ``None`` if it is stale (not newer
    than what ``node`` holds; a deletion always is newer), else whether the node was
    lost, found again, fenced or unfenced by it (the pods on it must then be looked
    at again). A fence dates from its first observation, as a loss does."""
    rv = parse_rv(ev.resource_version)
    deleted = ev.change in DELETED_CHANGES
    if not deleted and rv >= 0 and rv <= node.rv:
        return None
    node.rv = rv
    node.gone = deleted
    if ev.zone is not None or not deleted:  # a deletion may come without the labels
        node.zone = ev.zone or ""
    at_us = to_us(ev.observed_at)
    changed = False
    if deleted or OUT_OF_SERVICE in ev.taints:
        if node.fenced_us is None:
            node.fenced_us = at_us
            changed = True
    elif node.fenced_us is not None:
        node.fenced_us = None
        changed = True
    first, node.seen = not node.seen, True
    if ev.status != "ready" or deleted:
        if node.lost_us is None:
            node.lost_us = at_us
            node.onset_us = None if first else at_us
            return True
        return changed
    if node.lost_us is not None:
        node.lost_us = None
        return True
    return changed


def _on_node(state: KillerState, ev: NodeObserved) -> None:
    node = state.nodes.get(ev.name)
    if node is None:
        node = state.nodes[_intern(ev.name)] = NodeState()
    changed = fold_node(node, ev)
    if changed is not None:
        state.nodes_version += 1  # the guard looks again (a zone may have changed too)
    if changed:
        mark_node_pods(state, ev.name)


def seed_node(state: KillerState, name: str, folded: NodeState) -> None:
    """Set a node's state to ``folded``, what folding its whole history gives (see
    ``seed.GlobalInputs``); its pods are re-examined if the node was lost, found
    again, fenced or unfenced since what the state knew."""
    node = state.nodes.get(name)
    if node is None:
        node = state.nodes[_intern(name)] = NodeState()
    changed = folded.lost_us != node.lost_us or folded.fenced_us != node.fenced_us
    node.lost_us, node.fenced_us, node.rv = folded.lost_us, folded.fenced_us, folded.rv
    node.zone, node.gone, node.onset_us = folded.zone, folded.gone, folded.onset_us
    node.seen = folded.seen
    state.nodes_version += 1
    if changed:
        mark_node_pods(state, name)


def mark_node_pods(state: KillerState, name: str) -> None:
    """Queue every not-done pod on node ``name`` for the next ``decide``."""
    # Sorted: a set's order depends on object ids, and decisions must not.
    for pod in sorted(state.node_pods.get(name, ()), key=_pod_order):
        mark_pod(state, pod)


def _pod_order(pod: PodState) -> tuple[str, str, str, str]:
    return (pod.gen.key, pod.gen.uid, pod.name, pod.uid)


def _on_request(state: KillerState, ev: KillRequested | KillCancelRequested) -> None:
    """A kill request, or a cancellation of the requested kill: kept in the order of
    their partition, the newest matching one rules (``triggers.kill_timestamp``)
    until the kill starts. A kill that started is latched and asks no more."""
    _, ks = _key(state, ev.namespace, ev.job_name)
    requested_us = to_us(ev.requested_at)
    if isinstance(ev, KillCancelRequested):
        request = Request(requested_us, ev.job_uid, requested_us, cancel=True)
    else:
        kill_us = requested_us if ev.kill_at is None else to_us(ev.kill_at)
        request = Request(kill_us, ev.job_uid, requested_us)
    if ks.requests is None:
        ks.requests = [request]
    else:
        ks.requests.append(request)
    for gen in ks.gens:
        mark_gen(state, gen, JOB_DIRTY)


def _on_config(state: KillerState, ev: ConfigSnapshot) -> None:
    if state.config is None or ev.version > state.config.version:
        state.config = ev


# --- our own output, folded back ----------------------------------------------


def _job_of(state: KillerState, ev: CommandIssued | CommandApplied) -> JobGen:
    key, ks = _key(state, ev.namespace, ev.job_name)
    return _gen(ks, key, ev.job_uid or "")


def _on_issued(state: KillerState, ev: CommandIssued) -> None:
    if ev.step == "force-delete":
        # The rate limit's window (``decide`` drops what left it).
        state.force_recent[ev.command_id] = to_us(ev.decided_at)
    if ev.kill_state is not None and ev.kill_due_at is not None:  # annotate-job (core.show)
        gen = _job_of(state, ev)
        if gen.show_attempt < ev.attempt:
            gen.show_attempt = ev.attempt
            gen.shown = Shown(ev.kill_state, to_us(ev.kill_due_at))
        return
    if ev.pod_name is None or ev.pod_uid is None:  # fail-job: the Job-level step
        gen = _job_of(state, ev)
        if gen.fail_cmd is None or gen.fail_cmd.attempt < ev.attempt:
            gen.fail_cmd = Cmd(ev.attempt, ISSUED)
        return
    pod = _placeholder(state, ev.namespace, ev.job_name, ev.job_uid, ev.pod_name, ev.pod_uid)
    idx = STEP_INDEX[ev.step]
    cmds = pod.cmds
    if cmds is None:
        cmds = pod.cmds = [None, None, None]
    rec = cmds[idx]
    changed = False
    if rec is None or rec.attempt < ev.attempt:
        cmds[idx] = Cmd(ev.attempt, ISSUED)
        changed = True
    if pod.k_us is None and ev.trigger not in STEP_TRIGGERS:
        # A step of a kill (not one taken for a pod outside any kill): K is its decision.
        pod.k_us = to_us(ev.decided_at)
        pod.kdue_us = pod.k_us if ev.rule == RULE_DELETE_AFTER_TIMEOUT else to_us(ev.due_at)
        changed = True
    if changed:
        mark_pod(state, pod)


def _on_applied(state: KillerState, ev: CommandApplied) -> None:
    if ev.step == SHOW_JOB:
        return  # not retried (core.show): the next state writes the whole set again
    if ev.pod_name is None or ev.pod_uid is None:
        _on_job_applied(state, ev)
        return
    # A placeholder, as for our own commands: a rebuild folds each topic in its own
    # order, and a result can come before the pod's observation and its command.
    pod = _placeholder(state, ev.namespace, ev.job_name, ev.job_uid, ev.pod_name, ev.pod_uid)
    idx = STEP_INDEX[ev.step]
    cmds = pod.cmds
    if cmds is None:
        cmds = pod.cmds = [None, None, None]
    rec = cmds[idx]
    if rec is not None and (
        ev.attempt < rec.attempt or (ev.attempt == rec.attempt and rec.status != ISSUED)
    ):
        return  # stale or duplicate result
    applied_us = to_us(ev.applied_at)
    outcome = ev.outcome
    if outcome == "would-apply":
        # Shadow mode: the ladder goes on by its clock as if the step had been
        # applied, but the pod did not die (never counted gone or done for it).
        cmds[idx] = Cmd(ev.attempt, APPLIED)
        if idx == DELETE and (pod.would_delete_us is None or applied_us < pod.would_delete_us):
            pod.would_delete_us = applied_us
        mark_pod(state, pod)
        return
    if outcome in ("failed", "forbidden"):
        retry_us = applied_us + retry_backoff_us(ev.attempt, outcome)
        cmds[idx] = Cmd(ev.attempt, FAILED_RETRY, retry_us)
        mark_pod(state, pod)
        return
    if outcome == "refused":
        # Nothing was written and asking again gets the same answer (an invalid
        # name, a pod owned by another Job): the step is over, not retried. The pod
        # is not gone for that: it ends when the watcher sees it end, and the next
        # rungs of the ladder still come due (and are checked again by the executor).
        cmds[idx] = Cmd(ev.attempt, REFUSED)
        mark_pod(state, pod)
        return
    cmds[idx] = Cmd(ev.attempt, APPLIED)
    if outcome in ("gone", "uid-mismatch"):
        _set_gone(state, pod, applied_us)
    elif idx == FORCE:
        pod.force_applied = True
        if pod.done_us is None:
            _unindex_node(state, pod)
        _done_at(pod, applied_us)
    mark_pod(state, pod)


def _on_job_applied(state: KillerState, ev: CommandApplied) -> None:
    """The result of ``fail-job``: ``failed``/``forbidden`` -> retried after the backoff
    (a Job timer); anything else ends the step (``gone``/``uid-mismatch`` are about
    the Job, not its pods: they end as the watcher sees them end)."""
    gen = _job_of(state, ev)
    rec = gen.fail_cmd
    if rec is not None and (
        ev.attempt < rec.attempt or (ev.attempt == rec.attempt and rec.status != ISSUED)
    ):
        return  # stale or duplicate result
    if ev.outcome in ("failed", "forbidden"):
        retry_us = to_us(ev.applied_at) + retry_backoff_us(ev.attempt, ev.outcome)
        gen.fail_cmd = Cmd(ev.attempt, FAILED_RETRY, retry_us)
        if gen.observed:  # a placeholder waits for its Job's observation
            mark_gen(state, gen, JOB_DIRTY)
        return
    gen.fail_cmd = Cmd(ev.attempt, REFUSED if ev.outcome == "refused" else APPLIED)


def _on_started(state: KillerState, ev: KillStarted) -> None:
    key, ks = _key(state, ev.namespace, ev.job_name)
    gen = _gen(ks, key, ev.job_uid or "")
    ep = gen.episode
    due_us = to_us(ev.due_at)
    decided_us = to_us(ev.decided_at)
    if ep is None or ep.number != ev.episode:
        if ep is not None and ep.number > ev.episode:
            return
        ep = gen.episode = Episode(ev.episode, ev.trigger, ev.reason, due_us, decided_us)
        gen.episodes = max(gen.episodes, ev.episode)
    if gen.latch is None:
        gen.latch = Latch(ev.trigger, ev.reason, due_us)
    for ref in ev.pods:
        pod = _placeholder(state, ev.namespace, ev.job_name, ev.job_uid, ref.name, ref.uid)
        if pod.ep is None:
            pod.ep = ep
            ep.open_count += 1
            # K and the kill's due time are this event's, also over what one of the
            # pod's commands suggested: a rebuild may fold a later command first.
            pod.k_us = decided_us
            seen = pod.seen_us
            pod.kdue_us = due_us if seen is None or seen < due_us else seen
            mark_pod(state, pod)
    for ref in ev.already_done:
        pod = _placeholder(state, ev.namespace, ev.job_name, ev.job_uid, ref.name, ref.uid)
        if pod.ep is None:
            pod.ep = ep
            pod.ended = ENDED_ALREADY_DONE
            pod.counted = True


def _on_killed(state: KillerState, ev: JobKilled) -> None:
    ks = state.keys.get(job_key(ev.namespace, ev.job_name))
    gen = None if ks is None else find_gen(ks, ev.job_uid or "")
    if gen is None or gen.episode is None or gen.episode.number != ev.episode:
        return
    gen.episode.open = False
    for ref in ev.pods:
        pod = state.pods.get(ref.uid)
        if pod is not None and pod.ep is gen.episode:
            pod.counted = True


def _on_forbidden(state: KillerState, ev: ForceDeletionForbidden) -> None:
    pod = _placeholder(state, ev.namespace, ev.job_name, ev.job_uid, ev.pod_name, ev.pod_uid)
    pod.forbidden_emitted = True


def _on_held(state: KillerState, ev: ForceDeletionHeld) -> None:
    pod = _placeholder(state, ev.namespace, ev.job_name, ev.job_uid, ev.pod_name, ev.pod_uid)
    pod.held |= HELD_BITS.get(ev.waits_for, 0)


def fold_resume(resumes: dict[str, int], who: dict[str, str], ev: ForceResumeRequested) -> bool:
    """Fold an operator's resume of the mass-disruption guard: the newest
    ``requested_at`` per zone (``"*"``: every zone) counts, whatever the order (a
    resume older than one folded changes nothing). False when it changed nothing."""
    zone = EVERY_ZONE if ev.zone is None else ev.zone
    at_us = to_us(ev.requested_at)
    known = resumes.get(zone)
    if known is not None and known >= at_us:
        return False
    resumes[zone] = at_us
    who[zone] = ev.requested_by
    return True


def _on_resume(state: KillerState, ev: ForceResumeRequested) -> None:
    if fold_resume(state.resumes, state.resumed_by, ev):
        state.nodes_version += 1


def _on_paused(state: KillerState, ev: ForceDeletionPaused) -> None:
    state.guard_open[ev.zone] = to_us(ev.tripped_at)
    state.nodes_version += 1


def _on_resumed(state: KillerState, ev: ForceDeletionResumed) -> None:
    if state.guard_open.get(ev.zone) == to_us(ev.tripped_at):
        del state.guard_open[ev.zone]
    state.nodes_version += 1


def _ignore(state: KillerState, ev: Any) -> None:
    return None


_HANDLERS: dict[type, Callable[[KillerState, Any], None]] = {
    PodObserved: _on_pod,
    JobObserved: _on_job,
    NodeObserved: _on_node,
    KillRequested: _on_request,
    KillCancelRequested: _on_request,
    ConfigSnapshot: _on_config,
    CommandIssued: _on_issued,
    CommandApplied: _on_applied,
    KillStarted: _on_started,
    KillStep: _ignore,
    ForceDeletionForbidden: _on_forbidden,
    ForceDeletionHeld: _on_held,
    JobKilled: _on_killed,
    ForceResumeRequested: _on_resume,
    ForceDeletionPaused: _on_paused,
    ForceDeletionResumed: _on_resumed,
}

__all__ = ["Event", "evolve", "fold_resume", "mark_node_pods"]
