"""What the demo shows: each scenario's Job folded from kill.events, kill.results and
the cluster's pods, as a live table, a log of notable moments, and a summary.

No I/O here: the runner feeds messages and observations in, with the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.table import Table
from rich.text import Text

from schemas.commands import CommandApplied
from schemas.events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    JobKilled,
    KillStarted,
    KillStep,
)

from .scenarios import Scenario

KillMessage = (
    KillStarted | KillStep | ForceDeletionForbidden | ForceDeletionHeld | JobKilled | CommandApplied
)


@dataclass
class StepView:
    step: str
    rule: str
    due_at: datetime
    decided_at: datetime
    outcome: str | None = None
    applied_at: datetime | None = None


@dataclass
class Row:
    scenario: Scenario
    pod: str = "not created yet"
    job_status: str | None = None
    """``Complete`` / ``Failed`` when the Job has that condition."""
    kill_at: datetime | None = None
    """When the demo asked for the kill to be due (set when it asks)."""
    requested: bool = False
    due_at: datetime | None = None
    trigger: str | None = None
    steps: dict[str, StepView] = field(default_factory=dict)
    forbidden: bool = False
    killed: JobKilled | None = None

    # -- derived ---------------------------------------------------------------

    @property
    def kill_latency_s(self) -> float | None:
        """First command applied - due: how late after the due time the API got it."""
        applied = [s.applied_at for s in self.steps.values() if s.applied_at is not None]
        if not applied or self.due_at is None:
            return None
        return (min(applied) - self.due_at).total_seconds()

    @property
    def killed_after_s(self) -> float | None:
        if self.killed is None or self.due_at is None:
            return None
        return (self.killed.killed_at - self.due_at).total_seconds()

    def pod_endings(self) -> list[str]:
        return [p.ended for p in self.killed.pods] if self.killed else []

    def reached(self) -> bool:
        """Did the scenario reach its expected end?"""
        expect = self.scenario.expect
        if expect == "completes":
            return self.job_status == "Complete" and self.due_at is None
        if self.killed is None:
            return False
        if expect == "killed-at-time":
            first = min((s.decided_at for s in self.steps.values()), default=None)
            return self.kill_at is not None and first is not None and first >= self.kill_at
        if expect == "force-deleted":
            return "force-deleted" in self.pod_endings()
        return True

    def failed_early(self) -> str | None:
        """A reason the scenario can no longer reach its end, if any."""
        if self.scenario.expect == "completes" and self.due_at is not None:
            return "it was killed"
        if self.scenario.expect == "killed-at-time" and self.kill_at and self.steps:
            first = min(s.decided_at for s in self.steps.values())
            if first < self.kill_at:
                return "a step was decided before the kill time"
        return None

    def state(self, now: datetime) -> str:
        if self.killed is not None:
            return "killed"
        if self.due_at is not None:
            return "killing"
        if self.kill_at is not None and now < self.kill_at:
            return f"kill due in {(self.kill_at - now).total_seconds():.0f}s"
        if self.requested:
            return "kill requested"
        if self.job_status is not None:
            return self.job_status.lower()
        return "watched"

    def current_step(self) -> str:
        if not self.steps:
            return "-"
        last = max(self.steps.values(), key=lambda s: (s.decided_at, s.due_at))
        outcome = last.outcome or "issued"
        text = f"{last.step}: {outcome}"
        if outcome == "would-apply":
            text += " (shadow)"
        if self.forbidden:
            text += " (force delete forbidden)"
        return text

    def since_due(self, now: datetime) -> str:
        if self.due_at is None:
            return "-"
        end = self.killed.killed_at if self.killed else now
        return f"{(end - self.due_at).total_seconds():.1f}s"

    def what_happened(self) -> str:
        if self.scenario.expect == "completes" and self.due_at is None:
            if self.job_status == "Complete":
                return "completed by itself; jobreaper issued no command"
            return f"not completed (pod {self.pod})"
        if not self.steps:
            return f"no kill step (pod {self.pod})"
        ordered = sorted(self.steps.values(), key=lambda s: (s.decided_at, s.due_at))
        parts = []
        for s in ordered:
            at = s.applied_at or s.decided_at
            offset = (at - self.due_at).total_seconds() if self.due_at else 0.0
            parts.append(f"{s.step} {s.outcome or 'issued'} +{offset:.2f}s")
        ended = ", ".join(self.pod_endings()) or "not done"
        head = "killed" if self.killed else "not killed yet"
        return f"{head}: {'; '.join(parts)}; pod {ended}"


class Board:
    """Every scenario's row, and a log of what happened when."""

    def __init__(self, scenarios: tuple[Scenario, ...], namespace: str, start: datetime) -> None:
        self.namespace = namespace
        self.start = start
        self.rows = {s.job: Row(s) for s in scenarios}
        self.log: list[str] = []

    def note(self, now: datetime, job: str | None, text: str) -> None:
        who = f"{job}: " if job else ""
        self.log.append(f"{(now - self.start).total_seconds():6.1f}s  {who}{text}")

    # -- inputs ----------------------------------------------------------------

    def fold(self, message: object, now: datetime) -> None:
        """A message of kill.events or kill.results (others and other namespaces ignored)."""
        if not isinstance(
            message,
            KillStarted
            | KillStep
            | ForceDeletionForbidden
            | ForceDeletionHeld
            | JobKilled
            | CommandApplied,
        ):
            return
        if message.namespace != self.namespace or message.job_name not in self.rows:
            return
        row = self.rows[message.job_name]
        job = message.job_name
        if isinstance(message, KillStarted):
            if row.due_at is None:
                row.due_at, row.trigger = message.due_at, message.trigger
                late = (message.decided_at - message.due_at).total_seconds()
                self.note(now, job, f"KillStarted ({message.trigger}), decided {late:+.2f}s")
        elif isinstance(message, KillStep):
            if message.command_id not in row.steps:
                row.steps[message.command_id] = StepView(
                    message.step, message.rule, message.due_at, message.decided_at
                )
                self.note(now, job, f"step {message.step} decided (rule {message.rule})")
        elif isinstance(message, CommandApplied) and message.step == "annotate-job":
            # Not a kill step: what the Job shows of its kill (kubectl get job -o yaml).
            self.note(now, job, f"annotations: {message.message or message.outcome}")
        elif isinstance(message, CommandApplied):
            step = row.steps.get(message.command_id)
            if step is None:  # the result overtook the event: the topics are not ordered together
                step = row.steps[message.command_id] = StepView(
                    message.step, "?", message.applied_at, message.applied_at
                )
            step.outcome, step.applied_at = message.outcome, message.applied_at
            status = f" HTTP {message.http_status}" if message.http_status else ""
            if message.outcome == "would-apply":
                status = " (shadow mode: nothing written)"
            self.note(now, job, f"step {message.step} {message.outcome}{status}")
        elif isinstance(message, ForceDeletionForbidden):
            row.forbidden = True
            self.note(now, job, "force deletion forbidden: left for a person")
        elif isinstance(message, ForceDeletionHeld):
            self.note(now, job, f"force deletion held back: waits for {message.waits_for}")
        else:
            row.killed = message
            ended = ", ".join(p.ended for p in message.pods) or "no pods"
            self.note(now, job, f"JobKilled: pod {ended}")

    def observe_pod(self, job: str, text: str, now: datetime) -> None:
        row = self.rows.get(job)
        if row is None or row.pod == text:
            return
        row.pod = text
        self.note(now, job, f"pod {text}")

    def observe_job(self, job: str, status: str | None, now: datetime) -> None:
        row = self.rows.get(job)
        if row is None or row.job_status == status:
            return
        row.job_status = status
        if status:
            self.note(now, job, f"Job {status}")

    # -- outputs ---------------------------------------------------------------

    def done(self) -> bool:
        return all(r.reached() or r.failed_early() for r in self.rows.values())

    def settled(self) -> bool:
        """No step is waiting for its result."""
        return all(s.outcome for r in self.rows.values() for s in r.steps.values())

    def unreached(self) -> list[Row]:
        return [r for r in self.rows.values() if not r.reached()]

    def table(self, now: datetime, *, explain: bool = True) -> Table:
        elapsed = (now - self.start).total_seconds()
        table = Table(
            title=f"jobreaper demo: namespace {self.namespace}, {elapsed:.0f}s",
            title_justify="left",
            expand=False,
        )
        for column in ("Job", "pod", "state", "current step", "since due", "latency"):
            table.add_column(column, no_wrap=column != "current step")
        for row in self.rows.values():
            latency = row.kill_latency_s
            style = "green" if row.reached() else ("red" if row.failed_early() else "")
            table.add_row(
                Text(row.scenario.job, style="bold"),
                row.pod,
                Text(row.state(now), style=style),
                row.current_step(),
                row.since_due(now),
                "-" if latency is None else f"{latency * 1000:.0f} ms",
            )
        if explain:
            table.caption = "\n".join(
                f"{r.scenario.job}: {r.scenario.explain}" for r in self.rows.values()
            )
            table.caption_justify = "left"
        return table

    def summary(self) -> Table:
        table = Table(title="summary", title_justify="left")
        for column in ("", "Job", "expected", "what happened", "kill latency", "killed after"):
            table.add_column(column)
        for row in self.rows.values():
            latency, after = row.kill_latency_s, row.killed_after_s
            ok = row.reached()
            table.add_row(
                Text("ok" if ok else "FAIL", style="green" if ok else "bold red"),
                row.scenario.job,
                row.scenario.expect_text,
                row.what_happened(),
                "-" if latency is None else f"{latency * 1000:.0f} ms",
                "-" if after is None else f"{after:.1f}s",
            )
        table.caption = (
            "kill latency: first command applied - due time; killed after: last pod seen "
            "done - due time"
        )
        table.caption_justify = "left"
        return table
