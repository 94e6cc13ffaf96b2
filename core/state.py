"""The killer's folded state: slotted dataclasses, times as integer microseconds.

Layout (one ``KillerState``):

* ``keys``: ``namespace/job-name`` -> :class:`KeyState`, which holds the Job
  *generations* seen under that name (one :class:`JobGen` per Job uid, plus
  the ownerless generation ``""`` for orphans found by label only) and the
  kill requests for that name.
* ``pods``: pod uid -> :class:`PodState` (a pod is identified by uid, never by
  name); ``pod_names``: namespace -> pod name -> the newest pod of that name
  (a name re-used by a new uid means the old pod is gone).
* ``nodes`` and ``node_pods``: node readiness and the not-done pods on each
  node (so a node loss wakes exactly those pods).
* the timer heap ``(due_us, seq, gen, pod | None)`` and the dirty set of
  generations, so ``decide`` touches only what changed or is due.

Times are integer microseconds since the Unix epoch (exact arithmetic, no
float rounding, 32 bytes each); ``to_us``/``from_us`` convert at the edges.
Nothing here reads a clock.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, NamedTuple

from schemas.annotations import NO_JOB_ANNOTATIONS, JobAnnotations

if TYPE_CHECKING:
    from schemas.commands import KillState, Step, Trigger
    from schemas.config import ConfigSnapshot

SECOND: Final = 1_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)
_ZERO: Final = timedelta(0)
_NAIVE_EPOCH: Final = datetime(1970, 1, 1)


def to_us(value: datetime) -> int:
    """An instant as integer microseconds since the epoch (exact). Total: an instant
    near the ends of ``datetime``'s range with an offset (``0001-01-01T00:00:00+14:00``)
    and a naive datetime (taken as UTC) convert too."""
    try:
        return (value - _EPOCH) // _MICRO
    except (OverflowError, TypeError):
        # The aware subtraction goes through UTC, which may lie outside datetime's
        # range; a naive one cannot overflow (timedeltas reach 999,999,999 days).
        offset = value.utcoffset() or _ZERO
        return ((value.replace(tzinfo=None) - _NAIVE_EPOCH) - offset) // _MICRO


MIN_US: Final = to_us(datetime.min.replace(tzinfo=UTC))
MAX_US: Final = to_us(datetime.max.replace(tzinfo=UTC))
"""The instants a ``datetime`` can hold; :func:`from_us` clamps to them."""


def from_us(value: int) -> datetime:
    """The inverse of :func:`to_us` (UTC), clamped to ``datetime``'s range: a time
    past year 9999 (a deadline of 10^20 s) is as good as never, and must not raise."""
    if value > MAX_US:
        value = MAX_US
    elif value < MIN_US:
        value = MIN_US
    return _EPOCH + timedelta(microseconds=value)


def parse_rv(value: str) -> int:
    """A resourceVersion as an int, or -1 when it is not a decimal number.

    Kubernetes documents resource versions as opaque; in practice they are
    etcd revisions, so we compare them as integers when both are decimal. An
    event with a non-decimal version (or compared with one) is taken in
    arrival order. ASCII digits only and at most 20 of them (etcd revisions are
    int64): ``int()`` takes ``"١٢٣"`` and refuses ``"²"`` or 5,000 digits, which
    ``str.isdigit`` all accept.
    """
    return int(value) if len(value) <= 20 and value.isdigit() and value.isascii() else -1


# Pod phases, as small ints.
PENDING: Final = 0
RUNNING: Final = 1
SUCCEEDED: Final = 2
FAILED: Final = 3
UNKNOWN: Final = 4
PHASES: Final[Mapping[str, int]] = {
    "Pending": PENDING,
    "Running": RUNNING,
    "Succeeded": SUCCEEDED,
    "Failed": FAILED,
    "Unknown": UNKNOWN,
}

# Ladder steps (index into PodState.cmds).
ADS: Final = 0
DELETE: Final = 1
FORCE: Final = 2
STEP_NAMES: Final[tuple[Step, Step, Step]] = ("set-active-deadline", "delete", "force-delete")
STEP_INDEX: Final[Mapping[Step, int]] = {name: i for i, name in enumerate(STEP_NAMES)}

# Command record status.
ISSUED: Final = 0
APPLIED: Final = 1
FAILED_RETRY: Final = 2
REFUSED: Final = 3
"""The executor refused the command (a name it will not put in a URL, or a pod not
owned by the command's Job) and wrote nothing: final, never re-issued, and not a
sign that the pod is gone."""

# Why a force deletion was held back (PodState.held, bits).
HELD_FENCE: Final = 1
HELD_RATE: Final = 2
HELD_GUARD: Final = 4
HELD_VOLUME: Final = 8
HELD_BITS: Final[Mapping[str, int]] = {
    "fence": HELD_FENCE,
    "rate-limit": HELD_RATE,
    "guard": HELD_GUARD,
    "volume": HELD_VOLUME,
}

# How a pod of a killed Job ended (PodState.ended); 0 = not decided yet.
ENDED_NONE: Final = 0
ENDED_ALREADY_DONE: Final = 1

# Generation dirtiness (increasing).
CLEAN: Final = 0
PODS_DIRTY: Final = 1
"""Only some pods changed: Job-level triggers need no new look."""
JOB_DIRTY: Final = 2
"""Job-level facts (or requests, or a Job timer) changed."""
FULL_DIRTY: Final = 3
"""Every pod must be looked at again (settings or the kill changed)."""


@dataclass(slots=True, eq=False)
class Cmd:
    """The newest attempt of one ladder step on one pod."""

    attempt: int
    status: int
    """ISSUED (waiting for its result), APPLIED, FAILED_RETRY or REFUSED."""
    retry_us: int = 0
    """For FAILED_RETRY: not re-issued before this time."""


@dataclass(slots=True, eq=False)
class Latch:
    """A Job-level kill trigger that fired (kept: a kill is not undone, except
    ``Suspended``, which lifts when the Job is resumed)."""

    trigger: Trigger
    reason: str
    due_us: int


@dataclass(slots=True, eq=False)
class Episode:
    """One kill of one Job generation: from ``KillStarted`` to ``JobKilled``."""

    number: int
    trigger: Trigger
    reason: str
    due_us: int
    decided_us: int
    open: bool = True
    open_count: int = 0
    """Pods of the episode not yet done."""


@dataclass(slots=True, eq=False)
class PodState:
    """One pod (by uid)."""

    uid: str
    name: str
    gen: JobGen
    rv: int = -1
    seen_us: int | None = None
    """First observation; ``None`` for a placeholder known only from our own output."""
    created_us: int | None = None
    phase: int = PENDING
    node: str | None = None
    start_us: int | None = None
    run_start_us: int | None = None
    """Earliest container start seen (the running timeout counts from here)."""
    running: bool = False
    """Some container is in state ``running``."""
    deletion_us: int | None = None
    deletion_req_us: int | None = None
    """When the deletion was requested: ``deletionTimestamp`` minus
    ``deletionGracePeriodSeconds`` (the timestamp itself when the grace is unknown).
    A fenced node's pod is force-deleted from here, not after its grace period: its
    node is down, nothing there stops gracefully."""
    would_delete_us: int | None = None
    """When a shadow ``delete`` was recorded ``would-apply``: the deletion a live run
    would have made, from which the force step's timer runs (the pod is not deleted)."""
    ads: int | None = None
    forbid: bool = False
    exclusive_claim: bool = False
    """It mounts a ReadWriteOnce or ReadWriteOncePod PersistentVolumeClaim (or one whose
    access modes the watcher did not know): on a node not fenced its force deletion
    waits unless it opts in (rule *force.volume*)."""
    safe_force: bool = False
    """Its own ``jobreaper.io/safe-to-force-delete: "true"``."""
    released: bool = False
    """Its newest observation names no controlling Job (``ownerReferences`` removed,
    e.g. ``kubectl delete job --cascade=orphan``, or a pod found by label only):
    orphaned on purpose, left alone."""
    gone: bool = False
    done_us: int | None = None
    """When the pod was first seen done (gone, or terminal with no container running)."""
    # the kill
    k_us: int | None = None
    """K: when the killer decided to kill this pod."""
    kdue_us: int = 0
    """When killing this pod became due (the trigger time, or the pod's first sighting)."""
    ep: Episode | None = None
    ended: int = ENDED_NONE
    counted: bool = False
    """Already counted done in its episode."""
    cmds: list[Cmd | None] | None = None
    """Per step (ADS, DELETE, FORCE): the newest attempt, or None."""
    force_applied: bool = False
    forbidden_emitted: bool = False
    held: int = 0
    """The ``ForceDeletionHeld`` events emitted for it (``HELD_FENCE`` | ``HELD_RATE`` |
    ``HELD_GUARD``, ``HELD_VOLUME``): one per pod and reason."""
    # scheduling
    timer_us: int | None = None
    dirty: bool = False

    @property
    def done(self) -> bool:
        return self.done_us is not None


class Shown(NamedTuple):
    """A kill state a Job shows (rule *job.show-kill*, ``core.show``), with the
    kill's due time (microseconds)."""

    state: KillState
    due_us: int


@dataclass(slots=True, eq=False)
class JobGen:
    """One Job object (uid) under a ``namespace/name`` key; ``uid == ""`` holds
    pods found by label with no owner reference."""

    key: str
    namespace: str
    name: str
    uid: str
    observed: bool = False
    rv: int = -1
    created_us: int | None = None
    deleted_us: int | None = None
    deleting: bool = False
    """Its deletion was seen pending (``deletionTimestamp`` on a live Job): the
    ``orphan`` or ``foreground`` propagation, never the default background one. Its
    pods are then released by the garbage collector (orphan) or deleted before the
    Job (foreground): none outlives it on purpose to be killed."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The Job's labels that overrides may select on (Kubernetes' per-Job ones dropped)."""
    ann: JobAnnotations = NO_JOB_ANNOTATIONS
    """The Job's jobreaper annotations, parsed (their ``invalid`` list dropped: the
    watcher tells the user). Kept whole, so a trigger read from a new annotation
    needs nothing here."""
    ads: int | None = None
    start_us: int | None = None
    suspend: bool = False
    suspended_cond: bool = False
    suspended_since_us: int | None = None
    finished_us: int | None = None
    finished_reason: str = ""
    has_active: bool = False
    pods: list[PodState] = field(default_factory=list)
    """Sorted by name and uid (``add_pod``): what ``decide`` iterates, and the order of
    pods in kill events, must not depend on the order records were folded in."""
    alive: int = 0
    """Observed pods of this generation not yet gone."""
    latch: Latch | None = None
    fail_cmd: Cmd | None = None
    """The newest attempt of the Job-level step ``fail-job`` (``core.fail_job``)."""
    shown: Shown | None = None
    """What the Job's annotations were last told to show (``core.show``)."""
    show_attempt: int = 0
    """The newest ``annotate-job`` command's attempt (each new state is the next)."""
    episode: Episode | None = None
    episodes: int = 0
    eff: object = None
    """Cached effective settings (an ``Effective``), valid for the snapshot ``eff_key``."""
    eff_key: object = None
    timer_us: int | None = None
    dirty: int = CLEAN
    dirty_pods: list[PodState] | None = None
    removed: bool = False


@dataclass(slots=True, eq=False)
class Request:
    """A folded ``KillRequested``, or a ``KillCancelRequested`` (``cancel``), in the
    order of their partition: the newest one matching a Job rules (rule
    *kill-request*, ``triggers.kill_timestamp``)."""

    kill_us: int
    """The requested kill time (a cancellation: its own ``requested_at``, unused)."""
    job_uid: str | None
    requested_us: int
    cancel: bool = False


@dataclass(slots=True, eq=False)
class KeyState:
    """Everything seen under one ``namespace/job-name``."""

    namespace: str
    name: str
    gens: list[JobGen] = field(default_factory=list)
    """Usually one; a small list is lighter than a dict."""
    current: str | None = None
    """The uid of the live Job of this name, if any."""
    requests: list[Request] | None = None
    deleted_us: int | None = None
    """The latest observed deletion of a Job of this name."""


@dataclass(slots=True, eq=False)
class NodeState:
    lost_us: int | None = None
    """Since when the node is not ready / unreachable / gone; None while ready."""
    fenced_us: int | None = None
    """Since when the node is fenced by an administrator: its Node object deleted, or
    the ``node.kubernetes.io/out-of-service`` taint (non-graceful node shutdown);
    None while neither (the configured unreachable fence is computed by ``decide``)."""
    onset_us: int | None = None
    """When its most recent loss began, kept after it is found again (None: never
    lost, or lost since before its first observation: when is unknown): the
    mass-disruption guard counts the losses that began within its window, and holds
    until every node of them is back."""
    seen: bool = False
    """Observed at least once (a loss in the first observation has no known onset: a
    watcher starting beside nodes down for days must not see a mass loss)."""
    rv: int = -1
    zone: str = ""
    """Its ``topology.kubernetes.io/zone`` label (``""``: none): the guard's group."""
    gone: bool = False
    """Its Node object was deleted (not counted by the mass-disruption guard)."""


@dataclass(slots=True, eq=False)
class KillerState:
    """The whole folded state. ``evolve`` and ``decide`` mutate it in place."""

    keys: dict[str, KeyState] = field(default_factory=dict)
    pods: dict[str, PodState] = field(default_factory=dict)
    pod_names: dict[str, dict[str, PodState]] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    node_pods: dict[str, set[PodState]] = field(default_factory=dict)
    config: ConfigSnapshot | None = None
    """The newest folded configuration snapshot."""
    force_recent: dict[str, int] = field(default_factory=dict)
    """Force deletions decided lately: command id -> ``decided_at`` (the rate limit's
    window; ``decide`` records its own, ``evolve`` folds them back or from a rebuild,
    ``decide`` drops those out of the window)."""
    resumes: dict[str, int] = field(default_factory=dict)
    """The mass-disruption guard's resumes (``ForceResumeRequested``): zone (``"*"``:
    every zone) -> the newest ``requested_at``; ``resumed_by`` -> who asked."""
    resumed_by: dict[str, str] = field(default_factory=dict)
    nodes_version: int = 0
    """Bumped by every node observation or resume folded: the guard is computed again."""
    announces: bool = False
    """This state raises the guard's alerts (``ForceDeletionPaused``/``Resumed``): the
    killer's partition 0, so that one alert is raised per tripping although every
    partition decides the guard alike."""
    guard_open: dict[str, int] = field(default_factory=dict)
    """Zone -> ``tripped_at`` of the ``ForceDeletionPaused`` raised and not yet ended
    by a ``ForceDeletionResumed`` (own events, folded back)."""
    guard: object = None
    """Cache: ``(nodes_version, resolver, {zone: Trip})`` of the last guard computed."""
    decided_config: object = None
    """The snapshot the last ``decide`` used (``None``: none yet); a change re-evaluates
    every Job generation."""
    heap: list[tuple[int, int, JobGen, PodState | None]] = field(default_factory=list)
    seq: int = 0
    dirty: dict[JobGen, None] = field(default_factory=dict)
    resolver: object = None
    """Cached ``settings.Resolver`` for ``decided_config``."""
    next_due: tuple[int, datetime] | None = None
    """Cache: the last ``next_due_at`` handed out, as (microseconds, datetime)."""
    empty: tuple[int | None, object] | None = None
    """Cache: the last empty ``Decision``, keyed by its next due time."""


def pod_order(pod: PodState) -> tuple[str, str]:
    return (pod.name, pod.uid)


def add_pod(gen: JobGen, pod: PodState) -> None:
    insort(gen.pods, pod, key=pod_order)


def find_gen(ks: KeyState, uid: str) -> JobGen | None:
    """The generation ``uid`` of a key, if known."""
    for gen in ks.gens:
        if gen.uid == uid:
            return gen
    return None


def new_state() -> KillerState:
    """An empty state."""
    return KillerState()


def mark_pod(state: KillerState, pod: PodState) -> None:
    """Queue ``pod`` (and its generation) for the next ``decide``."""
    gen = pod.gen
    if not pod.dirty:
        pod.dirty = True
        if gen.dirty_pods is None:
            gen.dirty_pods = [pod]
        else:
            gen.dirty_pods.append(pod)
    if gen.dirty == CLEAN:
        gen.dirty = PODS_DIRTY
        state.dirty[gen] = None


def mark_gen(state: KillerState, gen: JobGen, level: int) -> None:
    """Queue ``gen`` for the next ``decide`` at ``level`` (JOB_DIRTY or FULL_DIRTY)."""
    if gen.dirty < level:
        gen.dirty = level
    state.dirty[gen] = None
