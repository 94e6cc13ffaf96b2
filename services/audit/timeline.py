"""The timeline model of one Job, built from its records (pure: no I/O, no clock).

Records are attributed to one Job *object* (uid): by their ``job_uid`` when
they carry one, otherwise (a kill request without ``job_uid``, an orphan pod)
by time, to the Job of that name that existed then (the latest first seen
before it), as the killer itself does for requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from schemas.base import Message, job_key
from schemas.commands import CommandApplied, CommandIssued
from schemas.decisions import DecisionRecorded
from schemas.events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    JobKilled,
    KillStarted,
    KillStep,
)
from schemas.observations import DELETED_CHANGES, JobObserved, PodObserved
from schemas.requests import KillCancelRequested, KillRequested
from services.runtime.kill_events import pod_list

if TYPE_CHECKING:
    from .history import Read

NO_WRITE_MARKERS = ("not written", "no second delete sent")
"""For results without ``wrote`` (older executors): the executor's ``applied``
messages when it found the effect already there (see
``services/executor/apply.py``): such a result made no API write."""


KIND_ORDER = {"job": 0, "pod": 1, "request": 2, "decision": 3, "command": 4, "event": 5}
"""At one instant, a decision comes before the commands and events it wrote."""


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str
    """job, pod, request, decision, command, result, event."""
    text: str
    source: str
    """Where it is in the log: ``topic/partition@offset``."""
    pod: str | None = None
    step: str | None = None


@dataclass(frozen=True)
class Decision:
    """The ``DecisionRecorded`` that issued a command: the ``now`` and inputs it used."""

    decided_at: datetime
    config_version: int
    killer: str
    inputs: tuple[str, ...]
    """``topic/partition@next-offset`` of everything folded before deciding."""
    source: str


@dataclass(frozen=True)
class Result:
    outcome: str
    applied_at: datetime
    http_status: int | None
    attempts: int
    message: str
    source: str
    recorded_wrote: bool | None = None

    @property
    def wrote(self) -> bool:
        """Whether the executor's write reached the API server: as the result
        records it, else (older results) ``applied`` and not found already done."""
        if self.recorded_wrote is not None:
            return self.recorded_wrote
        return self.outcome == "applied" and not any(m in self.message for m in NO_WRITE_MARKERS)


@dataclass
class Step:
    """One command (a ladder step on one pod, one attempt) and what became of it."""

    command_id: str
    pod_name: str
    pod_uid: str
    step: str
    attempt: int
    trigger: str
    reason: str
    rule: str
    config_version: int
    due_at: datetime
    decided_at: datetime
    source: str
    decision: Decision | None = None
    result: Result | None = None

    @property
    def decide_latency_s(self) -> float:
        """``decided_at - due_at``: how late the killer decided."""
        return (self.decided_at - self.due_at).total_seconds()

    @property
    def apply_latency_s(self) -> float | None:
        """``applied_at - due_at``: the kill latency of this step."""
        if self.result is None:
            return None
        return (self.result.applied_at - self.due_at).total_seconds()


@dataclass
class Pod:
    name: str
    uid: str
    first_seen: datetime
    last_seen: datetime
    created_at: datetime | None = None
    node: str | None = None
    phase: str = "Pending"
    deletion_timestamp: datetime | None = None
    """The first ``deletionTimestamp`` seen: when a graceful deletion would be final
    (request time + grace period); a force deletion moves it."""
    deleting_since: datetime | None = None
    """When the watcher first saw the pod being deleted (its deletion was accepted)."""
    gone_at: datetime | None = None
    """When the watcher saw it deleted from the API."""
    ended: str | None = None
    """How it ended per ``JobKilled`` (exited, deleted, force-deleted, already-done)."""


@dataclass
class Timeline:
    namespace: str
    job: str
    uid: str
    others: list[tuple[str, datetime]]
    """The other Jobs of that name in the log: (uid, first seen)."""
    entries: list[Entry] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    requests: list[KillRequested | KillCancelRequested] = field(default_factory=list)
    kill_events: list[Message] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return self.entries[0].at

    @property
    def end(self) -> datetime:
        return self.entries[-1].at

    @property
    def started(self) -> KillStarted | None:
        found = [e for e in self.kill_events if isinstance(e, KillStarted)]
        return found[0] if found else None

    @property
    def killed(self) -> JobKilled | None:
        found = [e for e in self.kill_events if isinstance(e, JobKilled)]
        return found[-1] if found else None


def record_time(message: Message) -> datetime | None:
    if isinstance(message, PodObserved | JobObserved):
        return message.observed_at
    if isinstance(message, KillRequested | KillCancelRequested):
        return message.requested_at
    if isinstance(message, CommandApplied):
        return message.applied_at
    if isinstance(message, JobKilled):
        return message.killed_at
    if isinstance(
        message,
        CommandIssued
        | KillStarted
        | KillStep
        | ForceDeletionForbidden
        | ForceDeletionHeld
        | DecisionRecorded,
    ):
        return message.decided_at
    return None


def _job_uid(message: Message) -> str | None:
    if isinstance(message, JobObserved):
        return message.uid
    uid = getattr(message, "job_uid", None)
    return uid if isinstance(uid, str) else None


def build_timeline(
    records: Sequence[Read], namespace: str, job: str, uid: str | None
) -> Timeline | None:
    """The timeline of the Job ``uid`` (default: the latest) or None if it is absent."""
    key = job_key(namespace, job)
    mine = [r for r in records if r.key == key and record_time(r.envelope.message) is not None]
    first_seen: dict[str, datetime] = {}
    for r in mine:
        found = _job_uid(r.envelope.message)
        at = record_time(r.envelope.message)
        if found is not None and at is not None:
            first_seen[found] = min(at, first_seen.get(found, at))
    if not first_seen:
        return None
    ordered = sorted(first_seen, key=lambda u: first_seen[u])
    chosen = uid if uid is not None else ordered[-1]
    if chosen not in first_seen:
        return None

    def owner(r: Read) -> str:
        found = _job_uid(r.envelope.message)
        if found is not None:
            return found
        at = record_time(r.envelope.message)
        earlier = [u for u in ordered if at is not None and first_seen[u] <= at]
        return earlier[-1] if earlier else ordered[0]

    theirs = sorted(
        (r for r in mine if owner(r) == chosen),
        key=lambda r: (record_time(r.envelope.message), r.topic, r.offset),
    )
    timeline = Timeline(
        namespace=namespace,
        job=job,
        uid=chosen,
        others=[(u, first_seen[u]) for u in ordered if u != chosen],
    )
    _Builder(timeline).fold(theirs, [r for r in records if r.topic == "kill.decisions"])
    timeline.entries.sort(key=lambda e: (e.at, KIND_ORDER.get(e.kind, 9)))
    return timeline


class _Builder:
    def __init__(self, timeline: Timeline) -> None:
        self.t = timeline
        self.pods: dict[str, Pod] = {}
        self.last_pod: dict[str, PodObserved] = {}
        self.last_job: JobObserved | None = None
        self.steps: dict[str, Step] = {}
        self.parts: dict[tuple[str, int, datetime], list[tuple[Read, KillStarted | JobKilled]]] = {}
        """Parts of a ``KillStarted``/``JobKilled`` split in parts, until all are read."""

    def fold(self, records: Sequence[Read], decisions: Sequence[Read]) -> None:
        for r in records:
            self.one(r)
        for parts in self.parts.values():
            self.whole(parts)  # parts missing: shown as such
        self.parts.clear()
        self.attach_decisions(decisions)
        self.t.steps = sorted(self.steps.values(), key=lambda s: (s.decided_at, s.command_id))
        self.t.pods = sorted(self.pods.values(), key=lambda p: (p.first_seen, p.name))

    def add(
        self, r: Read, text: str, kind: str, pod: str | None = None, step: str | None = None
    ) -> None:
        at = record_time(r.envelope.message)
        assert at is not None  # records without a time were filtered out
        self.t.entries.append(
            Entry(at=at, kind=kind, text=text, source=r.source, pod=pod, step=step)
        )

    def one(self, r: Read) -> None:
        m = r.envelope.message
        if isinstance(m, PodObserved):
            self.pod(r, m)
        elif isinstance(m, JobObserved):
            self.job(r, m)
        elif isinstance(m, KillRequested):
            self.t.requests.append(m)
            when = f"kill at {_hms(m.kill_at)}" if m.kill_at else "kill now"
            self.add(
                r, f"kill requested by {m.requested_by}: {when} {m.reason}".rstrip(), "request"
            )
        elif isinstance(m, KillCancelRequested):
            self.t.requests.append(m)
            self.add(
                r,
                f"kill cancellation requested by {m.requested_by} {m.reason}".rstrip(),
                "request",
            )
        elif isinstance(m, CommandIssued):
            self.steps[m.command_id] = Step(
                command_id=m.command_id,
                pod_name=m.pod_name or "",  # "": the Job-level step (fail-job)
                pod_uid=m.pod_uid or "",
                step=m.step,
                attempt=m.attempt,
                trigger=m.trigger,
                reason=m.reason,
                rule=m.rule,
                config_version=m.config_version,
                due_at=m.due_at,
                decided_at=m.decided_at,
                source=r.source,
            )
            retry = f" (attempt {m.attempt})" if m.attempt > 1 else ""
            text = (
                f"{m.step}{retry} issued: {m.trigger}, rule {m.rule}, config v{m.config_version}, "
                f"due {_hms(m.due_at)}, +{(m.decided_at - m.due_at).total_seconds():.3f}s"
            )
            self.add(r, text, "command", pod=m.pod_name, step=m.step)
        elif isinstance(m, CommandApplied):
            self.result(r, m)
        elif isinstance(
            m, KillStarted | KillStep | ForceDeletionForbidden | ForceDeletionHeld | JobKilled
        ):
            self.event(r, m)

    def pod(self, r: Read, m: PodObserved) -> None:
        pod = self.pods.setdefault(
            m.uid, Pod(name=m.name, uid=m.uid, first_seen=m.observed_at, last_seen=m.observed_at)
        )
        pod.last_seen = m.observed_at
        pod.created_at = m.creation_timestamp or pod.created_at
        pod.node = m.node_name or pod.node
        pod.phase = m.phase
        if m.deletion_timestamp is not None and pod.deletion_timestamp is None:
            pod.deletion_timestamp = m.deletion_timestamp
            pod.deleting_since = m.observed_at
        before = self.last_pod.get(m.uid)
        self.last_pod[m.uid] = m
        changes = _pod_changes(before, m)
        if m.change in DELETED_CHANGES:
            pod.gone_at = m.observed_at
        if changes:
            self.add(r, "; ".join(changes), "pod", pod=m.name)

    def job(self, r: Read, m: JobObserved) -> None:
        changes = _job_changes(self.last_job, m)
        self.last_job = m
        if changes:
            self.add(r, "; ".join(changes), "job")

    def result(self, r: Read, m: CommandApplied) -> None:
        result = Result(
            outcome=m.outcome,
            applied_at=m.applied_at,
            http_status=m.http_status,
            attempts=m.attempts,
            message=m.message,
            source=r.source,
            recorded_wrote=m.wrote,
        )
        step = self.steps.get(m.command_id)
        latency = ""
        if step is not None:
            step.result = result
            latency = f", +{(m.applied_at - step.due_at).total_seconds():.3f}s after due"
        status = f" HTTP {m.http_status}" if m.http_status else ""
        text = f"{m.step} {m.outcome}{status} ({m.attempts} API calls{latency}): {m.message}"
        self.add(r, text, "result", pod=m.pod_name, step=m.step)

    def event(
        self,
        r: Read,
        m: KillStarted | KillStep | ForceDeletionForbidden | ForceDeletionHeld | JobKilled,
    ) -> None:
        self.t.kill_events.append(m)
        if isinstance(m, KillStarted | JobKilled):
            if isinstance(m, JobKilled):
                for ending in m.pods:
                    if ending.uid in self.pods:
                        self.pods[ending.uid].ended = ending.ended
            if m.parts == 1:
                self.whole([(r, m)])
                return
            # One entry for the whole event, once every part is read.
            parts = self.parts.setdefault((m.CE_TYPE, m.episode, m.decided_at), [])
            parts.append((r, m))
            if len(parts) == m.parts:
                self.whole(parts)
                del self.parts[(m.CE_TYPE, m.episode, m.decided_at)]
        elif isinstance(m, KillStep):
            self.add(r, f"KillStep {m.step}", "event", pod=m.pod_name, step=m.step)
        elif isinstance(m, ForceDeletionHeld):
            if m.waits_for == "fence":
                waits = f"a fence of node {m.node_name or '?'} (forceDeletePolicy: {m.policy})"
            elif m.waits_for == "guard":
                waits = (
                    f"the mass-disruption guard of node {m.node_name or '?'}'s zone (or a "
                    "fence of the node, or `jobreaper force resume`)"
                )
            elif m.waits_for == "volume":
                waits = f"a fence of node {m.node_name or '?'} (a ReadWriteOnce volume claim)"
            else:
                waits = f"the rate limit, until {_hms(m.until) if m.until else '?'}"
            text = (
                f"ForceDeletionHeld: stuck deleting since {_hms(m.since)}, due "
                f"{_hms(m.due_at)}, waits for {waits}"
            )
            self.add(r, text, "event", pod=m.pod_name, step="force-delete")
        else:
            text = (
                f"ForceDeletionForbidden (by the {m.forbidden_by}): stuck deleting since "
                f"{_hms(m.since)}, left for a person"
            )
            self.add(r, text, "event", pod=m.pod_name, step="force-delete")

    def whole(self, parts: list[tuple[Read, KillStarted | JobKilled]]) -> None:
        """One timeline entry for a ``KillStarted`` or ``JobKilled``, its parts together."""
        parts.sort(key=lambda p: p[1].part)
        r, m = parts[0]
        of = m.parts
        numbers = [p.part for _, p in parts]
        if of == 1:
            split = ""
        elif numbers == list(range(1, of + 1)):
            split = f" ({of} parts)"
        else:
            split = f" (parts {', '.join(map(str, numbers))} of {of} read: incomplete)"
        if isinstance(m, KillStarted):
            names = [p.name for _, e in parts if isinstance(e, KillStarted) for p in e.pods]
            why = m.trigger if m.reason in ("", m.trigger) else f"{m.trigger} ({m.reason})"
            count = f"{len(names):,} " if len(names) > 1 else ""
            text = (
                f"KillStarted (episode {m.episode}): {why}, {count}pods {pod_list(names) or 'none'}"
            )
        else:
            endings = [p for _, e in parts if isinstance(e, JobKilled) for p in e.pods]
            ends = pod_list([f"{p.name} {p.ended}" for p in endings])
            if len(endings) > 1:
                counts: dict[str, int] = {}
                for p in endings:
                    counts[p.ended] = counts.get(p.ended, 0) + 1
                summary = ", ".join(f"{n:,} {ended}" for ended, n in sorted(counts.items()))
                ends = f"{len(endings):,} pods ({summary}): {ends}"
            text = f"JobKilled (episode {m.episode}): {ends}"
        self.add(r, text + split, "event")

    def attach_decisions(self, decisions: Sequence[Read]) -> None:
        # A decision written in parts is one decision: one entry, at its first part.
        found: dict[tuple[int, str, datetime], tuple[Read, DecisionRecorded, Decision]] = {}
        ours: dict[tuple[int, str, datetime], int] = {}
        for r in decisions:
            m = r.envelope.message
            if not isinstance(m, DecisionRecorded):
                continue
            mine = [c for c in m.command_ids if c in self.steps]
            if not mine:
                continue
            key = (m.partition, m.state, m.decided_at)
            if key not in found:
                found[key] = (
                    r,
                    m,
                    Decision(
                        decided_at=m.decided_at,
                        config_version=m.config_version,
                        killer=m.killer,
                        inputs=tuple(f"{i.topic}/{i.partition}@{i.offset}" for i in m.inputs),
                        source=r.source,
                    ),
                )
            for command_id in mine:
                self.steps[command_id].decision = found[key][2]
            ours[key] = ours.get(key, 0) + len(mine)
        for key, (r, m, _) in found.items():
            self.add(
                r,
                f"decision by {m.killer} (config v{m.config_version}): "
                f"{ours[key]:,} command(s), after folding {len(m.inputs)} topic-partitions "
                "(positions in --json)",
                "decision",
            )


def _hms(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%H:%M:%S.%f")[:-3]


def _containers(m: PodObserved) -> str:
    parts = []
    for c in m.containers:
        detail = c.reason or ""
        if c.exit_code is not None:
            detail = f"{detail} exit {c.exit_code}".strip()
        parts.append(f"{c.name} {c.state}" + (f" ({detail})" if detail else ""))
    return ", ".join(parts)


def _first_seen(change: str) -> str:
    if change == "refreshed":
        # The watcher published it again because its records were getting old: the
        # older ones have expired (retention), so the log's history starts here.
        return "first seen (a refresh: its older records expired)"
    return "first seen"


def _pod_changes(before: PodObserved | None, m: PodObserved) -> list[str]:
    if m.change in DELETED_CHANGES:
        return ["gone from the API" + (" (found by re-list)" if m.change.startswith("syn") else "")]
    out = []
    if before is None:
        out.append("created" if m.change == "added" else _first_seen(m.change))
    if before is None or before.phase != m.phase or before.reason != m.reason:
        out.append(f"phase {m.phase}" + (f" ({m.reason})" if m.reason else ""))
    if m.node_name and (before is None or before.node_name != m.node_name):
        out.append(f"on node {m.node_name}")
    if m.unschedulable and (before is None or not before.unschedulable):
        out.append("unschedulable")
    if m.deletion_timestamp and (before is None or before.deletion_timestamp is None):
        grace = m.deletion_grace_period_seconds
        out.append(
            f"being deleted (deletionTimestamp {_hms(m.deletion_timestamp)}, grace {grace}s)"
        )
    if m.active_deadline_seconds is not None and (
        before is None or before.active_deadline_seconds != m.active_deadline_seconds
    ):
        out.append(f"activeDeadlineSeconds {m.active_deadline_seconds}")
    if m.containers and (before is None or _containers(before) != _containers(m)):
        out.append(f"containers: {_containers(m)}")
    return out


def _conditions(m: JobObserved) -> set[str]:
    return {
        f"{c.type}" + (f" ({c.reason})" if c.reason else "")
        for c in m.conditions
        if c.status == "True"
    }


def _job_changes(before: JobObserved | None, m: JobObserved) -> list[str]:
    if m.change in DELETED_CHANGES:
        return ["Job gone from the API"]
    out = []
    if before is None:
        seen = "created" if m.change == "added" else _first_seen(m.change)
        out.append(f"Job {seen} (uid {m.uid})")
    for name, value in sorted(m.annotations.items()):
        if before is None or before.annotations.get(name) != value:
            out.append(f"{name}={value}")
    if m.suspend != (before.suspend if before else False):
        out.append("suspended" if m.suspend else "resumed")
    if m.active_deadline_seconds is not None and (
        before is None or before.active_deadline_seconds != m.active_deadline_seconds
    ):
        out.append(f"activeDeadlineSeconds {m.active_deadline_seconds}")
    new = _conditions(m) - (_conditions(before) if before else set())
    out.extend(f"condition {c}" for c in sorted(new))
    if m.deletion_timestamp and (before is None or before.deletion_timestamp is None):
        out.append(f"being deleted (deletionTimestamp {_hms(m.deletion_timestamp)})")
    return out
