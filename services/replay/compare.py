"""Recorded vs what-if commands: per pod and step, per Job, per namespace."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.commands import CommandIssued

SAME_S = 0.1
"""Differences below this are the live killer's own lateness after a due time (the
what-if decides exactly at its timers), not a change: counted as the same time."""

StepKey = tuple[str, str, str, str, str]
"""(namespace, job name, job uid, pod uid, step)"""


@dataclass(frozen=True)
class Change:
    """When one step of one pod was (recorded) and would have been (what-if) decided."""

    namespace: str
    job: str
    job_uid: str
    pod: str
    step: str
    recorded: datetime | None
    what_if: datetime | None

    @property
    def delta_s(self) -> float | None:
        """What-if minus recorded, in seconds (negative: earlier)."""
        if self.recorded is None or self.what_if is None:
            return None
        return (self.what_if - self.recorded).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "job": self.job,
            "job_uid": self.job_uid,
            "pod": self.pod,
            "step": self.step,
            "recorded": None if self.recorded is None else self.recorded.isoformat(),
            "what_if": None if self.what_if is None else self.what_if.isoformat(),
            "delta_s": self.delta_s,
        }


def _first(commands: Iterable[CommandIssued]) -> dict[StepKey, CommandIssued]:
    firsts: dict[StepKey, CommandIssued] = {}
    for cmd in commands:
        key = (cmd.namespace, cmd.job_name, cmd.job_uid or "", cmd.pod_uid or "", cmd.step)
        if key not in firsts or cmd.attempt < firsts[key].attempt:
            firsts[key] = cmd
    return firsts


def step_changes(
    recorded: Sequence[CommandIssued], what_if: Sequence[CommandIssued]
) -> list[Change]:
    """Every (pod, step) either side commanded, first attempt, paired."""
    old, new = _first(recorded), _first(what_if)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        namespace, job, job_uid, _, step = key
        before, after = old.get(key), new.get(key)
        pod = (before or after).pod_name or ""  # type: ignore[union-attr]  # "": the Job
        changes.append(
            Change(
                namespace,
                job,
                job_uid,
                pod,
                step,
                None if before is None else before.decided_at,
                None if after is None else after.decided_at,
            )
        )
    return changes


def kill_changes(changes: Sequence[Change]) -> list[Change]:
    """Per Job generation, when its kill started: its first command other than a
    stuck-deletion force delete (those kill a pod, not its Job)."""
    recorded: dict[tuple[str, str, str], datetime] = {}
    what_if: dict[tuple[str, str, str], datetime] = {}
    for change in changes:
        if change.step == "force-delete":
            continue  # a kill starts with a deadline or a delete
        key = (change.namespace, change.job, change.job_uid)
        for side, at in ((recorded, change.recorded), (what_if, change.what_if)):
            if at is not None and (key not in side or at < side[key]):
                side[key] = at
    return [
        Change(ns, job, uid, "", "kill", recorded.get(key), what_if.get(key))
        for key in sorted(recorded.keys() | what_if.keys())
        for ns, job, uid in (key,)
    ]


@dataclass
class Shift:
    """Earlier / later / same / added / removed, with p50 and max of the shifts."""

    earlier: list[float] = field(default_factory=list)
    later: list[float] = field(default_factory=list)
    same: int = 0
    added: int = 0
    removed: int = 0

    def add(self, change: Change) -> None:
        delta = change.delta_s
        if change.recorded is None:
            self.added += 1
        elif change.what_if is None:
            self.removed += 1
        elif delta is not None and delta <= -SAME_S:
            self.earlier.append(-delta)
        elif delta is not None and delta >= SAME_S:
            self.later.append(delta)
        else:
            self.same += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "earlier": _stats(self.earlier),
            "later": _stats(self.later),
            "same": self.same,
            "added": self.added,
            "removed": self.removed,
        }


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50_s": None, "max_s": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_s": round(ordered[(len(ordered) - 1) // 2], 3),
        "max_s": round(ordered[-1], 3),
    }


@dataclass
class NamespaceSummary:
    namespace: str
    kills: Shift = field(default_factory=Shift)
    force_deletions: Shift = field(default_factory=Shift)
    commands: Shift = field(default_factory=Shift)

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "kills": self.kills.as_json(),
            "force_deletions": self.force_deletions.as_json(),
            "commands": self.commands.as_json(),
        }


def summarize(steps: Sequence[Change], kills: Sequence[Change]) -> list[NamespaceSummary]:
    by_ns: dict[str, NamespaceSummary] = {}

    def of(namespace: str) -> NamespaceSummary:
        return by_ns.setdefault(namespace, NamespaceSummary(namespace))

    for change in steps:
        of(change.namespace).commands.add(change)
        if change.step == "force-delete":
            of(change.namespace).force_deletions.add(change)
    for change in kills:
        of(change.namespace).kills.add(change)
    return [by_ns[ns] for ns in sorted(by_ns)]


__all__ = [
    "SAME_S",
    "Change",
    "NamespaceSummary",
    "Shift",
    "kill_changes",
    "step_changes",
    "summarize",
]
