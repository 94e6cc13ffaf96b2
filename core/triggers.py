"""Kill triggers: when a Job (generation) must be killed, and why; and the one
table of them, :data:`TRIGGERS`, that ``decide`` and ``evolve`` read.

A trigger is one row of the table and its due function. ``decide`` asks every
Job trigger once per look at the generation and every pod trigger of the pod's
phase once per pod looked at, fires the earliest due one (ties: the row listed
first) and schedules a timer for the earliest future one (a trigger in the
future waits and becomes due exactly then, never earlier); ``evolve`` looks
again at a generation when one of the facts a row declares changes. Neither
names a trigger: a row missing from the table is a trigger that does not
exist, and ``tests/unit/core/test_triggers.py`` fails if a value of
:data:`schemas.commands.Trigger` has no row, or a due function reads a fact its
row does not declare. Adding a trigger: docs/core.md, "Adding a trigger".

Every due function returns when its trigger is (or will be) due, in
microseconds, or ``None`` when it does not apply: its guard is its own first
lines, cheapest test first (most Jobs have no Job trigger at all), so no list
of guards elsewhere can forget it. Each is total.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from schemas.commands import Rule, Trigger

from .ladder import RULE_FORCE_DELETE, RULE_NODE_LOST_TIMEOUT
from .settings import Effective, pending_timeout_us
from .state import PENDING, SECOND, JobGen, KeyState, PodState, Request, to_us

TERMINAL_CONDITIONS: Final = frozenset(
    {"FailureTarget", "Failed", "SuccessCriteriaMet", "Complete"}
)
"""Job conditions that finish it (rule *job-finished*; ``evolve`` folds them)."""

PodPhase = Literal["pending", "running"]
"""The part of a pod's life a pod trigger watches: ``pending`` until a container
has started (a pod in phase Pending pulling its image counts), ``running`` from
then on. Every pod is in exactly one."""


@dataclass(frozen=True, slots=True)
class JobTrigger:
    """A trigger on the Job generation's own facts, whatever its pods do."""

    name: Trigger
    due: Callable[[JobGen, KeyState], int | None]
    facts: tuple[str, ...]
    """The fields of the generation ``due`` reads (dotted for the parsed annotations,
    ``ann.kill_at``): ``evolve`` looks at the Job again when one of them changes. The
    key's kill requests and Job deletions always make it look again."""
    ends_job: bool = False
    """jobreaper itself decides the Job must die: the kill also fails the Job
    (``fail_job``, rule *job.failure-target*). See :data:`ENDS_JOB`."""
    reason: Callable[[JobGen], str] | None = None
    """The result reason; ``None``: the trigger's name."""
    lifted: Callable[[JobGen], bool] | None = None
    """When a fired trigger stops killing (pods already killed finish their ladder,
    new ones are left alone); ``None``: a kill is never undone."""


@dataclass(frozen=True, slots=True)
class PodTrigger:
    """A trigger on one pod of an observed Job, in one phase of the pod's life; it
    kills the whole Job."""

    name: Trigger
    phase: PodPhase
    due: Callable[[PodState, JobGen, Effective], int | None]
    facts: tuple[str, ...]
    """The fields of the generation ``due`` reads: ``evolve`` looks at every pod of
    the Job again when one changes (settings changes always do)."""
    ends_job: bool = False
    """As :attr:`JobTrigger.ends_job`."""


@dataclass(frozen=True, slots=True)
class StepTrigger:
    """Starts no kill: the name of the trigger on a ladder step taken for a pod
    outside any kill (the ladder's ``rule`` says when)."""

    name: Trigger
    rule: Rule


TriggerSpec = JobTrigger | PodTrigger | StepTrigger


class Candidate(NamedTuple):
    due_us: int
    priority: int
    trigger: Trigger
    reason: str


# --- the due functions -----------------------------------------------------------


def request_matches(request: Request, gen: JobGen) -> bool:
    """A request pinned to a uid matches that Job only; an unpinned one matches
    the Job that had the name when the request was made."""
    if request.job_uid is not None:
        return request.job_uid == gen.uid
    if not gen.uid or not gen.observed:
        return False
    if gen.created_us is not None and gen.created_us > request.requested_us:
        return False
    return gen.deleted_us is None or gen.deleted_us > request.requested_us


def kill_timestamp(gen: JobGen, key: KeyState) -> int | None:
    """Rule *kill-timestamp*: the earlier of two registers, each ruling with its
    current value until the kill starts (``decide`` latches it; asked no more):
    the ``jobreaper.io/kill-timestamp`` annotation as the Job shows it now (edited:
    moved; removed: no kill time), and the newest ``KillRequested`` matching the
    Job (a newer request replaces its time, later or earlier; a
    ``KillCancelRequested`` after it clears it). For a Job observed or known by uid."""
    kill_at = gen.ann.kill_at
    requests = key.requests
    if (kill_at is None and not requests) or not (gen.observed or gen.uid):
        return None
    requested: int | None = None
    for request in requests or ():  # in the partition's order: the newest match rules
        if request_matches(request, gen):
            requested = None if request.cancel else request.kill_us
    if kill_at is None:
        return requested
    annotated = to_us(kill_at)
    return annotated if requested is None or annotated < requested else requested


def job_deadline(gen: JobGen, key: KeyState) -> int | None:
    """Rule *job-deadline*: ``spec.activeDeadlineSeconds`` from ``status.startTime``.

    Kubernetes resets ``startTime`` when it resumes a suspended Job and flips the
    ``Suspended`` condition to False in the same status write; in between (spec
    already ``suspend: false``, condition still True) the old ``startTime`` is
    stale, so no deadline runs while suspended *or* resuming.
    """
    if gen.ads is None or gen.start_us is None or gen.suspend or gen.suspended_cond:
        return None
    if gen.finished_us is not None or not gen.observed:
        return None
    return gen.start_us + gen.ads * SECOND


def job_finished(gen: JobGen, key: KeyState) -> int | None:
    """Rule *job-finished*: a terminal condition (FailureTarget, Failed,
    SuccessCriteriaMet, Complete) while the Job's own status still counts active
    or terminating pods. The reason is the Job's (:func:`finished_reason`)."""
    if gen.finished_us is None or not gen.has_active or not gen.observed:
        return None
    return gen.finished_us


def finished_reason(gen: JobGen) -> str:
    """The Job's own reason for finishing (e.g. ``BackoffLimitExceeded``)."""
    return gen.finished_reason


def job_suspended(gen: JobGen, key: KeyState) -> int | None:
    """Rule *job-suspended*: ``spec.suspend: true`` with pods active or terminating."""
    if not gen.suspend or not gen.has_active or gen.suspended_since_us is None:
        return None
    return gen.suspended_since_us if gen.observed else None


def resumed(gen: JobGen) -> bool:
    """A suspended Job resumed: its kill stops for new pods."""
    return not gen.suspend


def job_deleted(gen: JobGen, key: KeyState) -> int | None:
    """Rule *job-deleted*: pods outliving their Job (orphans). The ownerless
    generation (pods found by label only) counts as orphaned once a Job of
    this name was seen deleted. Not for a Job whose deletion was seen pending
    (``--cascade=orphan`` or foreground): its pods are orphaned on purpose, which
    the pods' own released ownerReferences also say, maybe a little later."""
    if gen.uid:
        return None if gen.deleting else gen.deleted_us
    return key.deleted_us


def pending_timeout(pod: PodState, gen: JobGen, eff: Effective) -> int | None:
    """Rule *pending-timeout*: a pod still Pending with no container ever started,
    ``pendingTimeoutSeconds`` after its creation (annotation, else the configured
    default; 0 disables). Only for an observed Job (its annotation may disable it)."""
    if not gen.observed or pod.phase != PENDING or pod.run_start_us is not None:
        return None
    timeout = pending_timeout_us(gen, eff)
    if timeout <= 0:
        return None
    since = pod.created_us if pod.created_us is not None else pod.seen_us
    return None if since is None else since + timeout


def running_timeout(pod: PodState, gen: JobGen, eff: Effective) -> int | None:
    """Rule *running-timeout*: ``jobreaper.io/running-timeout-seconds`` after the
    pod's first container started (0 or absent: no timeout)."""
    seconds = gen.ann.running_timeout_s
    if not seconds or pod.run_start_us is None or not gen.observed:
        return None
    return pod.run_start_us + seconds * SECOND


# --- the table --------------------------------------------------------------------

STUCK_TERMINATING: Final = StepTrigger("StuckTerminating", RULE_FORCE_DELETE)
"""Rule *stuck deletion*: a pod stuck in deletion, whoever deleted it, is force
deleted (``ladder.force_delete``) without killing its Job."""

NODE_LOST: Final = StepTrigger("NodeLost", RULE_NODE_LOST_TIMEOUT)
"""Rule *node lost* (``deleteOnNodeLostAfterSeconds`` > 0): a pod whose node is not
ready or unreachable that long is deleted (``ladder.node_lost_delete``), then
force-deleted as any pod stuck in deletion (its force step carries this trigger
too), without killing its Job."""

TRIGGERS: Final[tuple[TriggerSpec, ...]] = (
    JobTrigger(
        "Killed",
        kill_timestamp,
        facts=("observed", "uid", "ann.kill_at", "created_us", "deleted_us"),
        ends_job=True,
    ),
    JobTrigger(
        "DeadlineExceeded",
        job_deadline,
        facts=("observed", "ads", "start_us", "suspend", "suspended_cond", "finished_us"),
    ),
    JobTrigger(
        "JobFinished",
        job_finished,
        facts=("observed", "finished_us", "has_active", "finished_reason"),
        reason=finished_reason,
    ),
    JobTrigger(
        "Suspended",
        job_suspended,
        facts=("observed", "suspend", "has_active", "suspended_since_us"),
        lifted=resumed,
    ),
    JobTrigger("JobDeleted", job_deleted, facts=("uid", "deleted_us", "deleting")),
    PodTrigger(
        "PendingTimeout",
        "pending",
        pending_timeout,
        facts=("observed", "ann.pending_timeout_s"),
        ends_job=True,
    ),
    PodTrigger(
        "RunningTimeout",
        "running",
        running_timeout,
        facts=("observed", "ann.running_timeout_s"),
        ends_job=True,
    ),
    STUCK_TERMINATING,
    NODE_LOST,
)
"""Every trigger, in priority order: when two are due at the same instant, the one
listed first fires."""

PRIORITY: Final[Mapping[Trigger, int]] = {spec.name: i for i, spec in enumerate(TRIGGERS)}
"""Tie-break when two triggers are due at the same instant (lower wins)."""

# What decide loops over: (priority, due function, row), the function unpacked so that
# calling it costs a plain call (``row.due(...)`` is a generic method lookup each time).
JOB_TRIGGERS: Final = tuple(
    (PRIORITY[spec.name], spec.due, spec) for spec in TRIGGERS if isinstance(spec, JobTrigger)
)
"""``(priority, due, row)`` of the Job triggers, for ``decide``."""
POD_TRIGGERS: Final = tuple(
    (PRIORITY[spec.name], spec.due, spec) for spec in TRIGGERS if isinstance(spec, PodTrigger)
)
"""``(priority, due, row)`` of the pod triggers."""
PENDING_POD_TRIGGERS: Final = tuple(row for row in POD_TRIGGERS if row[2].phase == "pending")
"""``(priority, due, row)`` of the pod triggers ``decide`` asks about a pending pod."""
RUNNING_POD_TRIGGERS: Final = tuple(row for row in POD_TRIGGERS if row[2].phase == "running")
"""``(priority, due, row)`` of the pod triggers ``decide`` asks about a running pod."""

ENDS_JOB: Final[frozenset[Trigger]] = frozenset(
    spec.name for spec in TRIGGERS if not isinstance(spec, StepTrigger) and spec.ends_job
)
"""The triggers by which jobreaper itself decides a Job must die (``Killed``, the
pending and running timeouts). Not ``DeadlineExceeded`` (the Job controller writes
its own ``FailureTarget`` at the deadline: ours would race it and, merged, replace
its reason), ``JobFinished`` (the Job's end is decided already), ``Suspended`` (a
pause, not an end: resuming lifts it), ``JobDeleted`` (no Job left) nor
``StuckTerminating`` (one pod, not its Job)."""

STEP_TRIGGERS: Final[frozenset[Trigger]] = frozenset(
    spec.name for spec in TRIGGERS if isinstance(spec, StepTrigger)
)
"""The triggers of steps taken outside any kill: their commands set no K."""

LIFTED: Final[Mapping[Trigger, Callable[[JobGen], bool]]] = {
    spec.name: spec.lifted
    for spec in TRIGGERS
    if isinstance(spec, JobTrigger) and spec.lifted is not None
}
"""For the triggers whose kill can stop: when it does."""


def _union(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(fact for group in groups for fact in group))


JOB_FACTS: Final = _union(*(spec.facts for _, _, spec in JOB_TRIGGERS))
"""What ``evolve`` compares before and after folding a Job observation: a change
makes ``decide`` look at the Job triggers again."""

POD_FACTS: Final = _union(*(spec.facts for _, _, spec in POD_TRIGGERS))
"""What ``evolve`` compares before and after folding a Job observation: a change
makes ``decide`` look at every pod of the Job again."""
