"""Kill triggers: when a Job (generation) must be killed, and why.

Each function returns when its trigger is (or will be) due, in microseconds,
or ``None`` when it does not apply. ``decide`` fires the earliest due
trigger (ties broken by :data:`PRIORITY`) and schedules a timer for the
earliest future one: a trigger in the future waits and becomes due exactly
then, never earlier.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from .settings import Effective, pending_timeout_us
from .state import PENDING, SECOND, JobGen, KeyState, PodState, Request

KILLED: Final = "Killed"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
PENDING_TIMEOUT: Final = "PendingTimeout"
RUNNING_TIMEOUT: Final = "RunningTimeout"
JOB_FINISHED: Final = "JobFinished"
SUSPENDED: Final = "Suspended"
JOB_DELETED: Final = "JobDeleted"
STUCK_TERMINATING: Final = "StuckTerminating"

PRIORITY: Final = {
    KILLED: 0,
    DEADLINE_EXCEEDED: 1,
    JOB_FINISHED: 2,
    SUSPENDED: 3,
    JOB_DELETED: 4,
    PENDING_TIMEOUT: 5,
    RUNNING_TIMEOUT: 6,
}
"""Tie-break when two triggers are due at the same instant."""

TERMINAL_CONDITIONS: Final = frozenset(
    {"FailureTarget", "Failed", "SuccessCriteriaMet", "Complete"}
)


class Candidate(NamedTuple):
    due_us: int
    priority: int
    trigger: str
    reason: str


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
    """Rule *kill-timestamp*: the ``jobreaper.io/kill-timestamp`` annotation or a
    ``KillRequested``; the earliest wins."""
    due = gen.kill_ts_us
    for request in key.requests or ():
        if request_matches(request, gen) and (due is None or request.kill_us < due):
            due = request.kill_us
    return due


def job_deadline(gen: JobGen) -> int | None:
    """Rule *job-deadline*: ``spec.activeDeadlineSeconds`` from ``status.startTime``.

    Kubernetes resets ``startTime`` when it resumes a suspended Job and flips the
    ``Suspended`` condition to False in the same status write; in between (spec
    already ``suspend: false``, condition still True) the old ``startTime`` is
    stale, so no deadline runs while suspended *or* resuming.
    """
    if gen.ads is None or gen.start_us is None or gen.suspend or gen.suspended_cond:
        return None
    if gen.finished_us is not None:
        return None
    return gen.start_us + gen.ads * SECOND


def job_finished(gen: JobGen) -> int | None:
    """Rule *job-finished*: a terminal condition (FailureTarget, Failed,
    SuccessCriteriaMet, Complete) while the Job's own status still counts active
    or terminating pods. The reason is the Job's (``gen.finished_reason``)."""
    if gen.finished_us is None or not gen.has_active:
        return None
    return gen.finished_us


def job_suspended(gen: JobGen) -> int | None:
    """Rule *job-suspended*: ``spec.suspend: true`` with pods active or terminating."""
    if not gen.suspend or not gen.has_active or gen.suspended_since_us is None:
        return None
    return gen.suspended_since_us


def job_deleted(gen: JobGen, key: KeyState) -> int | None:
    """Rule *job-deleted*: pods outliving their Job (orphans). The ownerless
    generation (pods found by label only) counts as orphaned once a Job of
    this name was seen deleted. Not for a Job whose deletion was seen pending
    (``--cascade=orphan`` or foreground): its pods are orphaned on purpose, which
    the pods' own released ownerReferences also say, maybe a little later."""
    if gen.uid:
        return None if gen.deleting else gen.deleted_us
    return key.deleted_us


def job_candidates(gen: JobGen, key: KeyState) -> list[Candidate]:
    """Every Job-level trigger that applies, due or not."""
    out: list[Candidate] = []
    if gen.observed or gen.uid:
        due = kill_timestamp(gen, key)
        if due is not None:
            out.append(Candidate(due, PRIORITY[KILLED], KILLED, KILLED))
    if gen.observed:
        due = job_deadline(gen)
        if due is not None:
            out.append(
                Candidate(due, PRIORITY[DEADLINE_EXCEEDED], DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
            )
        due = job_finished(gen)
        if due is not None:
            out.append(Candidate(due, PRIORITY[JOB_FINISHED], JOB_FINISHED, gen.finished_reason))
        due = job_suspended(gen)
        if due is not None:
            out.append(Candidate(due, PRIORITY[SUSPENDED], SUSPENDED, SUSPENDED))
    due = job_deleted(gen, key)
    if due is not None:
        out.append(Candidate(due, PRIORITY[JOB_DELETED], JOB_DELETED, JOB_DELETED))
    return out


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


def running_timeout(pod: PodState, gen: JobGen) -> int | None:
    """Rule *running-timeout*: ``jobreaper.io/running-timeout-seconds`` after the
    pod's first container started (0 or absent: no timeout)."""
    if not gen.observed or not gen.running_timeout_s or pod.run_start_us is None:
        return None
    return pod.run_start_us + gen.running_timeout_s * SECOND
