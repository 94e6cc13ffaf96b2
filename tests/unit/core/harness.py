"""Builders for core tests: events at ``T0 + seconds``, and a harness that folds,
decides and (like the runtime) folds the decision's own output back."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from core import Decision, Event, KillerState, decide, evolve, new_state
from schemas.annotations import ENFORCE
from schemas.commands import CommandApplied, CommandIssued, Outcome
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

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS = "ns"
IN_SCOPE = {ENFORCE: "on"}
"""The labels of a Job by default: opted in (the built-in scope is ``off``)."""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


def secs(value: datetime) -> float:
    return (value - T0).total_seconds()


class Builder:
    """Makes observations with increasing resource versions."""

    def __init__(self) -> None:
        self.rv = 0

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def job(
        self,
        t: float,
        name: str = "j",
        uid: str = "job-1",
        *,
        change: str = "modified",
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ads: int | None = None,
        start: float | None = 0.0,
        suspend: bool = False,
        conditions: Iterable[tuple[str, str, str | None, float]] = (),
        active: int = 1,
        terminating: int | None = None,
        created: float = 0.0,
        rv: str | None = None,
        deletion: float | None = None,
    ) -> JobObserved:
        return JobObserved(
            change=change,  # type: ignore[arg-type]
            observed_at=at(t),
            resource_version=rv if rv is not None else self.next_rv(),
            uid=uid,
            namespace=NS,
            name=name,
            labels=IN_SCOPE if labels is None else labels,
            annotations=annotations or {},
            creation_timestamp=at(created),
            deletion_timestamp=None if deletion is None else at(deletion),
            active_deadline_seconds=ads,
            suspend=suspend,
            start_time=None if start is None else at(start),
            conditions=tuple(
                JobCondition(type=ty, status=st, reason=reason, last_transition_time=at(ltt))  # type: ignore[arg-type]
                for ty, st, reason, ltt in conditions
            ),
            active=active,
            terminating=terminating,
        )

    def pod(
        self,
        t: float,
        name: str = "p1",
        uid: str | None = None,
        *,
        job: str = "j",
        job_uid: str | None = "job-1",
        change: str = "modified",
        phase: str = "Running",
        node: str | None = "n1",
        created: float = 0.0,
        start: float | None = 0.0,
        containers: str | tuple[ContainerSummary, ...] = "running",
        deletion: float | None = None,
        grace: int | None = None,
        ads: int | None = None,
        annotations: dict[str, str] | None = None,
        rv: str | None = None,
        claims: tuple[VolumeClaim, ...] = (),
    ) -> PodObserved:
        if isinstance(containers, str):
            if containers == "none":
                cs: tuple[ContainerSummary, ...] = ()
            elif containers == "running":
                cs = (ContainerSummary(name="c", state="running", started_at=at(start or 0)),)
            elif containers == "terminated":
                cs = (
                    ContainerSummary(
                        name="c", state="terminated", started_at=at(start or 0), exit_code=137
                    ),
                )
            elif containers == "waiting":
                cs = (ContainerSummary(name="c", state="waiting", reason="ImagePullBackOff"),)
            else:
                raise ValueError(containers)
        else:
            cs = containers
        return PodObserved(
            change=change,  # type: ignore[arg-type]
            observed_at=at(t),
            resource_version=rv if rv is not None else self.next_rv(),
            uid=uid or f"uid-{name}",
            namespace=NS,
            name=name,
            job_name=job,
            job_uid=job_uid,
            annotations=annotations or {},
            creation_timestamp=at(created),
            phase=phase,  # type: ignore[arg-type]
            node_name=node,
            start_time=None if start is None else at(start),
            deletion_timestamp=None if deletion is None else at(deletion),
            deletion_grace_period_seconds=grace,
            active_deadline_seconds=ads,
            containers=cs,
            claims=claims,
        )

    def node(
        self,
        t: float,
        name: str = "n1",
        status: str = "ready",
        taints: tuple[str, ...] = (),
        zone: str | None = None,
    ) -> NodeObserved:
        return NodeObserved(
            change="deleted" if status == "gone" else "modified",
            observed_at=at(t),
            resource_version=self.next_rv(),
            name=name,
            uid=f"node-{name}",
            status=status,  # type: ignore[arg-type]
            taints=taints,
            zone=zone,
        )


def request(
    t: float,
    kill_at: float | None = None,
    *,
    job: str = "j",
    job_uid: str | None = None,
    rid: str = "r1",
) -> KillRequested:
    return KillRequested(
        request_id=rid,
        namespace=NS,
        job_name=job,
        job_uid=job_uid,
        kill_at=None if kill_at is None else at(kill_at),
        reason="test",
        requested_by="tester",
        requested_at=at(t),
    )


def cancel(
    t: float, *, job: str = "j", job_uid: str | None = None, rid: str = "c1"
) -> KillCancelRequested:
    return KillCancelRequested(
        request_id=rid,
        namespace=NS,
        job_name=job,
        job_uid=job_uid,
        reason="test",
        requested_by="tester",
        requested_at=at(t),
    )


def snapshot(version: int, t: float = 0.0, **config: Any) -> ConfigSnapshot:
    return ConfigSnapshot(
        version=version, config=KillerConfig.model_validate(config), author="t", changed_at=at(t)
    )


CmdTuple = tuple[str, str, str, float]
"""(step, pod name, rule, due seconds)."""


def cmd_tuple(c: CommandIssued) -> CmdTuple:
    """``fail-job`` names no pod: ``""``."""
    return (c.step, c.pod_name or "", c.rule, secs(c.due_at))


class Harness:
    """Folds events, decides, and folds the decision's output back (like the runtime)."""

    def __init__(self, fold_back: bool = True) -> None:
        self.state: KillerState = new_state()
        self.b = Builder()
        self.fold_back = fold_back
        self.commands: list[CommandIssued] = []
        self.events: list[Any] = []
        self.log: list[Event] = []

    def feed(self, *events: Event) -> None:
        for ev in events:
            self.log.append(ev)
            self.state = evolve(self.state, ev)

    def decide(self, t: float, config: ConfigSnapshot | None = None) -> Decision:
        d = decide(self.state, at(t), config)
        assert d.next_due_at is None or d.next_due_at > at(t)
        self.commands.extend(d.commands)
        self.events.extend(d.kill_events)
        if self.fold_back:
            self.feed(*d.commands, *d.kill_events)
        return d

    def last_command(self, pod: str, step: str) -> CommandIssued:
        return next(
            c for c in reversed(self.commands) if (c.pod_name or "") == pod and c.step == step
        )

    def result(self, t: float, pod: str, step: str, outcome: Outcome = "applied") -> CommandApplied:
        """The result of the newest ``step`` on ``pod`` (``fail-job``: pod ``""``)."""
        c = self.last_command(pod, step)
        ev = CommandApplied(
            command_id=c.command_id,
            step=c.step,
            namespace=c.namespace,
            job_name=c.job_name,
            job_uid=c.job_uid,
            pod_name=c.pod_name,
            pod_uid=c.pod_uid,
            attempt=c.attempt,
            outcome=outcome,
            applied_at=at(t),
            http_status=200,
        )
        self.feed(ev)
        return ev

    def killed(self) -> list[JobKilled]:
        return [e for e in self.events if isinstance(e, JobKilled)]
