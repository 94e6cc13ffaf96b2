"""Whole-history runs and what the CLI prints (text or JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import decide
from schemas.config import ConfigSnapshot

from .compare import Change, NamespaceSummary, Shift, kill_changes, step_changes, summarize
from .history import History
from .walk import DecideFn, Divergence, PartitionResult, Window, replay_partition
from .whatif import what_if_partition


@dataclass
class ReplayReport:
    partitions: list[PartitionResult] = field(default_factory=list)

    @property
    def divergences(self) -> list[Divergence]:
        return [d for p in self.partitions for d in p.divergences]

    def total(self, name: str) -> int:
        return sum(int(getattr(p, name)) for p in self.partitions)

    def as_json(self) -> dict[str, Any]:
        divergences = self.divergences
        return {
            "decisions": self.total("decisions"),
            "commands_matched": self.total("commands"),
            "events_matched": self.total("events"),
            "records_folded": self.total("folded"),
            "undecodable_skipped": self.total("undecodable"),
            "divergences": len(divergences),
            "first_divergence": divergences[0].as_json() if divergences else None,
            "partitions": [p.as_json() for p in self.partitions],
            "all_divergences": [d.as_json() for d in divergences],
        }


def replay(
    history: History,
    partitions: Sequence[int] | None = None,
    window: Window = Window(),
    *,
    decide_fn: DecideFn = decide,
) -> ReplayReport:
    numbers = history.partitions() if partitions is None else sorted(partitions)
    return ReplayReport(
        [replay_partition(history, p, window, decide_fn=decide_fn) for p in numbers]
    )


def render_replay(report: ReplayReport) -> str:
    lines = [
        f"decisions checked: {report.total('decisions')} "
        f"(partitions {', '.join(str(p.partition) for p in report.partitions) or 'none'})",
        f"commands matched:  {report.total('commands')}",
        f"events matched:    {report.total('events')}",
        f"records folded:    {report.total('folded')} "
        f"(undecodable skipped: {report.total('undecodable')})",
    ]
    divergences = report.divergences
    if not report.partitions:
        lines.append("no decision records on kill.decisions (is the topic prefix right?)")
    if not divergences:
        lines.append("no divergence: the core decides what the killer recorded, byte for byte")
        return "\n".join(lines)
    first = divergences[0]
    lines += [
        f"DIVERGENCES: {len(divergences)}",
        "first divergence:",
        f"  partition:   {first.partition}",
        f"  decision:    {first.decision}",
        f"  decided_at:  {first.decided_at.isoformat()}",
        f"  what:        {first.kind} #{first.index}: {first.problem}",
        f"  last input:  {first.last_input or '(none)'}",
        f"  expected id: {first.expected_id}",
        f"  got id:      {first.got_id}",
        f"  expected:    {first.expected}",
        f"  got:         {first.got}",
    ]
    return "\n".join(lines)


@dataclass
class WhatIfReport:
    config: ConfigSnapshot
    steps: list[Change]
    kills: list[Change]
    namespaces: list[NamespaceSummary]
    decisions: int
    timers: int

    def as_json(self, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "config_version": self.config.version,
            "decisions": self.decisions,
            "timers": self.timers,
            "namespaces": [n.as_json() for n in self.namespaces],
        }
        if detail:
            out["kills"] = [c.as_json() for c in self.kills]
            out["steps"] = [c.as_json() for c in self.steps]
        return out


def what_if(
    history: History,
    config: ConfigSnapshot,
    partitions: Sequence[int] | None = None,
    *,
    until: datetime | None = None,
) -> WhatIfReport:
    numbers = history.partitions() if partitions is None else sorted(partitions)
    runs = [what_if_partition(history, p, config, until=until) for p in numbers]
    steps = step_changes(
        [c for r in runs for c in r.recorded], [c for r in runs for c in r.hypothetical]
    )
    kills = kill_changes(steps)
    return WhatIfReport(
        config,
        steps,
        kills,
        summarize(steps, kills),
        sum(r.decisions for r in runs),
        sum(r.timers for r in runs),
    )


def _shift(name: str, shift: Shift) -> str:
    parts = []
    for label, values in (("earlier", shift.earlier), ("later", shift.later)):
        if values:
            ordered = sorted(values)
            p50, top = ordered[(len(ordered) - 1) // 2], ordered[-1]
            parts.append(f"{len(values)} {label} (p50 {p50:.1f}s, max {top:.1f}s)")
        else:
            parts.append(f"0 {label}")
    parts += [f"{shift.same} same", f"{shift.added} added", f"{shift.removed} removed"]
    return f"  {name:<16}" + ", ".join(parts)


def _when(change: Change) -> str:
    recorded = (
        "-" if change.recorded is None else change.recorded.isoformat(timespec="milliseconds")
    )
    what_if = "-" if change.what_if is None else change.what_if.isoformat(timespec="milliseconds")
    delta = change.delta_s
    shift = "" if delta is None else f" ({delta:+.1f}s)"
    return f"{recorded} -> {what_if}{shift}"


def render_what_if(report: WhatIfReport, detail: bool = False) -> str:
    lines = [
        f"what-if under config version {report.config.version} "
        f"({report.decisions} decisions, {report.timers} at its own timers); "
        "times are when each step would have been decided",
    ]
    if not report.namespaces:
        lines.append("no commands, recorded or hypothetical")
    for ns in report.namespaces:
        lines += [
            f"namespace {ns.namespace}:",
            _shift("kills", ns.kills),
            _shift("force deletions", ns.force_deletions),
            _shift("commands", ns.commands),
        ]
    if detail:
        lines.append("per Job (recorded -> what-if):")
        for kill in report.kills:
            lines.append(f"  {kill.namespace}/{kill.job} kill: {_when(kill)}")
            for step in report.steps:
                if (step.namespace, step.job, step.job_uid) == (
                    kill.namespace,
                    kill.job,
                    kill.job_uid,
                ):
                    lines.append(f"    {step.pod} {step.step}: {_when(step)}")
        # Pods force-deleted when stuck, with no kill of their Job.
        killed = {(k.namespace, k.job, k.job_uid) for k in report.kills}
        for step in report.steps:
            if (step.namespace, step.job, step.job_uid) not in killed:
                lines.append(f"  {step.namespace}/{step.job} {step.pod} {step.step}: {_when(step)}")
    return "\n".join(lines)


__all__ = [
    "ReplayReport",
    "WhatIfReport",
    "render_replay",
    "render_what_if",
    "replay",
    "what_if",
]
