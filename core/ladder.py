"""The per-pod escalation ladder (Furiko's termination process).

Pure functions of one pod's facts, its effective settings and (for the node
rule) when its node was lost. Each returns ``(due_us, rule)`` for a step that
applies, or ``None``; ``decide`` turns a due step into a command exactly once
(per attempt) and schedules a timer for a step not yet due.
"""

from __future__ import annotations

from typing import Final

from schemas.commands import Rule

from .settings import NEVER, WHEN_FENCED, Effective
from .state import (
    DELETE,
    FAILED,
    FAILED_RETRY,
    FORCE,
    SECOND,
    SUCCEEDED,
    Cmd,
    NodeState,
    PodState,
)

RULE_ACTIVE_DEADLINE: Final[Rule] = "ladder.active-deadline"
RULE_UNSCHEDULED_DELETE: Final[Rule] = "ladder.unscheduled-delete"
RULE_DELETE_METHOD: Final[Rule] = "ladder.delete-method"
RULE_DELETE_AFTER_TIMEOUT: Final[Rule] = "ladder.delete-after-timeout"
RULE_NODE_LOST_DELETE: Final[Rule] = "ladder.node-lost-delete"
RULE_NODE_LOST_TIMEOUT: Final[Rule] = "ladder.node-lost-timeout"
RULE_FORCE_DELETE: Final[Rule] = "ladder.force-delete"
RULE_FORCE_DELETE_FENCED: Final[Rule] = "ladder.force-delete-fenced"

Due = tuple[int, Rule]

LADDER_FACTS: Final = ("ann.forbid_force_deletion", "ann.safe_to_force_delete", "observed")
"""The fields of a Job generation the ladder reads (:func:`force_forbidden_by`,
:func:`node_lost_delete`):
``evolve`` looks at every pod of the Job again when one changes."""


def is_done(phase: int, running: bool, gone: bool) -> bool:
    """Rule *done*: gone, or phase Succeeded/Failed **and** no container running.

    Phase alone is not enough: with an active deadline the kubelet marks the pod
    Failed before its containers have stopped (Furiko issue #64)."""
    return gone or (phase in (SUCCEEDED, FAILED) and not running)


def active_deadline_value(pod: PodState, now_us: int) -> int:
    """Seconds elapsed since ``status.startTime`` (at least 1; 1 without a start
    time, so the kubelet kills the pod as soon as it acknowledges it)."""
    if pod.start_us is None:
        return 1
    return max(1, (now_us - pod.start_us) // SECOND)


def active_deadline(pod: PodState, eff: Effective, node_lost: bool, now_us: int) -> Due | None:
    """Rule *ladder.active-deadline* (step 3): with ``killMethod: activeDeadline``,
    lower ``spec.activeDeadlineSeconds`` so the kubelet fails the pod now. Not
    for an unscheduled pod, a lost node, a zero delete timeout, a pod already
    being deleted or already marked terminal by the kubelet, nor while a higher
    rung (a deletion) issued for it is pending or applied, even before that
    deletion is observed (a rung never follows a higher one); a deletion that
    *failed* does not hold it back (a lost node found again: the kubelet can act
    before the failed delete's retry, due at the delete timeout on a ready node),
    and only when it *lowers* the pod's current value (never raises it)."""
    if eff.delete_method or eff.delete_timeout_us == 0 or node_lost:
        return None
    cmds = pod.cmds
    if cmds is not None and (_holds(cmds[DELETE]) or _holds(cmds[FORCE])):
        return None
    if pod.node is None or pod.deletion_us is not None or pod.phase in (SUCCEEDED, FAILED):
        return None
    if pod.ads is not None and pod.ads <= active_deadline_value(pod, now_us):
        return None
    return (pod.kdue_us, RULE_ACTIVE_DEADLINE)


def _holds(cmd: Cmd | None) -> bool:
    """A step issued and not failed: every lower rung is past."""
    return cmd is not None and cmd.status != FAILED_RETRY


def api_delete(pod: PodState, eff: Effective, node_lost_us: int | None) -> Due | None:
    """Step 4, API deletion (graceful), for a pod not already being deleted:

    * *ladder.unscheduled-delete*: no ``spec.nodeName``: at once (an active
      deadline needs a kubelet);
    * *ladder.delete-method*: ``killMethod: delete``: at once;
    * *ladder.node-lost-delete*: the node is NotReady/unreachable/gone: at once
      (from when the node was seen lost, if that is later);
    * *ladder.delete-after-timeout*: at ``K + deleteKillingTasksTimeoutSeconds``
      (``K`` itself when the timeout is 0).
    """
    if pod.deletion_us is not None or pod.k_us is None:
        return None
    if pod.node is None:
        return (pod.kdue_us, RULE_UNSCHEDULED_DELETE)
    if eff.delete_method:
        return (pod.kdue_us, RULE_DELETE_METHOD)
    if node_lost_us is not None:
        return (max(pod.kdue_us, node_lost_us), RULE_NODE_LOST_DELETE)
    return (pod.k_us + eff.delete_timeout_us, RULE_DELETE_AFTER_TIMEOUT)


def node_lost_delete(pod: PodState, eff: Effective, node_lost_us: int | None) -> Due | None:
    """The lost-node trigger (``NodeLost``, rule *ladder.node-lost-timeout*), for a pod
    outside any kill: its node not ready or unreachable since ``node_lost_us``, with
    ``deleteOnNodeLostAfterSeconds`` > 0: an API deletion (graceful) at
    ``node_lost_us`` + that time, what Kubernetes' taint manager does after the pod's
    toleration (300 s by default). Then the force step comes as for any pod stuck in
    deletion (fences, ``forceDeletePolicy``, the rate limit, the holds). Only for a pod
    of an observed Job (whose labels may take it out of scope), scheduled, not being
    deleted already. The Job is not killed: it replaces the pod as its
    ``backoffLimit`` allows."""
    after = eff.node_lost_delete_us
    if after <= 0 or node_lost_us is None or pod.deletion_us is not None:
        return None
    if pod.node is None or not pod.gen.observed:
        return None
    return (node_lost_us + after, RULE_NODE_LOST_TIMEOUT)


def force_since(pod: PodState) -> int | None:
    """Since when the pod is (or, in shadow mode, would be) stuck in deletion: its
    ``deletionTimestamp``, else the ``would-apply`` of its shadow ``delete``."""
    return pod.deletion_us if pod.deletion_us is not None else pod.would_delete_us


def node_fence_us(node: NodeState | None, fence_after_us: int) -> int | None:
    """Since when ``node`` is (or will be, if nothing changes) fenced: deleted or
    tainted ``node.kubernetes.io/out-of-service`` (``fenced_us``), or lost for
    ``fence_after_us`` (0: never by time). None: not fenced. A node the state never
    saw is not fenced (nothing says it is down)."""
    if node is None:
        return None
    fenced = node.fenced_us
    if fence_after_us > 0 and node.lost_us is not None:
        by_time = node.lost_us + fence_after_us
        if fenced is None or by_time < fenced:
            fenced = by_time
    return fenced


def force_delete(pod: PodState, eff: Effective, fence_us: int | None) -> Due | None:
    """Step 5, force deletion, for any tracked pod stuck in deletion (whoever
    deleted it), ``forceDeleteTaskTimeoutSeconds`` > 0 (0 disables) and
    ``forceDeletePolicy`` not ``never``:

    * *ladder.force-delete-fenced*: its node is fenced (``fence_us``, see
      :func:`node_fence_us`): at once, from the deletion's request (not the end of
      its grace period) or the fence, whichever is later (unless ``afterTimeout``
      comes first);
    * *ladder.force-delete*: ``afterTimeout`` on a node not fenced: at
      ``deletionTimestamp + forceDeleteTaskTimeoutSeconds``.

    ``whenFenced`` on a node not fenced: None (held: the caller says so once the
    timeout passed). ``never`` is timed as ``afterTimeout``: the caller turns it into
    one ``ForceDeletionForbidden`` (:func:`force_forbidden_by`, as the annotation).
    In shadow mode the timer runs from the ``would-apply`` of the pod's ``delete``.
    The rate limit is the caller's too (:func:`rate_slot`)."""
    since = force_since(pod)
    if since is None or eff.force_timeout_us == 0:
        return None
    timeout_due = since + eff.force_timeout_us
    if fence_us is not None:
        # From the deletion's request, not the end of its grace period: the node is
        # down, nothing there stops gracefully (Kubernetes' pod GC does the same).
        requested = pod.deletion_req_us if pod.deletion_us is not None else since
        if requested is None or requested > since:
            requested = since
        fenced_due = requested if requested > fence_us else fence_us
        if eff.force_policy == WHEN_FENCED or fenced_due < timeout_due:
            return (fenced_due, RULE_FORCE_DELETE_FENCED)
    if eff.force_policy != WHEN_FENCED:
        return (timeout_due, RULE_FORCE_DELETE)
    return None


def volume_holds(pod: PodState) -> bool:
    """Rule *force.volume*: the pod mounts a ReadWriteOnce or ReadWriteOncePod claim (or
    one of unknown modes) and neither it nor its Job says
    ``jobreaper.io/safe-to-force-delete: "true"``: on a node not fenced, its force
    deletion waits (for a fence; never by time)."""
    return pod.exclusive_claim and not pod.safe_force and not pod.gen.ann.safe_to_force_delete


def force_forbidden_by(pod: PodState, eff: Effective) -> str | None:
    """``"job"`` / ``"pod"`` when ``jobreaper.io/forbid-force-deletion: "true"`` is
    set on the Job / the pod, ``"policy"`` under ``forceDeletePolicy: never``, else
    None."""
    if pod.gen.ann.forbid_force_deletion:
        return "job"
    if pod.forbid:
        return "pod"
    if eff.force_policy == NEVER:
        return "policy"
    return None


RATE_WINDOW_US: Final = SECOND
"""The rate limit counts force deletions decided in any window this long."""


def rate_slot(recent: list[int], limit: int, now_us: int) -> int | None:
    """Rule *force.rate-limit*: None when one more force deletion may be decided at
    ``now_us``, else the earliest time one may. At most ``limit`` in any one-second
    window, **spaced**: one every ``1 s / limit`` (rounded up to the microsecond)
    after the newest of ``recent`` (the decision times of force deletions, sorted;
    later ones count too, so ``now`` going backwards only delays). Spaced rather than
    ``limit`` at once each second: the API server then gets a steady stream, not a
    burst at each second that delivery jitter can double (measured on the stack:
    20 in one second with a limit of 10, before). ``limit`` 0: no limit."""
    if limit <= 0 or not recent:
        return None
    spacing = -(-RATE_WINDOW_US // limit)
    latest = recent[-1]
    if latest <= now_us - spacing:
        return None
    return latest + spacing


RETRY_BASE_US: Final = 1 * SECOND
RETRY_CAP_US: Final = 60 * SECOND


def retry_backoff_us(attempt: int, outcome: str) -> int:
    """Rule *retry*: after a ``failed`` result of attempt ``n`` the step may be
    re-issued as attempt ``n + 1`` no earlier than ``applied_at + min(60 s,
    2^(n-1) s)``; after ``forbidden`` (an RBAC problem, not transient) no earlier
    than ``applied_at + 60 s``."""
    if outcome == "forbidden":
        return RETRY_CAP_US
    return min(RETRY_CAP_US, RETRY_BASE_US << min(attempt - 1, 20))
