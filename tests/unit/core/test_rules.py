"""Table-driven cases, one per rule and edge case of DESIGN.md section 1, each
named after the rule it pins. A case is a script of steps: events folded
(``J`` job, ``P`` pod, ``N`` node, ``Req`` kill request, ``Cfg`` config
snapshot, ``R`` a command result) and decisions (``D``) with what they must
produce: commands as ``(step, pod, rule, due seconds)``, event type names,
and the next due time.

``D.cmds`` lists the pod steps; the Job-level ``fail-job`` is checked apart
(``D.job``: its ``(trigger, due seconds, attempt)``s, or ``None`` to leave it to the
checks every decision gets: ``fail-job`` only for a trigger that ends the Job, once
per Job generation and attempt, first in its decision)."""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from core import Decision, command_id, event_id
from schemas.annotations import (
    ENFORCE,
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    SAFE_TO_FORCE_DELETE,
)
from schemas.commands import CommandApplied, Outcome
from schemas.events import ForceDeletionForbidden, ForceDeletionHeld, JobKilled, KillStarted
from schemas.observations import VolumeClaim
from schemas.parts import MAX_PODS_PER_PART

from .harness import (
    IN_SCOPE,
    T0,
    CmdTuple,
    Harness,
    at,
    cancel,
    cmd_tuple,
    iso,
    request,
    secs,
    snapshot,
)

Step = Callable[[Harness], Any]
ANY: Any = object()

AD = "set-active-deadline"
DEL = "delete"
FORCE = "force-delete"
R_AD = "ladder.active-deadline"
R_UNSCHED = "ladder.unscheduled-delete"
R_METHOD = "ladder.delete-method"
R_TIMEOUT = "ladder.delete-after-timeout"
R_LOST = "ladder.node-lost-delete"
R_NODE_LOST = "ladder.node-lost-timeout"
R_FORCE = "ladder.force-delete"
R_FENCED = "ladder.force-delete-fenced"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
NS_ = "ns"
FAIL = "fail-job"
SHOW = "annotate-job"
JOB_LEVEL = (FAIL, SHOW)
R_FAIL = "job.failure-target"
ENDS_JOB = {"Killed", "PendingTimeout", "RunningTimeout"}

PENDING_POD: dict[str, Any] = {
    "phase": "Pending",
    "node": None,
    "start": None,
    "containers": "none",
}


def J(t: float, **kw: Any) -> Step:
    return lambda h: h.feed(h.b.job(t, **kw))


def P(t: float, name: str = "p1", **kw: Any) -> Step:
    return lambda h: h.feed(h.b.pod(t, name, **kw))


def N(t: float, name: str = "n1", status: str = "not-ready") -> Step:
    return lambda h: h.feed(h.b.node(t, name, status))


def NT(t: float, name: str = "n1", status: str = "unreachable") -> Step:
    """A node observation carrying the out-of-service taint (a fence)."""
    return lambda h: h.feed(h.b.node(t, name, status, (OUT_OF_SERVICE,)))


def Req(t: float, kill_at: float | None = None, **kw: Any) -> Step:
    return lambda h: h.feed(request(t, kill_at, **kw))


def Cancel(t: float, **kw: Any) -> Step:
    return lambda h: h.feed(cancel(t, **kw))


def Cfg(version: int, **config: Any) -> Step:
    return lambda h: h.feed(snapshot(version, **config))


def R(t: float, pod: str, step: str, outcome: Outcome = "applied") -> Step:
    return lambda h: h.result(t, pod, step, outcome)


@dataclass
class D:
    """Decide at ``t`` and check the outcome."""

    t: float
    cmds: list[CmdTuple] | None = None
    events: list[str] | None = None
    next_due: Any = ANY
    check: Callable[[Decision], None] | None = None
    job: list[tuple[str, float, int]] | None = None
    """The ``fail-job`` commands: (trigger, due seconds, attempt); None: not checked here."""
    shows: list[tuple[str, float]] | None = None
    """The ``annotate-job`` commands (rule *job.show-kill*): (kill state, the kill's due
    seconds); None: not checked here (every decision checks they come last)."""

    def __call__(self, h: Harness) -> Decision:
        d = h.decide(self.t)
        pod_cmds = [c for c in d.commands if c.step not in JOB_LEVEL]
        job_cmds = [c for c in d.commands if c.step == FAIL]
        show_cmds = [c for c in d.commands if c.step == SHOW]
        if self.shows is not None:
            got_shows = [(c.kill_state, secs(c.kill_due_at or T0)) for c in show_cmds]
            assert got_shows == self.shows, f"at {self.t}"
        for c in show_cmds:
            assert c.rule == "job.show-kill" and c.job_uid and c.pod_name is None
        if show_cmds:
            assert d.commands[-len(show_cmds) :] == tuple(show_cmds), "annotate-job last"
        if self.cmds is not None:
            assert [cmd_tuple(c) for c in pod_cmds] == self.cmds, f"at {self.t}"
        if self.job is not None:
            got = [(c.trigger, secs(c.due_at), c.attempt) for c in job_cmds]
            assert got == self.job, f"at {self.t}"
        for c in job_cmds:
            assert c.trigger in ENDS_JOB, c
            assert (c.rule, c.pod_name, c.pod_uid) == (R_FAIL, None, None)
            assert c.job_uid
        assert d.commands[: len(job_cmds)] == tuple(job_cmds), "fail-job before the pod steps"
        issued = [(c.job_uid, c.attempt) for c in h.commands if c.step == FAIL]
        assert len(issued) == len(set(issued)), "one fail-job per Job generation and attempt"
        if self.events is not None:
            assert [type(e).__name__ for e in d.kill_events] == self.events, f"at {self.t}"
        if self.next_due is not ANY:
            expected = None if self.next_due is None else at(self.next_due)
            assert d.next_due_at == expected, f"at {self.t}"
        for c in d.commands:
            assert c.due_at <= c.decided_at == at(self.t)
        for m in (*d.commands, *d.kill_events):
            # Every output survives a JSON round trip unchanged.
            again = type(m).model_validate_json(m.model_dump_json())
            assert again == m
            assert again.model_dump_json() == m.model_dump_json()
        if self.check is not None:
            self.check(d)
        return d


@dataclass
class Case:
    name: str
    steps: list[Step] = field(default_factory=list)


def only(**expected: Any) -> Callable[[Decision], None]:
    """Every command of the decision has these attribute values."""

    def check(d: Decision) -> None:
        pod_cmds = [c for c in d.commands if c.step not in JOB_LEVEL]
        assert pod_cmds
        for c in pod_cmds:
            for key, value in expected.items():
                assert getattr(c, key) == value, (key, getattr(c, key), value)

    return check


def _all_shadow(d: Decision, since: Any) -> None:
    (event,) = d.kill_events
    assert isinstance(event, ForceDeletionForbidden)
    assert event.shadow and event.since == since


def held(waits_for: str, until: float | None) -> Callable[[Decision], None]:
    """Every ``ForceDeletionHeld`` of the decision waits for this, until then."""

    def check(d: Decision) -> None:
        found = [e for e in d.kill_events if isinstance(e, ForceDeletionHeld)]
        assert found
        for e in found:
            assert e.waits_for == waits_for
            assert e.until == (None if until is None else at(until))
            assert e.due_at <= e.decided_at

    return check


def forbidden_by(who: str) -> Callable[[Decision], None]:
    def check(d: Decision) -> None:
        found = [e for e in d.kill_events if isinstance(e, ForceDeletionForbidden)]
        assert found and all(e.forbidden_by == who for e in found)

    return check


def endings(**expected: str) -> Callable[[Decision], None]:
    def check(d: Decision) -> None:
        killed = [e for e in d.kill_events if isinstance(e, JobKilled)]
        assert len(killed) == 1
        assert {p.name: p.ended for p in killed[0].pods} == expected

    return check


def started(episode: int, pods: list[str], already: list[str] | None = None) -> Step:
    def check(d: Decision) -> None:
        ks = [e for e in d.kill_events if isinstance(e, KillStarted)]
        assert len(ks) == 1
        assert ks[0].episode == episode
        assert [p.name for p in ks[0].pods] == pods
        assert [p.name for p in ks[0].already_done] == (already or [])

    return check  # type: ignore[return-value]


def in_parts(kind: type[KillStarted | JobKilled], pods: list[str], sizes: list[int]) -> Step:
    """The decision's ``kind`` events are parts 1..n of one event, of these sizes,
    listing ``pods`` in order, with distinct ids and otherwise equal fields."""

    def check(d: Decision) -> None:
        parts = [e for e in d.kill_events if isinstance(e, kind)]
        assert [(p.part, p.parts) for p in parts] == [
            (i + 1, len(sizes)) for i in range(len(sizes))
        ]
        listed = [len(p.pods) + len(getattr(p, "already_done", ())) for p in parts]
        assert listed == sizes
        assert [p.name for e in parts for p in e.pods] == pods
        ids = [event_id(e) for e in parts]
        assert len(set(ids)) == len(ids)
        common = {"pods", "part", "parts"}
        assert (
            len({e.model_copy(update=dict.fromkeys(common)).model_dump_json() for e in parts}) == 1
        )

    return check  # type: ignore[return-value]


BIG = [f"p{i:05d}" for i in range(3 * MAX_PODS_PER_PART + 1)]
"""A Job with more pods than three records hold: four parts."""


def started_in_parts(parts: list[tuple[list[str], list[str]]]) -> Step:
    """``KillStarted`` parts listing these (pods, already done)."""

    def check(d: Decision) -> None:
        ks = [e for e in d.kill_events if isinstance(e, KillStarted)]
        got = [([p.name for p in e.pods], [p.name for p in e.already_done]) for e in ks]
        assert got == parts

    return check  # type: ignore[return-value]


KILL_AT_0: dict[str, Any] = {"annotations": {KILL_TIMESTAMP: iso(0)}}
RWO: dict[str, Any] = {"claims": (VolumeClaim(name="data", access_modes=("ReadWriteOnce",)),)}
SAFE = SAFE_TO_FORCE_DELETE

CASES = [
    # ---- triggers -------------------------------------------------------------
    Case(
        "kill-timestamp-future-waits-and-is-due-exactly-then",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(50, [], [], next_due=100),
            D(99.999999, [], []),
            D(100, [(AD, "p1", R_AD, 100)], ["KillStarted", "KillStep"], next_due=280),
            D(100, [], []),
        ],
    ),
    Case(
        "kill-timestamp-in-the-past-kills-at-once",
        [J(5, annotations={KILL_TIMESTAMP: iso(1)}), P(5), D(6, [(AD, "p1", R_AD, 5)])],
    ),
    Case(
        "kill-timestamp-unparseable-is-ignored",
        [J(0, annotations={KILL_TIMESTAMP: "tomorrow"}), P(0), D(10_000, [], [])],
    ),
    Case(
        "kill-timestamp-only-lowers-never-postpones",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(50)}),
            P(0),
            Req(10, 100),
            D(50, [(AD, "p1", R_AD, 50)], check=only(trigger="Killed", reason="Killed")),
        ],
    ),
    Case(
        "kill-request-now",
        [J(0), P(0), Req(10), D(10, [(AD, "p1", R_AD, 10)], check=only(trigger="Killed"))],
    ),
    Case(
        "kill-request-future-waits",
        [J(0), P(0), Req(10, 50), D(49, [], next_due=50), D(50, [(AD, "p1", R_AD, 50)])],
    ),
    Case(
        # (was kill-request-earliest-wins: the newer request is also the earlier here)
        "kill-request-newer-one-advances-the-kill",
        [J(0), P(0), Req(1, 100, rid="a"), Req(2, 60, rid="b"), D(60, [(AD, "p1", R_AD, 60)])],
    ),
    # ---- what the Job shows of its kill (rule job.show-kill, core.show) ---------------
    Case(
        "show-kill-due-then-killing-then-killed",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(10, [], [], shows=[("due", 100)]),
            D(20, [], [], shows=[]),  # told once
            J(30, annotations={KILL_TIMESTAMP: iso(100)}),  # our own write, observed
            D(31, [], [], shows=[]),
            # killing: written by fail-job itself, no annotate-job
            D(100, [(AD, "p1", R_AD, 100)], job=[("Killed", 100, 1)], shows=[]),
            P(102, phase="Failed", ads=1, containers="terminated"),
            D(103, [], ["JobKilled"], shows=[("killed", 100)]),
            D(104, [], [], shows=[]),
            J(105, annotations={KILL_TIMESTAMP: iso(100)}),
            D(106, [], [], shows=[]),  # killed is final
        ],
    ),
    Case(
        "show-kill-a-kill-time-in-the-past-is-never-shown-due",
        [
            J(5, annotations={KILL_TIMESTAMP: iso(1)}),
            P(5),
            D(6, [(AD, "p1", R_AD, 5)], job=[("Killed", 1, 1)], shows=[]),
        ],
    ),
    Case(
        "show-kill-a-postponed-kill-shows-its-new-time",
        [
            J(0),
            P(0),
            Req(1, 60, rid="a"),
            D(2, [], [], shows=[("due", 60)]),
            Req(3, 100, rid="b"),
            D(4, [], [], shows=[("due", 100)]),
            D(100, [(AD, "p1", R_AD, 100)], job=[("Killed", 100, 1)], shows=[]),
        ],
    ),
    Case(
        "show-kill-a-cancelled-kill-shows-cancelled-once",
        [
            J(0),
            P(0),
            Req(1, 60),
            D(2, [], [], shows=[("due", 60)]),
            Cancel(3),
            D(4, [], [], shows=[("cancelled", 60)]),
            D(5, [], [], shows=[]),
            D(60, [], [], job=[], shows=[]),
            Req(70, 200, rid="again"),
            D(71, [], [], shows=[("due", 200)]),  # asked again: due again
        ],
    ),
    Case(
        "show-kill-a-timeout-is-not-announced-but-its-kill-is-shown-killed",
        [
            J(0, annotations={RUNNING_TIMEOUT: "20"}),
            P(0, start=0),
            D(1, [], [], shows=[]),
            D(20, [(AD, "p1", R_AD, 20)], job=[("RunningTimeout", 20, 1)], shows=[]),
            P(22, phase="Failed", ads=1, containers="terminated"),
            D(23, [], ["JobKilled"], shows=[("killed", 20)]),
        ],
    ),
    Case(
        "show-kill-a-job-finished-by-itself-cancels-what-was-due",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(10, [], [], shows=[("due", 100)]),
            J(
                20,
                annotations={KILL_TIMESTAMP: iso(100)},
                conditions=[("Complete", "True", None, 20)],
                active=0,
            ),
            D(21, [], [], shows=[("cancelled", 100)]),
        ],
    ),
    # ---- cancel and postpone (before the kill starts; final after) -------------------
    Case(
        "kill-request-newer-one-postpones-the-kill",
        [
            J(0),
            P(0),
            Req(1, 60, rid="a"),
            D(2, [], [], next_due=60),
            Req(3, 100, rid="b"),
            D(4, [], [], next_due=100),
            D(60, [], [], job=[], next_due=100),  # the old due time: its timer is dead
            D(99.9, [], [], job=[]),
            D(100, [(AD, "p1", R_AD, 100)], ["KillStarted", "KillStep"], job=[("Killed", 100, 1)]),
        ],
    ),
    Case(
        "kill-request-cancelled-before-the-kill-never-fires",
        [
            J(0),
            P(0),
            Req(1, 60),
            D(2, [], [], next_due=60),
            Cancel(3),
            D(4, [], [], next_due=None),
            D(60, [], [], job=[], next_due=None),
            D(10_000, [], [], job=[]),
        ],
    ),
    Case(
        "kill-request-cancel-folded-before-the-due-kill-is-decided-wins",
        # The kill starts when the killer decides it, not at its due time: a
        # cancellation folded before that decision (a killer behind) still cancels.
        [J(0), P(0), Req(1, 60), Cancel(61), D(62, [], [], job=[], next_due=None)],
    ),
    Case(
        "kill-request-cancel-after-the-kill-started-changes-nothing",
        [
            J(0),
            P(0),
            Req(1, 60),
            D(60, [(AD, "p1", R_AD, 60)], job=[("Killed", 60, 1)]),
            Cancel(61),
            Req(62, 500, rid="r2"),
            D(62, [], [], job=[], next_due=240),
            D(240, [(DEL, "p1", R_TIMEOUT, 240)], ["KillStep"], job=[]),
        ],
    ),
    Case(
        "kill-request-after-a-cancel-kills-at-its-time",
        [
            J(0),
            P(0),
            Req(1, 60, rid="a"),
            Cancel(2),
            Req(3, 80, rid="b"),
            D(60, [], [], job=[], next_due=80),
            D(80, [(AD, "p1", R_AD, 80)], job=[("Killed", 80, 1)]),
        ],
    ),
    Case(
        "kill-request-cancel-leaves-the-annotation-standing",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(200)}),
            P(0),
            Req(1, 60),
            Cancel(2),
            D(60, [], [], job=[], next_due=200),
            D(200, [(AD, "p1", R_AD, 200)], job=[("Killed", 200, 1)]),
        ],
    ),
    Case(
        "kill-request-cancel-pinned-to-another-uid-changes-nothing",
        [J(0), P(0), Req(1, 60), Cancel(2, job_uid="other"), D(60, [(AD, "p1", R_AD, 60)])],
    ),
    Case(
        "kill-request-cancel-pinned-to-the-job-cancels-an-unpinned-request",
        [J(0), P(0), Req(1, 60), Cancel(2, job_uid="job-1"), D(60, [], [], next_due=None)],
    ),
    Case(
        "kill-request-postponed-past-the-annotation-the-annotation-wins",
        # Two registers, the earlier time wins: a request cannot postpone the
        # annotation (nor the annotation a request).
        [
            J(0, annotations={KILL_TIMESTAMP: iso(150)}),
            P(0),
            Req(1, 60, rid="a"),
            Req(2, 300, rid="b"),
            D(60, [], [], next_due=150),
            D(150, [(AD, "p1", R_AD, 150)]),
        ],
    ),
    Case(
        "kill-timestamp-edited-before-the-kill-postpones-it",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(10, [], [], next_due=100),
            J(20, annotations={KILL_TIMESTAMP: iso(200)}),
            D(30, [], [], next_due=200),
            D(100, [], [], job=[], next_due=200),  # the old due time: its timer is dead
            D(200, [(AD, "p1", R_AD, 200)], job=[("Killed", 200, 1)]),
        ],
    ),
    Case(
        "kill-timestamp-edited-before-the-kill-advances-it",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(10, [], [], next_due=100),
            J(20, annotations={KILL_TIMESTAMP: iso(50)}),
            D(50, [(AD, "p1", R_AD, 50)], job=[("Killed", 50, 1)]),
        ],
    ),
    Case(
        "kill-timestamp-removed-before-the-kill-cancels-it",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(10, [], [], next_due=100),
            J(20),
            D(30, [], [], next_due=None),
            D(100, [], [], job=[]),
            D(10_000, [], [], job=[]),
        ],
    ),
    Case(
        "kill-timestamp-edited-or-removed-after-the-kill-started-changes-nothing",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(100, [(AD, "p1", R_AD, 100)], job=[("Killed", 100, 1)]),
            J(110, annotations={KILL_TIMESTAMP: iso(5000)}),
            D(120, [], [], job=[], next_due=280),
            J(130),
            D(280, [(DEL, "p1", R_TIMEOUT, 280)], ["KillStep"], job=[]),
        ],
    ),
    Case(
        "kill-request-pinned-to-another-uid-is-ignored",
        [J(0), P(0), Req(10, job_uid="other"), D(100, [])],
    ),
    Case(
        "kill-request-before-job-observed-applies-when-it-is",
        [Req(10, 20, job_uid="job-1"), D(30, []), J(31), P(31), D(32, [(AD, "p1", R_AD, 31)])],
    ),
    Case(
        "kill-request-never-hits-a-job-recreated-later-under-the-name",
        [
            J(0),
            J(5, change="deleted"),
            Req(10),
            J(20, uid="job-2", created=20, start=20),
            P(20, "p2", job_uid="job-2", created=20, start=20),
            D(30, [], []),
        ],
    ),
    Case(
        "job-deadline",
        [
            J(0, ads=60),
            P(0),
            D(59, [], next_due=60),
            D(60, [(AD, "p1", R_AD, 60)], check=only(trigger="DeadlineExceeded")),
        ],
    ),
    Case(
        "job-deadline-suspended-then-resumed-restarts-from-the-new-start-time",
        [
            J(0, ads=60),
            P(0),
            # suspended at 10: Kubernetes deleted the pod; no active pods left
            J(
                10,
                ads=60,
                suspend=True,
                conditions=[("Suspended", "True", "JobSuspended", 10)],
                active=0,
            ),
            P(11, deletion=11, phase="Failed", containers="terminated"),
            P(12, change="deleted", phase="Failed", containers="terminated"),
            D(70, [], []),
            # resumed at 100: spec first, status (startTime, condition) a moment later
            J(100, ads=60, conditions=[("Suspended", "True", "JobSuspended", 10)], active=0),
            D(101, [], []),
            J(101, ads=60, start=101, conditions=[("Suspended", "False", "JobResumed", 101)]),
            P(102, "p2", created=101, start=102),
            D(160, [], [], next_due=161),
            D(161, [(AD, "p2", R_AD, 161)], check=only(trigger="DeadlineExceeded")),
        ],
    ),
    Case(
        "job-deadline-not-while-suspended",
        [J(0, ads=10, start=None, suspend=True, active=0), D(1000, [], [], next_due=None)],
    ),
    Case(
        "pending-timeout-default-from-config",
        [
            J(0),
            P(0, **PENDING_POD),
            D(899, [], next_due=900),
            D(900, [(DEL, "p1", R_UNSCHED, 900)], check=only(trigger="PendingTimeout")),
        ],
    ),
    Case(
        "pending-timeout-annotation",
        [
            J(0, annotations={PENDING_TIMEOUT: "30"}),
            P(0, **PENDING_POD),
            D(30, [(DEL, "p1", R_UNSCHED, 30)]),
        ],
    ),
    Case(
        "pending-timeout-annotation-zero-disables",
        [
            J(0, annotations={PENDING_TIMEOUT: "0"}),
            P(0, **PENDING_POD),
            D(100_000, [], next_due=None),
        ],
    ),
    Case(
        "pending-timeout-config-zero-disables",
        [
            Cfg(1, defaultPendingTimeoutSeconds=0),
            J(0),
            P(0, **PENDING_POD),
            D(100_000, [], next_due=None),
        ],
    ),
    Case(
        "pending-timeout-scheduled-pod-waiting-for-image-is-still-pending",
        [
            J(0, annotations={PENDING_TIMEOUT: "60"}),
            P(0, phase="Pending", start=1, containers="waiting"),
            D(60, [(AD, "p1", R_AD, 60)], check=only(trigger="PendingTimeout")),
        ],
    ),
    Case(
        "pending-timeout-not-after-the-pod-started",
        [J(0), P(0, **PENDING_POD), P(100, start=100), D(100_000, [], next_due=None)],
    ),
    Case(
        "running-timeout-from-container-start",
        [
            J(0, annotations={RUNNING_TIMEOUT: "120"}),
            P(10, start=10),
            D(129, [], next_due=130),
            D(130, [(AD, "p1", R_AD, 130)], check=only(trigger="RunningTimeout")),
        ],
    ),
    Case(
        "running-timeout-zero-disables",
        [J(0, annotations={RUNNING_TIMEOUT: "0"}), P(10, start=10), D(100_000, [], next_due=None)],
    ),
    Case(
        "running-timeout-absent-means-none", [J(0), P(10, start=10), D(100_000, [], next_due=None)]
    ),
    Case(
        "job-finished-failed-with-active-pods-uses-the-jobs-reason",
        [
            J(50, conditions=[("Failed", "True", "BackoffLimitExceeded", 50)], active=1),
            P(0),
            D(
                50,
                [(AD, "p1", R_AD, 50)],
                check=only(trigger="JobFinished", reason="BackoffLimitExceeded"),
            ),
        ],
    ),
    Case(
        "job-finished-complete-without-active-pods-is-not-a-kill",
        [J(50, conditions=[("Complete", "True", None, 50)], active=0), P(0), D(100, [], [])],
    ),
    Case(
        "job-finished-failure-target-with-terminating-pods",
        [
            J(
                50,
                conditions=[("FailureTarget", "True", "PodFailurePolicy", 40)],
                active=0,
                terminating=1,
            ),
            P(0),
            D(50, [(AD, "p1", R_AD, 40)], check=only(reason="PodFailurePolicy")),
        ],
    ),
    Case(
        "suspended-with-pods-left",
        [
            J(10, suspend=True, conditions=[("Suspended", "True", "JobSuspended", 10)]),
            P(0),
            D(10, [(AD, "p1", R_AD, 10)], check=only(trigger="Suspended")),
        ],
    ),
    Case(
        "suspended-then-resumed-stops-killing-new-pods",
        [
            J(10, suspend=True),
            P(0),
            D(10, [(AD, "p1", R_AD, 10)]),
            J(20, start=20, conditions=[("Suspended", "False", "JobResumed", 20)]),
            P(25, "p2", created=25, start=25),
            D(30, [], []),
            D(190, [(DEL, "p1", R_TIMEOUT, 190)]),
        ],
    ),
    Case(
        "job-deleted-orphans-are-killed",
        [
            J(0),
            P(0),
            J(50, change="deleted"),
            D(50, [(AD, "p1", R_AD, 50)], check=only(trigger="JobDeleted")),
        ],
    ),
    Case(
        # Was killed (JobDeleted, job_uid None) before opt-in scope: a pod found by its
        # label only has no controlling Job, which is what orphaning on purpose leaves.
        "orphan-by-label-after-job-deleted-is-left-alone",
        [
            J(0),
            P(0, job_uid=None),
            D(10, []),
            J(50, change="deleted"),
            D(50, [], []),
            D(100_000, [], []),
        ],
    ),
    Case(
        "orphan-by-label-with-its-job-alive-is-left-alone",
        [J(0), P(0, job_uid=None), D(10_000, [])],
    ),
    Case(
        "pod-of-an-unobserved-job-is-never-killed-by-defaults",
        [P(0, **PENDING_POD), D(100_000, [], [], next_due=None)],
    ),
    Case(
        "job-deleted-mid-ladder-keeps-the-ladder-and-trigger",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            J(10, change="deleted", **KILL_AT_0),
            D(10, [], []),
            D(180, [(DEL, "p1", R_TIMEOUT, 180)], check=only(trigger="Killed")),
        ],
    ),
    Case(
        "stuck-terminating-any-pod-whoever-deleted-it",
        [
            J(0),
            P(0, deletion=100),
            D(999, [], [], next_due=1000),
            D(
                1000,
                [(FORCE, "p1", R_FORCE, 1000)],
                ["KillStep"],
                check=only(trigger="StuckTerminating", grace_period_seconds=0),
            ),
        ],
    ),
    Case(
        "trigger-earliest-wins",
        [
            J(0, ads=60, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(200, [(AD, "p1", R_AD, 60)], check=only(trigger="DeadlineExceeded")),
        ],
    ),
    Case(
        "trigger-tie-is-broken-by-priority",
        [
            J(0, ads=60, annotations={KILL_TIMESTAMP: iso(60)}),
            P(0),
            D(60, [(AD, "p1", R_AD, 60)], check=only(trigger="Killed")),
        ],
    ),
    # ---- the ladder -------------------------------------------------------------
    Case(
        "done-kubelet-marks-failed-while-containers-still-run-is-not-done",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            R(1, "p1", AD),
            P(2, phase="Failed", ads=1),  # containers still running
            D(179, [], []),
            D(180, [(DEL, "p1", R_TIMEOUT, 180)]),
        ],
    ),
    Case(
        "done-failed-with-containers-stopped-ends-the-kill",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            P(2, phase="Failed", ads=1, containers="terminated"),
            D(3, [], ["JobKilled"], next_due=None, check=endings(p1="exited")),
            D(180, [], []),
        ],
    ),
    Case(
        "ladder-unscheduled-delete-at-once",
        [
            J(0, **KILL_AT_0),
            P(0, **PENDING_POD),
            D(1, [(DEL, "p1", R_UNSCHED, 0)], check=only(grace_period_seconds=None)),
        ],
    ),
    Case(
        # Issue #17: a replacement pod scheduled ~70 ms after its unscheduled delete was
        # issued (the deletion not yet observed) got set-active-deadline too: a lower
        # rung after a higher one, two extra API writes (a 422, then a 200).
        "ladder-no-lower-rung-after-a-higher-one",
        [
            J(0, **KILL_AT_0),
            P(0, **PENDING_POD),
            D(1, [(DEL, "p1", R_UNSCHED, 0)]),
            P(1.07, phase="Pending", node="n1", start=1.0, containers="waiting"),
            D(1.08, []),
            D(500, []),
        ],
    ),
    Case(
        "ladder-active-deadline-is-elapsed-seconds-since-start",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0, start=0.5),
            D(100.7, [(AD, "p1", R_AD, 100)], check=only(active_deadline_seconds=100)),
        ],
    ),
    Case(
        "ladder-active-deadline-is-at-least-one",
        [
            J(0, **KILL_AT_0),
            P(0, start=0),
            D(0.2, [(AD, "p1", R_AD, 0)], check=only(active_deadline_seconds=1)),
        ],
    ),
    Case(
        "ladder-active-deadline-without-start-time-is-one",
        [
            J(0, **KILL_AT_0),
            P(0, start=None, phase="Pending", containers="none"),
            D(5, [(AD, "p1", R_AD, 0)], check=only(active_deadline_seconds=1)),
        ],
    ),
    Case(
        "ladder-active-deadline-lowers-a-higher-value",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0, ads=3600),
            D(100, [(AD, "p1", R_AD, 100)], check=only(active_deadline_seconds=100)),
        ],
    ),
    Case(
        "ladder-active-deadline-never-raised",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0, ads=50),
            D(100, [], ["KillStarted"], next_due=280),
            D(280, [(DEL, "p1", R_TIMEOUT, 280)]),
        ],
    ),
    Case(
        "ladder-delete-after-timeout-exactly-at-k-plus-timeout",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(100.5, [(AD, "p1", R_AD, 100)], next_due=280.5),
            R(101, "p1", AD),
            D(280.499999, [], []),
            D(280.5, [(DEL, "p1", R_TIMEOUT, 280.5)], check=only(grace_period_seconds=None)),
        ],
    ),
    Case(
        "ladder-delete-timeout-zero-deletes-at-once",
        [
            Cfg(1, deleteKillingTasksTimeoutSeconds=0),
            J(0, **KILL_AT_0),
            P(0),
            D(1, [(DEL, "p1", R_TIMEOUT, 1)]),
        ],
    ),
    Case(
        "ladder-delete-method-skips-the-deadline",
        [Cfg(1, killMethod="delete"), J(0, **KILL_AT_0), P(0), D(1, [(DEL, "p1", R_METHOD, 0)])],
    ),
    Case(
        "ladder-no-delete-while-already-being-deleted",
        [J(0, **KILL_AT_0), P(0, deletion=5), D(6, [], ["KillStarted"], next_due=905)],
    ),
    Case(
        "node-lost-delete-at-once-no-deadline",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            N(50),
            D(100, [(DEL, "p1", R_LOST, 100)]),
        ],
    ),
    Case(
        "node-lost-mid-ladder-deletes-when-seen-lost",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            N(30, status="unreachable"),
            D(31, [(DEL, "p1", R_LOST, 30)]),
        ],
    ),
    Case(
        "node-gone-counts-as-lost",
        [J(0, **KILL_AT_0), P(0), N(0, status="gone"), D(1, [(DEL, "p1", R_LOST, 0)])],
    ),
    Case(
        # Found by the rebuild property: a node found again must re-examine its pods
        # at once (as a rebuilt state, which looks at every pod, does), not at the
        # failed delete's retry.
        "node-ready-again-re-examines-its-pods-at-once",
        [
            J(0, **KILL_AT_0),
            P(0),
            N(0),
            D(0, [(DEL, "p1", R_LOST, 0)]),
            R(0, "p1", DEL, "failed"),
            D(0.2, []),  # the retry waits for its backoff
            N(0.5, status="ready"),
            D(0.5, [(AD, "p1", R_AD, 0)]),
        ],
    ),
    Case(
        "node-ready-again-does-not-undo",
        [J(0, **KILL_AT_0), P(0), N(0), N(0.5, status="ready"), D(1, [(AD, "p1", R_AD, 0)])],
    ),
    Case(
        "force-delete-at-deletion-timestamp-plus-timeout",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            D(180, [(DEL, "p1", R_TIMEOUT, 180)]),
            R(181, "p1", DEL),
            P(181, deletion=211),
            D(1110.999999, [], [], next_due=1111),
            D(
                1111,
                [(FORCE, "p1", R_FORCE, 1111)],
                check=only(grace_period_seconds=0, trigger="Killed"),
            ),
            R(1112, "p1", FORCE),
            D(1112, [], ["JobKilled"], check=endings(p1="force-deleted")),
        ],
    ),
    Case(
        "force-delete-disabled-by-zero",
        [
            Cfg(1, forceDeleteTaskTimeoutSeconds=0),
            J(0, **KILL_AT_0),
            P(0, deletion=5),
            D(100_000, [], ["KillStarted"], next_due=None),
        ],
    ),
    Case(
        "force-delete-disabled-by-zero-old-name",
        [
            Cfg(1, forceDeleteKillingTasksTimeoutSeconds=0),
            J(0),
            P(0, deletion=5),
            D(100_000, [], [], next_due=None),
        ],
    ),
    Case(
        "forbid-force-deletion-on-job-alerts-once",
        [
            J(0, annotations={FORBID_FORCE_DELETION: "true", KILL_TIMESTAMP: iso(0)}),
            P(0, deletion=5),
            D(905, [], ["KillStarted", "ForceDeletionForbidden"], next_due=None),
            D(2000, [], []),
            P(2001, deletion=5, phase="Running"),
            D(2002, [], []),
        ],
    ),
    Case(
        "forbid-force-deletion-on-pod",
        [
            J(0),
            P(0, deletion=5, annotations={FORBID_FORCE_DELETION: "True"}),
            D(905, [], ["ForceDeletionForbidden"]),
        ],
    ),
    Case(
        "forbid-and-lost-node-deletes-but-never-forces",
        [
            J(0, annotations={FORBID_FORCE_DELETION: "true", KILL_TIMESTAMP: iso(0)}),
            P(0),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            R(2, "p1", DEL),
            P(2, deletion=32),  # the kubelet is gone: the deletion never completes
            D(931, [], []),
            D(932, [], ["ForceDeletionForbidden"]),
            D(100_000, [], []),
        ],
    ),
    # ---- the lost-node trigger (deleteOnNodeLostAfterSeconds) ------------------------
    Case(
        "node-lost-trigger-deletes-after-the-time-then-forces-without-killing-the-job",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30),
            J(0),
            P(0),
            N(10, status="unreachable"),
            D(11, [], [], next_due=40),
            D(
                40,
                [(DEL, "p1", R_NODE_LOST, 40)],
                ["KillStep"],
                job=[],
                check=only(trigger="NodeLost", reason="NodeLost", grace_period_seconds=None),
            ),
            R(41, "p1", DEL),
            P(41, deletion=71, grace=30),  # the kubelet is gone: it never completes
            D(42, [], [], next_due=971),
            D(
                971,
                [(FORCE, "p1", R_FORCE, 971)],
                ["KillStep"],
                job=[],
                check=only(trigger="NodeLost"),
            ),
        ],
    ),
    Case(
        "node-lost-trigger-is-off-by-default",
        [
            J(0),
            P(0),
            N(10, status="unreachable"),
            D(11, [], [], next_due=None),
            D(100_000, [], []),
        ],
    ),
    Case(
        "node-lost-trigger-counts-not-ready-too",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30),
            J(0),
            P(0),
            N(5, status="not-ready"),
            D(35, [(DEL, "p1", R_NODE_LOST, 35)]),
        ],
    ),
    Case(
        "node-lost-trigger-node-back-before-the-time-deletes-nothing",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30),
            J(0),
            P(0),
            N(10, status="unreachable"),
            D(11, [], [], next_due=40),
            N(20, status="ready"),
            D(40, [], []),
            N(100, status="unreachable"),  # counts again from the new loss
            D(129, [], [], next_due=130),
            D(130, [(DEL, "p1", R_NODE_LOST, 130)]),
        ],
    ),
    Case(
        "node-lost-trigger-per-selector",
        [
            Cfg(
                1,
                overrides={
                    "selectors": [
                        {
                            "matchLabels": {"team": "a"},
                            "settings": {"deleteOnNodeLostAfterSeconds": 30},
                        }
                    ]
                },
            ),
            J(0, labels={**IN_SCOPE, "team": "a"}),
            P(0),
            J(0, name="k", uid="job-2"),
            P(0, "q1", job="k", job_uid="job-2"),
            N(0, status="unreachable"),
            D(30, [(DEL, "p1", R_NODE_LOST, 30)]),
            D(100_000, [], []),
        ],
    ),
    Case(
        "node-lost-trigger-out-of-scope-or-unscheduled-or-deleted-does-nothing",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30),
            J(0, labels={}),  # enforce off
            P(0),
            J(0, name="k", uid="job-2"),
            P(0, "q1", job="k", job_uid="job-2", node=None, phase="Pending", containers="none"),
            P(0, "q2", job="k", job_uid="job-2", deletion=5000),  # deleted already: no delete
            N(0, status="unreachable"),
            D(100, [], []),
        ],
    ),
    Case(
        "node-lost-trigger-force-step-within-the-fence-policy",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30, forceDeletePolicy="whenFenced"),
            J(0),
            P(0),
            N(0, status="unreachable"),
            D(30, [(DEL, "p1", R_NODE_LOST, 30)]),
            R(31, "p1", DEL),
            P(31, deletion=61, grace=30),
            D(961, [], ["ForceDeletionHeld"], check=held("fence", until=None)),
            NT(1000, status="unreachable"),
            D(1000, [(FORCE, "p1", R_FENCED, 1000)], check=only(trigger="NodeLost")),
        ],
    ),
    Case(
        "node-lost-trigger-shadow-writes-nothing-and-times-the-force-from-would-apply",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30),
            J(0, labels={ENFORCE: "shadow"}),
            P(0),
            N(0, status="unreachable"),
            D(30, [(DEL, "p1", R_NODE_LOST, 30)], check=only(shadow=True)),
            R(31, "p1", DEL, "would-apply"),
            D(930, [], [], next_due=931),
            D(931, [(FORCE, "p1", R_FORCE, 931)], check=only(shadow=True, trigger="NodeLost")),
        ],
    ),
    Case(
        "node-lost-trigger-then-a-kill-takes-the-pod-into-the-kill",
        [
            Cfg(1, deleteOnNodeLostAfterSeconds=30),
            J(0),
            P(0),
            N(0, status="unreachable"),
            D(30, [(DEL, "p1", R_NODE_LOST, 30)]),
            P(31, deletion=61, grace=30),
            J(40, annotations={KILL_TIMESTAMP: iso(40)}),
            D(40, [], ["KillStarted"]),  # already being deleted: no second delete
            D(961, [(FORCE, "p1", R_FORCE, 961)], check=only(trigger="Killed")),
        ],
    ),
    # ---- volumes: an exclusive claim on a node not fenced (rule force.volume) -------
    Case(
        "volume-rwo-claim-on-an-unfenced-node-is-never-force-deleted",
        [
            J(0, **KILL_AT_0),
            P(0, **RWO),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            R(2, "p1", DEL),
            P(2, deletion=32, **RWO),
            D(931, [], [], next_due=932),
            D(932, [], ["ForceDeletionHeld"], next_due=None, check=held("volume", until=None)),
            D(100_000, [], []),  # once per pod, and never by time
        ],
    ),
    Case(
        "volume-rwo-claim-is-force-deleted-at-once-when-fenced",
        [
            J(0, **KILL_AT_0),
            P(0, claims=(VolumeClaim(name="d", access_modes=("ReadWriteOncePod",)),)),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32, claims=(VolumeClaim(name="d", access_modes=("ReadWriteOncePod",)),)),
            D(932, [], ["ForceDeletionHeld"], check=held("volume", until=None)),
            NT(5000, status="unreachable"),
            D(5000, [(FORCE, "p1", R_FENCED, 5000)], ["KillStep"]),
        ],
    ),
    Case(
        "volume-rwo-claim-held-until-a-fence-by-the-unreachable-time",
        [
            Cfg(1, fenceUnreachableAfterSeconds=2000),
            J(0, **KILL_AT_0),
            P(0, **RWO),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32, **RWO),
            # as whenFenced: a fence due by time is a timer (no hold said before it)
            D(932, [], [], next_due=2000),
            D(2000, [(FORCE, "p1", R_FENCED, 2000)]),
        ],
    ),
    Case(
        "volume-rwo-claim-with-the-pods-opt-in-is-force-deleted-on-time",
        [
            J(0, **KILL_AT_0),
            P(0, annotations={SAFE: "true"}, **RWO),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32, annotations={SAFE: " TRUE "}, **RWO),
            D(932, [(FORCE, "p1", R_FORCE, 932)], ["KillStep"]),
        ],
    ),
    Case(
        "volume-rwo-claim-with-the-jobs-opt-in-is-force-deleted-on-time",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(0), SAFE: "true"}),
            P(0, **RWO),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32, **RWO),
            D(932, [(FORCE, "p1", R_FORCE, 932)], ["KillStep"]),
        ],
    ),
    Case(
        "volume-an-invalid-opt-in-does-not-opt-in",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(0), SAFE: "yes"}),
            P(0, annotations={SAFE: "1"}, **RWO),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32, annotations={SAFE: "1"}, **RWO),
            D(932, [], ["ForceDeletionHeld"], check=held("volume", until=None)),
        ],
    ),
    Case(
        "volume-rwx-or-read-only-claims-do-not-hold",
        [
            J(0, **KILL_AT_0),
            P(0, claims=(VolumeClaim(name="s", access_modes=("ReadWriteMany",)),)),
            P(0, "p2", claims=(VolumeClaim(name="r", access_modes=("ReadOnlyMany",)),)),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0), (DEL, "p2", R_LOST, 0)]),
            P(2, deletion=32, claims=(VolumeClaim(name="s", access_modes=("ReadWriteMany",)),)),
            P(
                2,
                "p2",
                deletion=32,
                claims=(VolumeClaim(name="r", access_modes=("ReadOnlyMany",)),),
            ),
            # (the rate limit spaces them: 20 a second by default)
            D(932, [(FORCE, "p1", R_FORCE, 932)], next_due=932.05),
            D(932.05, [(FORCE, "p2", R_FORCE, 932)]),
        ],
    ),
    Case(
        "volume-a-claim-of-unknown-access-modes-holds-as-rwo",
        [
            J(0),
            P(0, deletion=5, claims=(VolumeClaim(name="d"),)),
            D(905, [], ["ForceDeletionHeld"], check=held("volume", until=None)),
        ],
    ),
    Case(
        "volume-forbidden-wins-over-the-hold",
        [
            J(0, annotations={FORBID_FORCE_DELETION: "true"}),
            P(0, deletion=5, **RWO),
            D(905, [], ["ForceDeletionForbidden"]),
        ],
    ),
    # ---- fences, forceDeletePolicy, the rate limit ----------------------------------
    Case(
        "fence-out-of-service-taint-force-deletes-at-once",
        [
            J(0, **KILL_AT_0),
            P(0),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            R(2, "p1", DEL),
            P(2, deletion=32),  # the kubelet is gone: the deletion never completes
            D(40, [], [], next_due=932),  # afterTimeout: not before the timeout
            NT(50, status="unreachable"),
            D(50, [(FORCE, "p1", R_FENCED, 50)], ["KillStep"], check=only(grace_period_seconds=0)),
            R(51, "p1", FORCE),
            D(51, [], ["JobKilled"], check=endings(p1="force-deleted")),
        ],
    ),
    Case(
        "fence-node-deleted-force-deletes-at-once",
        [
            J(0, **KILL_AT_0),
            P(0),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32),
            N(60, status="gone"),
            D(60, [(FORCE, "p1", R_FENCED, 60)]),
        ],
    ),
    Case(
        "fence-forces-from-the-deletion-request-not-the-end-of-its-grace",
        [
            J(0, **KILL_AT_0),
            P(0),
            NT(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=31, grace=30),  # requested at 1
            D(2, [(FORCE, "p1", R_FENCED, 1)]),
        ],
    ),
    Case(
        "fence-without-a-known-grace-forces-from-the-deletion-timestamp",
        [
            J(0, **KILL_AT_0),
            P(0),
            NT(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=31),
            D(2, [], [], next_due=31),
            D(31, [(FORCE, "p1", R_FENCED, 31)]),
        ],
    ),
    Case(
        "fence-also-forces-a-stuck-deletion-outside-any-kill",
        [
            J(0),
            P(0, deletion=30),
            D(10, [], [], next_due=930),
            NT(100, status="not-ready"),
            D(100, [(FORCE, "p1", R_FENCED, 100)], check=only(trigger="StuckTerminating")),
        ],
    ),
    Case(
        "fence-lifted-before-the-timeout-falls-back-to-the-policy",
        [
            J(0),
            P(0, deletion=30),
            Cfg(1, forceDeletePolicy="whenFenced"),
            D(1, [], [], next_due=930),
            # tainted and untainted before the pod was looked at again: not fenced
            NT(10, status="not-ready"),
            N(11, status="not-ready"),
            D(20, [], [], next_due=930),
            D(930, [], ["ForceDeletionHeld"], next_due=None, check=held("fence", until=None)),
        ],
    ),
    Case(
        "force-when-fenced-holds-until-the-taint",
        [
            Cfg(1, forceDeletePolicy="whenFenced"),
            J(0, **KILL_AT_0),
            P(0),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32),
            D(931, [], [], next_due=932),
            D(932, [], ["ForceDeletionHeld"], next_due=None, check=held("fence", until=None)),
            D(5000, [], []),  # once per pod
            NT(6000, status="unreachable"),
            D(6000, [(FORCE, "p1", R_FENCED, 6000)], ["KillStep"]),
        ],
    ),
    Case(
        "force-when-fenced-never-forces-on-a-ready-node",
        [
            Cfg(1, forceDeletePolicy="whenFenced"),
            J(0),
            N(0, status="ready"),
            P(0, deletion=5),
            D(905, [], ["ForceDeletionHeld"], next_due=None),
            D(100_000, [], []),
        ],
    ),
    Case(
        "force-when-fenced-by-the-unreachable-time",
        [
            Cfg(1, forceDeletePolicy="whenFenced", fenceUnreachableAfterSeconds=60),
            J(0, **KILL_AT_0),
            P(0),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32),
            D(59, [], [], next_due=60),
            D(60, [(FORCE, "p1", R_FENCED, 60)]),
        ],
    ),
    Case(
        "force-unreachable-time-counts-only-while-lost",
        [
            Cfg(1, forceDeletePolicy="whenFenced", fenceUnreachableAfterSeconds=60),
            J(0),
            P(0, deletion=2),
            N(0, status="unreachable"),
            N(30, status="ready"),  # back before the 60 s: not fenced
            D(100, [], [], next_due=902),
            N(200, status="unreachable"),
            D(200, [], [], next_due=260),
            D(260, [(FORCE, "p1", R_FENCED, 260)]),
        ],
    ),
    Case(
        "force-policy-never-forbids-even-on-a-fenced-node",
        [
            Cfg(1, forceDeletePolicy="never"),
            J(0, **KILL_AT_0),
            P(0),
            N(0, status="unreachable"),
            D(1, [(DEL, "p1", R_LOST, 0)]),
            P(2, deletion=32),
            N(50, status="gone"),
            D(50, [], ["ForceDeletionForbidden"], next_due=None, check=forbidden_by("policy")),
            D(5000, [], []),
        ],
    ),
    Case(
        "force-policy-never-on-an-unfenced-node-says-so-at-the-timeout",
        [
            Cfg(1, forceDeletePolicy="never"),
            J(0),
            P(0, deletion=5),
            D(904, [], [], next_due=905),
            D(905, [], ["ForceDeletionForbidden"], check=forbidden_by("policy")),
        ],
    ),
    Case(
        "force-policy-per-namespace-and-selector",
        [
            Cfg(
                1,
                forceDeletePolicy="whenFenced",
                overrides={
                    "namespaces": {NS_: {"forceDeletePolicy": "never"}},
                    "selectors": [
                        {
                            "matchLabels": {"t": "x"},
                            "settings": {"forceDeletePolicy": "afterTimeout"},
                        }
                    ],
                },
            ),
            J(0, labels={**IN_SCOPE, "t": "x"}),
            P(0, deletion=5),
            D(905, [(FORCE, "p1", R_FORCE, 905)]),
            J(0, name="k", uid="job-2"),
            P(0, "q1", job="k", job_uid="job-2", deletion=5),
            D(906, [], ["ForceDeletionForbidden"], check=forbidden_by("policy")),
        ],
    ),
    Case(
        "force-rate-limit-spreads-force-deletions",
        [
            Cfg(1, maxForceDeletionsPerSecondPerPartition=2),
            J(0),
            *[P(0, f"p{i}", deletion=5) for i in range(5)],
            D(
                905,
                [(FORCE, "p0", R_FORCE, 905)],
                ["KillStep", *["ForceDeletionHeld"] * 4],
                next_due=905.5,
                check=held("rate-limit", until=905.5),
            ),
            D(905.25, [], [], next_due=905.5),
            D(905.5, [(FORCE, "p1", R_FORCE, 905)], ["KillStep"], next_due=906),
            D(906, [(FORCE, "p2", R_FORCE, 905)], ["KillStep"]),
            D(906.5, [(FORCE, "p3", R_FORCE, 905)], ["KillStep"]),
            D(906.9, [], [], next_due=907),
            D(907, [(FORCE, "p4", R_FORCE, 905)], ["KillStep"]),
        ],
    ),
    Case(
        "force-rate-limit-spaces-the-decisions",
        [
            Cfg(1, maxForceDeletionsPerSecondPerPartition=2),
            J(0),
            P(0, "a", deletion=5),
            D(905, [(FORCE, "a", R_FORCE, 905)]),
            P(0, "b", deletion=5.4),
            P(0, "c", deletion=5.4),
            # 1 s / 2 after a: both wait, b first (by name), then c 0.5 s after b
            D(905.4, [], ["ForceDeletionHeld"] * 2, next_due=905.5),
            D(905.5, [(FORCE, "b", R_FORCE, 905.4)], ["KillStep"], next_due=906),
            D(906, [(FORCE, "c", R_FORCE, 905.4)]),
        ],
    ),
    Case(
        "force-rate-limit-counts-retries-and-fenced-ones-not-other-steps",
        [
            Cfg(1, maxForceDeletionsPerSecondPerPartition=1),
            J(0, **KILL_AT_0),
            P(0, "a"),
            P(0, "b"),
            NT(0, status="unreachable"),
            D(0, [(DEL, "a", R_LOST, 0), (DEL, "b", R_LOST, 0)]),
            P(1, "a", deletion=1),
            P(1, "b", deletion=1),
            D(1, [(FORCE, "a", R_FENCED, 1)], ["KillStep", "ForceDeletionHeld"], next_due=2),
            R(1.5, "a", FORCE, "failed"),  # retried after 1 s: at 2.5
            D(2, [(FORCE, "b", R_FENCED, 1)]),
            D(2.5, [], ["ForceDeletionHeld"], next_due=3),  # a's retry: b took the slot
            D(3, [(FORCE, "a", R_FENCED, 1)], check=only(attempt=2)),
        ],
    ),
    Case(
        "force-rate-limit-zero-is-no-limit",
        [
            Cfg(1, maxForceDeletionsPerSecondPerPartition=0),
            J(0),
            *[P(0, f"p{i:02d}", deletion=5) for i in range(50)],
            D(905, [(FORCE, f"p{i:02d}", R_FORCE, 905) for i in range(50)]),
        ],
    ),
    # ---- identity, order, time --------------------------------------------------
    Case(
        "recreated-pod-under-the-same-name-is-a-different-pod",
        [
            J(0, **KILL_AT_0),
            P(0, uid="A"),
            D(0, [(AD, "p1", R_AD, 0)], check=only(pod_uid="A")),
            P(10, uid="B", created=10, start=10),
            D(10, [(AD, "p1", R_AD, 10)], ["KillStarted", "KillStep"], check=only(pod_uid="B")),
            D(180, [], []),  # A is gone: no delete for it
            D(190, [(DEL, "p1", R_TIMEOUT, 190)], check=only(pod_uid="B")),
        ],
    ),
    Case(
        "recreated-stale-event-about-the-old-pod-is-ignored",
        [
            J(0, **KILL_AT_0),
            P(10, uid="B", rv="20"),
            P(5, uid="A", rv="10"),
            D(11, [(AD, "p1", R_AD, 10)], check=only(pod_uid="B")),
        ],
    ),
    Case(
        "stale-pod-event-is-ignored",
        [
            J(0),
            P(10, deletion=10, rv="50"),
            P(5, rv="40"),  # older: the pod is still being deleted
            D(910, [(FORCE, "p1", R_FORCE, 910)]),
        ],
    ),
    Case(
        "stale-job-event-is-ignored",
        [
            J(0, rv="50", annotations={KILL_TIMESTAMP: iso(5)}),
            J(1, rv="40"),
            P(0),
            D(5, [(AD, "p1", R_AD, 5)]),
        ],
    ),
    Case(
        "tombstone-nothing-comes-back-from-a-deletion",
        [J(0, **KILL_AT_0), P(0, change="deleted"), P(1), D(5, [], [])],
    ),
    Case(
        "now-backwards-never-acts-early",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(100)}),
            P(0),
            D(100, [(AD, "p1", R_AD, 100)]),
            D(50, [], []),
            D(279, [], []),
            D(280, [(DEL, "p1", R_TIMEOUT, 280)]),
        ],
    ),
    Case(
        "retry-after-failed-with-backoff",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], check=only(attempt=1)),
            R(1, "p1", AD, "failed"),
            D(1.5, [], [], next_due=2),
            D(2, [(AD, "p1", R_AD, 0)], check=only(attempt=2, active_deadline_seconds=2)),
            R(3, "p1", AD, "failed"),
            D(4.9, [], []),
            D(5, [(AD, "p1", R_AD, 0)], check=only(attempt=3)),
        ],
    ),
    Case(
        "retry-after-forbidden-waits-a-minute",
        [
            J(0, **KILL_AT_0),
            P(0, **PENDING_POD),
            D(0, [(DEL, "p1", R_UNSCHED, 0)]),
            R(1, "p1", DEL, "forbidden"),
            D(60, []),
            D(61, [(DEL, "p1", R_UNSCHED, 0)], check=only(attempt=2)),
        ],
    ),
    Case(
        "result-gone-or-uid-mismatch-counts-as-done",
        [
            J(0, **KILL_AT_0),
            P(0),
            P(0, "p2"),
            D(0, [(AD, "p1", R_AD, 0), (AD, "p2", R_AD, 0)]),
            R(1, "p1", AD, "gone"),
            R(1, "p2", AD, "uid-mismatch"),
            D(2, [], ["JobKilled"], next_due=None, check=endings(p1="deleted", p2="deleted")),
        ],
    ),
    Case(
        "result-refused-is-final-and-not-done",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            R(1, "p1", AD, "refused"),
            # not re-issued (a failed step would be at 2), not counted done (no JobKilled)
            D(2, [], [], next_due=180),
            D(179, [], []),
            # the next rung still comes due; refused too, it is final as well
            D(180, [(DEL, "p1", R_TIMEOUT, 180)], check=only(attempt=1)),
            R(181, "p1", DEL, "refused"),
            D(10_000, [], [], next_due=None),
            # the pod ends by other means: the kill completes then
            P(10_001, change="deleted", phase="Failed", containers="terminated"),
            D(10_002, [], ["JobKilled"], next_due=None, check=endings(p1="deleted")),
        ],
    ),
    Case(
        "result-refused-force-delete-is-not-a-force-deletion",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            D(180, [(DEL, "p1", R_TIMEOUT, 180)]),
            R(181, "p1", DEL),
            P(181, deletion=211),
            D(1111, [(FORCE, "p1", R_FORCE, 1111)]),
            R(1112, "p1", FORCE, "refused"),
            # an applied force deletion would end the kill here (force-deleted)
            D(1112, [], [], next_due=None),
            D(100_000, [], [], next_due=None),
        ],
    ),
    Case(
        "unknown-result-is-ignored",
        [
            lambda h: h.feed(
                CommandApplied(
                    command_id="x",
                    step="delete",
                    namespace="ns",
                    job_name="j",
                    pod_name="zz",
                    pod_uid="zz",
                    outcome="applied",
                    applied_at=at(1),
                )
            ),
            D(2, [], []),
        ],
    ),
    Case(
        "job-recreated-under-the-same-name-orphans-the-old-pods-only",
        [
            J(0, **KILL_AT_0),
            P(0, "old"),
            D(0, [(AD, "old", R_AD, 0)], check=only(job_uid="job-1", trigger="Killed")),
            # the old Job's deletion was missed; a new Job of the name appears
            J(100, uid="job-2", created=100, start=100),
            P(100, "new", job_uid="job-2", created=100, start=100),
            D(100, [], []),
            D(180, [(DEL, "old", R_TIMEOUT, 180)], check=only(job_uid="job-1")),
        ],
    ),
    # ---- configuration ---------------------------------------------------------------
    Case(
        "config-version-is-recorded-on-every-command",
        [Cfg(7), J(0, **KILL_AT_0), P(0), D(0, check=only(config_version=7))],
    ),
    Case(
        "config-namespace-override",
        [
            Cfg(2, overrides={"namespaces": {"ns": {"deleteKillingTasksTimeoutSeconds": 60}}}),
            J(0, **KILL_AT_0),
            P(0),
            D(0, next_due=60),
        ],
    ),
    Case(
        "config-selector-override-beats-namespace",
        [
            Cfg(
                2,
                overrides={
                    "namespaces": {"ns": {"deleteKillingTasksTimeoutSeconds": 60}},
                    "selectors": [
                        {
                            "matchLabels": {"tier": "x"},
                            "settings": {"deleteKillingTasksTimeoutSeconds": 30},
                        }
                    ],
                },
            ),
            J(0, labels={**IN_SCOPE, "tier": "x"}, **KILL_AT_0),
            P(0),
            D(0, next_due=30),
        ],
    ),
    Case(
        "config-job-annotation-beats-overrides",
        [
            Cfg(
                2,
                overrides={
                    "selectors": [
                        {
                            "matchLabels": {"tier": "x"},
                            "settings": {"defaultPendingTimeoutSeconds": 0},
                        }
                    ]
                },
            ),
            J(0, labels={**IN_SCOPE, "tier": "x"}, annotations={PENDING_TIMEOUT: "20"}),
            P(0, **PENDING_POD),
            D(20, [(DEL, "p1", R_UNSCHED, 20)]),
        ],
    ),
    Case(
        "config-change-reschedules-pending-steps",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], next_due=180),
            Cfg(3, deleteKillingTasksTimeoutSeconds=60),
            D(61, [(DEL, "p1", R_TIMEOUT, 60)], check=only(config_version=3)),
        ],
    ),
    # ---- episodes and endings ---------------------------------------------------------
    Case(
        "endings-exited-deleted-force-deleted-already-done",
        [
            J(0, **KILL_AT_0),
            P(0, "a", phase="Succeeded", containers="terminated"),
            P(0, "b"),
            P(0, "c"),
            P(0, "d", **PENDING_POD),
            D(0, check=started(1, ["b", "c", "d"], ["a"])),
            P(1, "b", phase="Failed", containers="terminated"),
            P(1, "d", change="deleted", **PENDING_POD),
            N(2),
            D(2, [(DEL, "c", R_LOST, 2)]),
            P(3, "c", deletion=3),
            D(903, [(FORCE, "c", R_FORCE, 903)]),
            P(904, "c", change="deleted", deletion=3),
            D(
                904,
                [],
                ["JobKilled"],
                check=endings(a="already-done", b="exited", c="force-deleted", d="deleted"),
            ),
        ],
    ),
    Case(
        "parts-a-kill-of-more-pods-than-one-record-holds-is-written-in-parts",
        [
            J(0, **KILL_AT_0),
            *[P(0, name) for name in BIG],
            D(0, check=in_parts(KillStarted, BIG, [MAX_PODS_PER_PART] * 3 + [1])),
            *[P(1, name, phase="Failed", containers="terminated") for name in BIG],
            D(
                1,
                [],
                ["JobKilled"] * 4,
                check=in_parts(JobKilled, BIG, [MAX_PODS_PER_PART] * 3 + [1]),
            ),
            D(2, [], [], next_due=None),
        ],
    ),
    Case(
        "parts-already-done-pods-share-the-parts-after-the-killed-ones",
        [
            J(0, **KILL_AT_0),
            *[P(0, name, phase="Succeeded", containers="terminated") for name in BIG[:5]],
            *[P(0, name) for name in BIG[5 : MAX_PODS_PER_PART + 2]],
            D(
                0,
                # 997 to kill, then 5 already done: 1,002 entries, 1,000 in the first
                check=started_in_parts([(BIG[5 : MAX_PODS_PER_PART + 2], BIG[:3]), ([], BIG[3:5])]),
            ),
        ],
    ),
    Case(
        "replacement-pod-after-the-kill-starts-a-new-episode",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            P(1, phase="Failed", containers="terminated"),
            D(1, [], ["JobKilled"]),
            P(2, "p2", created=2, start=2),
            D(2, [(AD, "p2", R_AD, 2)], check=started(2, ["p2"], [])),
        ],
    ),
    # --- rule job.failure-target: the Job-level step fail-job --------------------------
    Case(
        "fail-job-once-in-the-decision-that-starts-a-kill",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], job=[("Killed", 0, 1)], check=started(1, ["p1"])),
            R(1, "", FAIL, "applied"),
            D(2, [], [], job=[]),
            # a pod that joins the kill later: the Job is not failed again
            P(5, "p2"),
            D(5, [(AD, "p2", R_AD, 5)], job=[], check=started(1, ["p2"])),
            R(6, "p1", AD),
            R(6, "p2", AD),
            P(7, phase="Failed", containers="terminated"),
            P(7, "p2", phase="Failed", containers="terminated"),
            D(7, [], ["JobKilled"], job=[]),
            # a replacement after the episode ended opens a new one: still not again
            P(8, "p3"),
            D(8, [(AD, "p3", R_AD, 8)], job=[], check=started(2, ["p3"])),
        ],
    ),
    Case(
        "fail-job-a-future-kill-waits-for-its-time",
        [
            J(0, annotations={KILL_TIMESTAMP: iso(10)}),
            P(0),
            D(9.9, [], [], job=[], next_due=10),
            D(10, [(AD, "p1", R_AD, 10)], job=[("Killed", 10, 1)]),
        ],
    ),
    Case(
        "fail-job-for-a-kill-request",
        [J(0), P(0), Req(1, 3), D(3, [(AD, "p1", R_AD, 3)], job=[("Killed", 3, 1)])],
    ),
    Case(
        "fail-job-for-a-pending-timeout",
        [
            J(0),
            P(0, **PENDING_POD),
            D(900, [(DEL, "p1", R_UNSCHED, 900)], job=[("PendingTimeout", 900, 1)]),
        ],
    ),
    Case(
        "fail-job-for-a-running-timeout",
        [
            J(0, annotations={RUNNING_TIMEOUT: "120"}),
            P(10, start=10),
            D(130, [(AD, "p1", R_AD, 130)], job=[("RunningTimeout", 130, 1)]),
        ],
    ),
    Case(
        "fail-job-even-with-no-pod-left-to-kill",
        [J(0, active=0, **KILL_AT_0), D(0, [], [], job=[("Killed", 0, 1)])],
    ),
    Case(
        "fail-job-not-for-the-jobs-own-deadline",
        # the Job controller writes its own FailureTarget at the deadline
        [
            J(0, ads=10),
            P(0),
            D(10, [(AD, "p1", R_AD, 10)], job=[], check=only(trigger="DeadlineExceeded")),
        ],
    ),
    Case(
        "fail-job-not-for-a-finished-job",
        [
            J(0, conditions=[("Failed", "True", "BackoffLimitExceeded", 5)]),
            P(0),
            D(5, [(AD, "p1", R_AD, 5)], job=[], check=only(trigger="JobFinished")),
        ],
    ),
    Case(
        "fail-job-not-for-a-suspension",
        [
            J(0, suspend=True),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], job=[], check=only(trigger="Suspended")),
        ],
    ),
    Case(
        "fail-job-not-for-a-deleted-job-or-a-stuck-pod",
        [
            J(0),
            P(0, deletion=0),
            D(900, [(FORCE, "p1", R_FORCE, 900)], job=[], check=only(trigger="StuckTerminating")),
            J(1000, change="deleted"),
            P(1000, "p2"),
            D(1000, job=[], check=only(trigger="JobDeleted")),
        ],
    ),
    Case(
        "fail-job-not-when-the-jobs-end-is-already-decided",
        # A kill of a Job whose FailureTarget the controller wrote first (its own
        # deadline, backoff limit): ours would replace its reason.
        [
            J(0, conditions=[("FailureTarget", "True", "DeadlineExceeded", 0)], **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], job=[], check=only(trigger="Killed")),
        ],
    ),
    Case(
        "fail-job-retry-after-failed-and-forbidden-with-backoff",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, job=[("Killed", 0, 1)]),
            R(1, "", FAIL, "failed"),
            D(1.5, [], [], job=[], next_due=2),
            D(2, [], [], job=[("Killed", 0, 2)]),
            R(3, "", FAIL, "forbidden"),
            D(62.9, [], [], job=[]),
            D(63, [], [], job=[("Killed", 0, 3)]),
            R(64, "", FAIL, "applied"),
            D(10_000, job=[]),
        ],
    ),
    Case(
        "fail-job-no-retry-once-the-job-shows-its-end",
        # the write was accepted but its answer lost: the Job shows the condition
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, job=[("Killed", 0, 1)]),
            R(1, "", FAIL, "failed"),
            J(1.5, conditions=[("FailureTarget", "True", "JobReaperKilled", 1)], **KILL_AT_0),
            D(2, [], [], job=[]),
            D(10_000, job=[]),
        ],
    ),
    *(
        Case(
            f"fail-job-final-after-{outcome}-and-the-pods-go-on",
            [
                J(0, **KILL_AT_0),
                P(0),
                D(0, [(AD, "p1", R_AD, 0)], job=[("Killed", 0, 1)]),
                R(1, "", FAIL, outcome),
                D(2, [], [], job=[], next_due=180),
                D(180, [(DEL, "p1", R_TIMEOUT, 180)], job=[]),
            ],
        )
        for outcome in ("gone", "uid-mismatch", "refused")
    ),
    Case(
        "fail-job-a-stale-or-duplicate-result-is-ignored",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, job=[("Killed", 0, 1)]),
            R(1, "", FAIL, "failed"),
            D(2, job=[("Killed", 0, 2)]),
            # attempt 2's result is still due; attempt 1's again changes nothing
            lambda h: h.feed(
                h.log[next(i for i, e in enumerate(h.log) if isinstance(e, CommandApplied))]
            ),
            D(100, job=[]),
        ],
    ),
    # --- scope (enforce: off | shadow | on) -------------------------------------------
    Case(
        "scope-off-by-default-no-trigger-no-step-not-even-force-deletion",
        [
            J(0, labels={}, **KILL_AT_0),
            P(0, deletion=10),
            P(0, "p2", **PENDING_POD),
            D(0, [], [], next_due=None, job=[]),
            D(100_000, [], [], next_due=None, job=[]),
        ],
    ),
    Case(
        "scope-off-pods-of-a-deleted-job-are-left-alone",
        [J(0, labels={}), P(0), J(50, change="deleted", labels={}), D(50, [], []), D(10_000, [])],
    ),
    Case(
        "scope-invalid-label-counts-as-absent",
        [J(0, labels={ENFORCE: "yes"}, **KILL_AT_0), P(0), D(0, [], [], next_due=None)],
    ),
    Case(
        "scope-label-is-read-in-any-case-with-blanks",
        [J(0, labels={ENFORCE: " ON "}, **KILL_AT_0), P(0), D(0, [(AD, "p1", R_AD, 0)])],
    ),
    Case(
        "scope-global-on-without-label",
        [
            Cfg(1, enforce="on"),
            J(0, labels={}, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], check=only(config_version=1, shadow=False)),
        ],
    ),
    Case(
        "scope-label-off-opts-out-of-global-on",
        [
            Cfg(1, enforce="on"),
            J(0, labels={ENFORCE: "off"}, **KILL_AT_0),
            P(0),
            D(0, [], [], next_due=None),
        ],
    ),
    Case(
        "scope-namespace-off-beats-the-label",
        [
            Cfg(1, enforce="on", overrides={"namespaces": {"ns": {"enforce": "off"}}}),
            J(0, **KILL_AT_0),
            P(0, deletion=0),
            D(0, [], [], next_due=None, job=[]),
            D(100_000, [], []),
        ],
    ),
    Case(
        "scope-namespace-override-without-enforce-leaves-the-label-free",
        [
            Cfg(1, overrides={"namespaces": {"ns": {"killMethod": "delete"}}}),
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(DEL, "p1", R_METHOD, 0)]),
        ],
    ),
    Case(
        "scope-selector-on-beats-the-label-off",
        [
            Cfg(
                1,
                overrides={
                    "selectors": [{"matchLabels": {"tier": "x"}, "settings": {"enforce": "on"}}]
                },
            ),
            J(0, labels={ENFORCE: "off", "tier": "x"}, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
        ],
    ),
    Case(
        "scope-selector-beats-namespace",
        [
            Cfg(
                1,
                overrides={
                    "namespaces": {"ns": {"enforce": "off"}},
                    "selectors": [{"matchLabels": {"tier": "x"}, "settings": {"enforce": "on"}}],
                },
            ),
            J(0, labels={"tier": "x"}, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
        ],
    ),
    Case(
        "scope-config-switched-on-starts-enforcement-from-then",
        [
            J(0, labels={}, **KILL_AT_0),
            P(0),
            D(10, [], [], next_due=None),
            Cfg(1, enforce="on"),
            # decided now; due since the kill time (a late opt-in shows as latency)
            D(20, [(AD, "p1", R_AD, 0)], ["KillStarted", "KillStep"]),
        ],
    ),
    Case(
        "scope-label-added-later-starts-enforcement-from-then",
        [
            J(0, labels={}, **KILL_AT_0),
            P(0),
            D(10, [], [], next_due=None),
            J(15, **KILL_AT_0),
            # decided now; due since the kill time (a late opt-in shows as latency)
            D(20, [(AD, "p1", R_AD, 0)], ["KillStarted", "KillStep"]),
        ],
    ),
    Case(
        "scope-switched-off-mid-ladder-stops-the-ladder",
        [
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            J(10, labels={}, **KILL_AT_0),
            D(180, [], []),
            D(10_000, [], []),
        ],
    ),
    Case(
        "scope-pod-of-an-unobserved-job-waits-for-the-job",
        [
            P(0, deletion=0),
            D(100_000, [], []),
            J(100_001),
            D(100_001, [(FORCE, "p1", R_FORCE, 900)]),
        ],
    ),
    Case(
        "orphan-cascade-orphan-pod-released-before-the-job-is-deleted-is-left-alone",
        [
            J(0, **KILL_AT_0),  # opted in, even due to die
            P(0, "p2"),
            P(1, "p2", job_uid=None),  # the garbage collector removed its ownerReference
            P(0, "p1", **PENDING_POD),
            P(1, "p1", job_uid=None, **PENDING_POD),
            J(2, change="deleted", **KILL_AT_0),
            D(2, [], []),
            P(3, "p2", job_uid=None, deletion=3),  # even deleted later by someone
            D(100_000, [], []),
        ],
    ),
    Case(
        # The watcher may publish the Job's deletion before the pods' ownerReference
        # removal: the Job's pending deletion (the orphan finalizer) came first.
        "orphan-cascade-orphan-job-deleted-before-its-pods-are-seen-released",
        [
            J(0),
            P(0),
            J(1, deletion=1),
            J(2, change="deleted", deletion=1),
            D(2, [], []),
            P(3, job_uid=None),
            D(100_000, [], []),
        ],
    ),
    Case(
        "orphan-released-pod-left-alone-while-its-sibling-is-killed",
        [
            J(0, **KILL_AT_0),
            P(0, "p1"),
            P(0, "p2"),
            P(0, "p2", job_uid=None),
            D(0, [(AD, "p1", R_AD, 0)]),
        ],
    ),
    # --- shadow ---------------------------------------------------------------------
    Case(
        "shadow-decides-as-on-with-the-same-ids-marked-shadow",
        [
            J(0, labels={ENFORCE: "shadow"}, **KILL_AT_0),
            P(0),
            D(
                0,
                [(AD, "p1", R_AD, 0)],
                ["KillStarted", "KillStep"],
                check=only(shadow=True, command_id=command_id("job-1", "uid-p1", AD, 1)),
            ),
        ],
    ),
    Case(
        "shadow-would-apply-goes-on-by-the-clock-and-never-counts-the-pod-gone",
        [
            J(0, labels={ENFORCE: "shadow"}, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            R(0.1, "p1", AD, "would-apply"),
            D(180, [(DEL, "p1", R_TIMEOUT, 180)], check=only(shadow=True)),
            R(180.5, "p1", DEL, "would-apply"),
            # the force step's timer runs from the would-apply time of the delete
            D(1080, [], [], next_due=1080.5),
            D(1080.5, [(FORCE, "p1", R_FORCE, 1080.5)], check=only(shadow=True)),
            R(1081, "p1", FORCE, "would-apply"),
            D(100_000, [], [], next_due=None),  # no JobKilled: the pod did not die
            P(100_001, "p1", change="deleted"),
            D(100_001, [], ["JobKilled"]),
        ],
    ),
    Case(
        "shadow-stuck-terminating-force-deletion-would-apply",
        [
            J(0, labels={ENFORCE: "shadow"}),
            P(0, deletion=100),
            D(1000, [(FORCE, "p1", R_FORCE, 1000)], check=only(shadow=True)),
        ],
    ),
    Case(
        "shadow-forbidden-force-deletion-after-a-would-apply-delete-says-shadow",
        [
            J(
                0,
                labels={ENFORCE: "shadow"},
                annotations={KILL_TIMESTAMP: iso(0), FORBID_FORCE_DELETION: "true"},
            ),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)]),
            R(0, "p1", AD, "would-apply"),
            D(180, [(DEL, "p1", R_TIMEOUT, 180)]),
            R(180, "p1", DEL, "would-apply"),
            D(
                1080,
                [],
                ["ForceDeletionForbidden"],
                check=lambda d: _all_shadow(d, since=at(180)),
            ),
        ],
    ),
    Case(
        "shadow-namespace-override-beats-the-label-on",
        [
            Cfg(1, overrides={"namespaces": {"ns": {"enforce": "shadow"}}}),
            J(0, **KILL_AT_0),
            P(0),
            D(0, [(AD, "p1", R_AD, 0)], check=only(shadow=True)),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rule(case: Case) -> None:
    h = Harness()
    for step in case.steps:
        step(h)
    # Whatever happened, no command id was issued twice.
    ids = [c.command_id for c in h.commands]
    assert len(ids) == len(set(ids))


def test_rule_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


def test_force_deletion_forbidden_event_names_who_forbids() -> None:
    h = Harness()
    h.feed(h.b.job(0), h.b.pod(0, deletion=5, annotations={FORBID_FORCE_DELETION: "true"}))
    d = h.decide(905)
    (ev,) = d.kill_events
    assert isinstance(ev, ForceDeletionForbidden)
    assert (ev.forbidden_by, ev.since, ev.due_at) == ("pod", at(5), at(905))


def _big_kill(until: float = 1) -> Harness:
    """The kill of ``BIG`` at 0 (four ``KillStarted`` parts); its pods fail at 1 and
    the decision then writes four ``JobKilled`` parts."""
    h = Harness()
    h.feed(h.b.job(0, **KILL_AT_0))
    h.feed(*(h.b.pod(0, name) for name in BIG))
    h.decide(0)
    if until >= 1:
        h.feed(*(exited(h, name) for name in BIG))
        h.decide(1)
    return h


def exited(h: Harness, name: str) -> Any:
    return h.b.pod(1, name, phase="Failed", containers="terminated")


def _fingerprint(state: Any) -> list[Any]:
    """What the core knows of each pod and episode (the state has cycles: no ``==``)."""
    pods = [
        (
            p.uid,
            p.name,
            p.k_us,
            p.kdue_us,
            None if p.ep is None else (p.ep.number, p.ep.open, p.ep.due_us, p.ep.decided_us),
            p.counted,
            p.ended,
            p.done_us,
        )
        for p in state.pods.values()
    ]
    gens = [
        (g.key, g.uid, g.episodes, repr(g.latch)) for ks in state.keys.values() for g in ks.gens
    ]
    return sorted(pods, key=repr) + sorted(gens, key=repr)


def _same(got: list[Any], expected: list[Any]) -> None:
    """``got == expected``, reporting the first difference (pytest's diff of two
    lists of thousands of entries takes minutes)."""
    for index, (g, e) in enumerate(zip(got, expected, strict=False)):
        assert g == e, f"first difference at {index}: {g!r} != {e!r}"
    assert len(got) == len(expected)


def test_parts_ids_are_distinct_and_stable() -> None:
    """Each part has its own derived id, and the same run derives the same ids."""
    first, second = _big_kill(), _big_kill()
    ids = [event_id(e) for e in first.events if isinstance(e, KillStarted | JobKilled)]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert ids == [event_id(e) for e in second.events if isinstance(e, KillStarted | JobKilled)]
    _same([m.model_dump_json() for m in first.events], [m.model_dump_json() for m in second.events])


def _rebuilt(log: list[Any], seed: int) -> Harness:
    """A state folded from ``log`` as a rebuild may: each topic in its own order, the
    topics interleaved at random, and the parts of each ``KillStarted`` and
    ``JobKilled`` shuffled among themselves (any order of the parts, not only
    Kafka's)."""
    rng = random.Random(seed)
    topics: dict[str, list[Any]] = {}
    for ev in log:
        topics.setdefault(ev.TOPIC, []).append(ev)
    queues = []
    for events in topics.values():
        shuffled: list[Any] = []
        for _, group in itertools.groupby(
            events, key=lambda e: (type(e), e.decided_at) if getattr(e, "parts", 1) > 1 else id(e)
        ):
            run = list(group)
            rng.shuffle(run)
            shuffled.extend(run)
        queues.append(collections.deque(shuffled))
    h = Harness()
    while queues:
        queue = rng.choice(queues)
        h.feed(queue.popleft())
        if not queue:
            queues.remove(queue)
    return h


@pytest.mark.parametrize("seed", range(4))
def test_folding_the_parts_in_any_order_gives_the_same_state(seed: int) -> None:
    """A rebuild folds the four ``KillStarted`` parts in any order, before, among or
    after the pods and commands: the same state as the continuous one, which decides the
    same ``JobKilled`` parts, byte for byte, once the pods exit; folding those in
    any order too leaves nothing to decide."""
    continuous = _big_kill(until=0)
    rebuilt = _rebuilt(continuous.log, seed)
    _same(_fingerprint(rebuilt.state), _fingerprint(continuous.state))
    assert rebuilt.decide(0.5).kill_events == continuous.decide(0.5).kill_events == ()
    exits = [exited(continuous, name) for name in BIG]
    for h in (continuous, rebuilt):
        h.feed(*exits)
    got, expected = rebuilt.decide(1), continuous.decide(1)
    assert [type(e).__name__ for e in expected.kill_events] == ["JobKilled"] * 4
    _same(
        [e.model_dump_json() for e in got.kill_events],
        [e.model_dump_json() for e in expected.kill_events],
    )
    again = _rebuilt(continuous.log, seed + 100)
    _same(_fingerprint(again.state), _fingerprint(continuous.state))
    for t in (1, 2, 5000):
        assert again.decide(t) == continuous.decide(t) == (continuous.decide(t)[0], (), None)
