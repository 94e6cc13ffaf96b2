"""A small simulated cluster that reacts to the killer's commands like kwok:

* ``set-active-deadline``: on a healthy node the kubelet marks the pod Failed
  one second later *while its container still runs* (Furiko issue #64), and
  stops the container one second after that;
* ``delete``: an unscheduled pod goes at once; on a healthy node the pod gets
  a deletionTimestamp and is gone 3 s later; on a lost node it stays
  terminating forever;
* ``force-delete``: gone at once;
* ``fail-job``: the Job gets ``FailureTarget`` (observed at once); ``gone`` once
  the Job was deleted. (The real Job controller then deletes the pods too; here
  the ladder alone removes them, the harder case for the properties.)

The driver plays a script of actions against the cluster and the core like
the killer's runtime would: fold observations, decide at every event and at
every ``next_due_at``, apply the commands, fold the results and the core's own
output back.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import decide, evolve, new_state
from schemas.annotations import ENFORCE, FORBID_FORCE_DELETION
from schemas.commands import CommandApplied, CommandIssued
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.events import JobKilled
from schemas.observations import (
    ContainerSummary,
    JobCondition,
    JobObserved,
    NodeObserved,
    PodObserved,
    VolumeClaim,
)
from schemas.requests import KillCancelRequested, KillRequested

from .harness import NS, at, secs

CONFIGS: list[dict[str, Any]] = [
    {},
    {"deleteKillingTasksTimeoutSeconds": 0},
    {"forceDeleteTaskTimeoutSeconds": 0},
    {"killMethod": "delete", "forceDeleteTaskTimeoutSeconds": 60},
    {"deleteKillingTasksTimeoutSeconds": 5, "forceDeleteTaskTimeoutSeconds": 20},
    {"defaultPendingTimeoutSeconds": 30},
    {"forceDeletePolicy": "whenFenced", "forceDeleteTaskTimeoutSeconds": 20},
    {"forceDeletePolicy": "never", "forceDeleteTaskTimeoutSeconds": 20},
    {"forceDeletePolicy": "whenFenced", "fenceUnreachableAfterSeconds": 30},
    {"maxForceDeletionsPerSecondPerPartition": 1, "forceDeleteTaskTimeoutSeconds": 20},
    # the lost-node trigger (deleteOnNodeLostAfterSeconds), alone and under whenFenced
    {"deleteOnNodeLostAfterSeconds": 30, "forceDeleteTaskTimeoutSeconds": 20},
    {"deleteOnNodeLostAfterSeconds": 5, "forceDeletePolicy": "whenFenced"},
]
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"


@dataclass
class SimPod:
    name: str
    uid: str
    job: SimJob
    created: float
    node: str | None = None
    phase: str = "Pending"
    running: bool = False
    start: float | None = None
    deletion: float | None = None
    ads: int | None = None
    forbid: bool = False
    stubborn: bool = False
    """Its containers take 400 s to stop (a hung process): the ladder must go on."""
    rwo: bool = False
    """It mounts a ReadWriteOnce claim (and does not opt in): never force-deleted on a
    node that is not fenced."""
    gone: bool = False

    @property
    def done(self) -> bool:
        return self.gone or (self.phase in ("Succeeded", "Failed") and not self.running)


@dataclass
class SimJob:
    name: str
    uid: str
    forbid: bool = False
    deleted: bool = False
    suspended: bool = False
    failed: bool = False
    """The Job controller marked it ``FailureTarget`` (e.g. its own deadline)."""
    shadow: bool = False
    """Labelled ``jobreaper.io/enforce: shadow``: decided on, never written to."""
    deleted_at: float | None = None
    created: float = 0.0
    pods: list[SimPod] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    """The ``jobreaper.io/kill-state`` values written on it, in order (``annotate-job``
    and ``fail-job``)."""


@dataclass
class Sim:
    """The cluster, the core, and a record of everything that went through."""

    jobs: list[SimJob]
    nodes: dict[str, bool]  # name -> healthy
    fenced: set[str] = field(default_factory=set)
    """Lost nodes an administrator fenced (the out-of-service taint); recovering untaints."""
    lost_at: dict[str, float] = field(default_factory=dict)
    """When each lost node was lost (the observation the core got); absent while ready."""
    fold_back: bool = True
    fail_mask: int = 0
    now: float = 0.0
    rv: int = 0
    version: int = 0
    config: KillerConfig = field(default_factory=KillerConfig)
    state: Any = field(default_factory=new_state)
    commands: list[CommandIssued] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    log: list[Any] = field(default_factory=list)
    decided: list[tuple[datetime, int, int]] = field(default_factory=list)
    timers: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    seq: int = 0
    next_due: datetime | None = None
    checks: list[Callable[[CommandIssued], None]] = field(default_factory=list)
    requests: list[tuple[float, str, str | None, float | None]] = field(default_factory=list)
    """The kill requests and cancellations fed so far: (requested at, Job name, pinned
    uid, kill time; ``None``: a cancellation)."""

    # --- observations ----------------------------------------------------------
    def _rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def feed(self, *events: Any) -> None:
        for ev in events:
            self.log.append(ev)
            self.state = evolve(self.state, ev)

    def observe_pod(self, p: SimPod, deleted: bool = False) -> None:
        containers: tuple[ContainerSummary, ...] = ()
        if p.start is not None:
            containers = (
                ContainerSummary(
                    name="c",
                    state="running" if p.running else "terminated",
                    started_at=at(p.start),
                ),
            )
        self.feed(
            PodObserved(
                change="deleted" if deleted else "modified",
                observed_at=at(self.now),
                resource_version=self._rv(),
                uid=p.uid,
                namespace=NS,
                name=p.name,
                job_name=p.job.name,
                job_uid=p.job.uid,
                annotations={FORBID_FORCE_DELETION: "true"} if p.forbid else {},
                creation_timestamp=at(p.created),
                phase=p.phase,  # type: ignore[arg-type]
                node_name=p.node,
                start_time=None if p.start is None else at(p.start),
                deletion_timestamp=None if p.deletion is None else at(p.deletion),
                active_deadline_seconds=p.ads,
                containers=containers,
                claims=(VolumeClaim(name="data", access_modes=("ReadWriteOnce",)),)
                if p.rwo
                else (),
            )
        )

    def observe_job(self, j: SimJob) -> None:
        active = sum(1 for p in j.pods if not p.done and p.deletion is None)
        self.feed(
            JobObserved(
                change="deleted" if j.deleted else "modified",
                observed_at=at(self.now),
                resource_version=self._rv(),
                uid=j.uid,
                namespace=NS,
                name=j.name,
                # opted in: the properties are about acting (or about shadowing)
                labels={ENFORCE: "shadow" if j.shadow else "on"},
                annotations={FORBID_FORCE_DELETION: "true"} if j.forbid else {},
                creation_timestamp=at(j.created),
                start_time=at(j.created),
                suspend=j.suspended,
                conditions=(
                    (JobCondition(type="FailureTarget", status="True"),) if j.failed else ()
                ),
                active=active,
            )
        )

    def observe_node(self, name: str) -> None:
        self.feed(
            NodeObserved(
                change="modified",
                observed_at=at(self.now),
                resource_version=self._rv(),
                name=name,
                uid=f"node-{name}",
                status="ready" if self.nodes[name] else "unreachable",
                taints=(OUT_OF_SERVICE,) if name in self.fenced else (),
            )
        )

    # --- the runtime loop --------------------------------------------------------
    def decide(self, now: float | None = None) -> None:
        """Decide, apply the commands, and decide again on their results (as the
        runtime does on every batch of events) until nothing new comes out."""
        while self._decide_once(now):
            pass

    def _decide_once(self, now: float | None) -> bool:
        when = at(self.now if now is None else now)
        d = decide(self.state, when)
        assert d.next_due_at is None or d.next_due_at > when
        self.decided.append((when, len(d.commands), len(d.kill_events)))
        self.next_due = d.next_due_at
        self.commands.extend(d.commands)
        self.events.extend(d.kill_events)
        if self.fold_back:
            self.feed(*d.commands, *d.kill_events)
        for c in d.commands:
            for check in self.checks:
                check(c)
        for e in d.kill_events:
            if isinstance(e, JobKilled):
                # JobKilled never lies: every pod it lists is really done now.
                for ending in e.pods:
                    assert self.pod_by_uid(ending.uid).done, (e, ending)
        for c in d.commands:
            self.apply(c)
        return bool(d.commands)

    def requested(self, uid: str) -> tuple[bool, float | None]:
        """The documented rule, read from the simulation's own record: whether the Job
        ``uid`` was ever the target of a request or cancellation, and the newest one's
        kill time (``None``: cancelled). Pinned: that uid; by name: the Job of that
        name that existed at the request's time (created <= t < deleted)."""
        j = next(x for x in self.jobs if x.uid == uid)
        found, kill_at = False, None
        for t, name, pinned, when in self.requests:
            if pinned == uid or (
                pinned is None
                and name == j.name
                and j.created <= t
                and (j.deleted_at is None or j.deleted_at > t)
            ):
                found, kill_at = True, when
        return found, kill_at

    def later(self, dt: float, fn: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (self.now + dt, self.seq, fn))

    def advance(self, dt: float) -> None:
        """Move the clock, running cluster transitions and the core's timers in order."""
        end = self.now + dt
        while True:
            t_sim = self.timers[0][0] if self.timers else None
            t_core = None if self.next_due is None else secs(self.next_due)
            nxt = min((t for t in (t_sim, t_core) if t is not None), default=None)
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            while self.timers and self.timers[0][0] <= self.now:
                _, _, fn = heapq.heappop(self.timers)
                fn()
            self.decide()
        self.now = end
        self.decide()

    # --- the cluster reacting to commands ---------------------------------------------
    def pod_by_uid(self, uid: str) -> SimPod:
        return next(p for j in self.jobs for p in j.pods if p.uid == uid)

    def healthy(self, p: SimPod) -> bool:
        return p.node is not None and self.nodes[p.node]

    def apply(self, c: CommandIssued) -> None:
        index = len(self.commands) - 1
        if c.shadow:
            # The executor makes no call: nothing changes in the cluster.
            self.result(c, "would-apply")
            return
        if c.step == "fail-job":
            j = next(j for j in self.jobs if j.uid == c.job_uid)
            if index < 16 and self.fail_mask >> index & 1 and not j.deleted:
                self.result(c, "failed")
            elif j.deleted:
                self.result(c, "gone")
            else:
                self.result(c, "applied")
                if not j.failed:
                    j.failed = True
                    j.shown.append("killing")
                    self.observe_job(j)
            return
        if c.step == "annotate-job":
            j = next(j for j in self.jobs if j.uid == c.job_uid)
            if j.deleted:
                self.result(c, "gone")
            else:
                assert c.kill_state is not None
                j.shown.append(c.kill_state)
                self.result(c, "applied")
                self.observe_job(j)  # a metadata write: a new resourceVersion
            return
        assert c.pod_uid is not None
        p = self.pod_by_uid(c.pod_uid)
        if index < 16 and self.fail_mask >> index & 1 and not p.gone:
            self.result(c, "failed")
            return
        if p.gone:
            self.result(c, "gone")
            return
        if c.step == "set-active-deadline":
            assert c.active_deadline_seconds is not None
            p.ads = min(p.ads or c.active_deadline_seconds, c.active_deadline_seconds)
            self.observe_pod(p)
            self.result(c, "applied")
            if self.healthy(p):
                self.later(1, lambda: self.kubelet_deadline(p))
        elif c.step == "delete":
            self.result(c, "applied")
            self.api_delete(p)
        else:
            self.result(c, "applied")
            self.remove(p)

    def result(self, c: CommandIssued, outcome: str) -> None:
        self.feed(
            CommandApplied(
                command_id=c.command_id,
                step=c.step,
                namespace=c.namespace,
                job_name=c.job_name,
                job_uid=c.job_uid,
                pod_name=c.pod_name,
                pod_uid=c.pod_uid,
                attempt=c.attempt,
                outcome=outcome,  # type: ignore[arg-type]
                applied_at=at(self.now),
            )
        )

    def kubelet_deadline(self, p: SimPod) -> None:
        if p.gone or p.done or not self.healthy(p):
            return
        p.phase = "Failed"  # containers still running for a while
        self.observe_pod(p)
        self.later(400 if p.stubborn else 1, lambda: self.containers_stop(p))

    def containers_stop(self, p: SimPod) -> None:
        if p.gone or not self.healthy(p):
            return
        p.running = False
        if p.phase not in ("Succeeded", "Failed"):
            p.phase = "Failed"
        self.observe_pod(p)

    def api_delete(self, p: SimPod, grace: float = 30) -> None:
        if p.gone:
            return
        if p.node is None:
            self.remove(p)
            return
        if p.deletion is None:
            p.deletion = self.now + grace
            self.observe_pod(p)
        if self.healthy(p):
            self.later(400 if p.stubborn else 3, lambda: self.kubelet_confirm(p))

    def kubelet_confirm(self, p: SimPod) -> None:
        if not p.gone and self.healthy(p):
            self.remove(p)

    def remove(self, p: SimPod) -> None:
        if not p.gone:
            p.gone = True
            p.running = False
            self.observe_pod(p, deleted=True)

    # --- actions a script may take -------------------------------------------------------
    def act(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        pods = [p for j in self.jobs for p in j.pods]
        if kind == "advance":
            self.advance(action[1])
            return
        if kind == "schedule":
            p = pods[action[1] % len(pods)]
            if not p.gone and p.node is None and p.deletion is None and p.phase == "Pending":
                p.node = sorted(self.nodes)[action[2] % len(self.nodes)]
                if self.nodes[p.node]:
                    p.phase, p.running, p.start = "Running", True, self.now
                self.observe_pod(p)
        elif kind == "finish":
            p = pods[action[1] % len(pods)]
            if p.running and self.healthy(p):
                p.phase, p.running = "Succeeded", False
                self.observe_pod(p)
        elif kind in ("kill", "kill_pinned", "cancel", "cancel_pinned"):
            j = self.jobs[action[1] % len(self.jobs)]
            pinned = kind.endswith("_pinned")
            if kind.startswith("cancel"):
                self.feed(
                    KillCancelRequested(
                        request_id=f"c{len(self.log)}",
                        namespace=NS,
                        job_name=j.name,
                        job_uid=j.uid if pinned else None,
                        requested_by="sim",
                        requested_at=at(self.now),
                    )
                )
                kill_at = None
            else:
                kill_at = self.now + action[2]
                self.feed(
                    KillRequested(
                        request_id=f"r{len(self.log)}",
                        namespace=NS,
                        job_name=j.name,
                        job_uid=j.uid if pinned else None,
                        kill_at=at(kill_at),
                        requested_by="sim",
                        requested_at=at(self.now),
                    )
                )
            self.requests.append((self.now, j.name, j.uid if pinned else None, kill_at))
        elif kind in ("lose", "recover"):
            name = sorted(self.nodes)[action[1] % len(self.nodes)]
            healthy = kind == "recover"
            if self.nodes[name] != healthy:
                self.nodes[name] = healthy
                self.fenced.discard(name)
                if healthy:
                    self.lost_at.pop(name, None)
                else:
                    self.lost_at[name] = self.now
                self.observe_node(name)
                if healthy:
                    for p in pods:
                        if p.node == name and not p.gone:
                            if p.deletion is not None:
                                self.later(3, lambda p=p: self.kubelet_confirm(p))
                            elif p.ads is not None and p.running:
                                self.later(1, lambda p=p: self.kubelet_deadline(p))
        elif kind == "fence":
            name = sorted(self.nodes)[action[1] % len(self.nodes)]
            if not self.nodes[name] and name not in self.fenced:
                self.fenced.add(name)
                self.observe_node(name)
        elif kind == "ext_delete":
            p = pods[action[1] % len(pods)]
            self.api_delete(p)
        elif kind == "delete_job":
            j = self.jobs[action[1] % len(self.jobs)]
            if not j.deleted:
                j.deleted, j.deleted_at = True, self.now
                self.observe_job(j)
        elif kind == "suspend":  # or resume
            j = self.jobs[action[1] % len(self.jobs)]
            if not j.deleted:
                j.suspended = not j.suspended
                self.observe_job(j)
        elif kind == "recreate_job":
            # Deleted and created again under the same name (a new uid, new pods);
            # the old pods are orphans, requests by name bind by time.
            old = self.jobs[action[1] % len(self.jobs)]
            if not old.deleted:
                old.deleted, old.deleted_at = True, self.now
                self.observe_job(old)
            n = len(self.jobs)
            j = SimJob(name=old.name, uid=f"{old.uid}-r{n}", forbid=old.forbid, created=self.now)
            p = SimPod(name=f"{old.name}-r{n}", uid=f"pod-uid-r{n}", job=j, created=self.now)
            j.pods.append(p)
            self.jobs.append(j)
            self.observe_job(j)
            self.observe_pod(p)
        elif kind == "fail_job":
            j = self.jobs[action[1] % len(self.jobs)]
            if not j.deleted and not j.failed:
                j.failed = True
                self.observe_job(j)
        elif kind == "config":
            self.version += 1
            self.config = KillerConfig.model_validate(CONFIGS[action[1] % len(CONFIGS)])
            self.feed(
                ConfigSnapshot(version=self.version, config=self.config, changed_at=at(self.now))
            )
        elif kind == "approach":
            # Decide just before each of the next due times: nothing may happen early.
            # A re-list just before makes every pod dirty, so the core looks at them.
            for _ in range(4):
                if self.next_due is None or secs(self.next_due) - action[1] <= self.now:
                    break
                self.advance(secs(self.next_due) - action[1] - self.now)
                for p in pods:
                    if not p.gone:
                        self.observe_pod(p)
                self.decide()
                self.advance(action[1])
            return
        elif kind == "decide_past":
            self.decide(max(0.0, self.now - action[1]))
            return
        self.decide()

    def start(self) -> None:
        for name in sorted(self.nodes):
            self.observe_node(name)
        for j in self.jobs:
            self.observe_job(j)
            for p in j.pods:
                self.observe_pod(p)
        self.decide()


PodShape = tuple[bool, int | None, int | None, bool]
"""(forbid force deletion, the template's activeDeadlineSeconds, node index or None,
stubborn)."""


def make_sim(
    shape: list[tuple[bool, list[PodShape]]] | list[tuple[bool, list[PodShape], bool]],
    fold_back: bool = True,
    fail_mask: int = 0,
) -> Sim:
    """``shape``: per Job, (forbid on the Job, its pods[, shadow]). Scheduled pods start
    running at 0."""
    nodes = {"n1": True, "n2": True}
    jobs: list[SimJob] = []
    for i, (forbid, pods, *shadow) in enumerate(shape):
        j = SimJob(name=f"job{i}", uid=f"job-uid-{i}", forbid=forbid, shadow=any(shadow))
        for k, (pod_forbid, ads, node, stubborn) in enumerate(pods):
            p = SimPod(
                name=f"job{i}-p{k}",
                uid=f"pod-uid-{i}-{k}",
                job=j,
                created=0,
                forbid=pod_forbid,
                ads=ads,
                stubborn=stubborn,
                rwo=k % 2 == 1,  # every second pod of a Job
            )
            if node is not None:
                p.node = sorted(nodes)[node % len(nodes)]
                p.phase, p.running, p.start = "Running", True, 0.0
            j.pods.append(p)
        jobs.append(j)
    return Sim(jobs=jobs, nodes=nodes, fold_back=fold_back, fail_mask=fail_mask)
