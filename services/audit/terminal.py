"""The timeline for people at a terminal (``rich``)."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .timeline import Timeline

KIND_STYLE = {
    "job": "bold",
    "pod": "cyan",
    "request": "magenta",
    "decision": "dim",
    "command": "yellow",
    "result": "green",
    "event": "bold blue",
}
OUTCOME_STYLE = {
    "applied": "green",
    "gone": "green",
    "forbidden": "bold red",
    "failed": "red",
    "refused": "bold magenta",
    "would-apply": "bold cyan",
}


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3]


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def render_terminal(timeline: Timeline, console: Console) -> None:
    """Print the timeline: header, every entry in time order, the steps with their
    latencies, and how each pod ended."""
    t = timeline
    console.print(
        Text.assemble(
            ("Job ", "bold"),
            (f"{t.namespace}/{t.job}", "bold cyan"),
            f"  uid {t.uid}  ",
            f"{t.start:%Y-%m-%d} {_clock(t.start)} .. {_clock(t.end)} UTC",
        )
    )
    for uid, first in t.others:
        console.print(
            f"  another Job of that name: uid {uid}, first seen "
            f"{first:%Y-%m-%d %H:%M:%S}Z (--uid {uid})",
            style="dim",
        )

    entries = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    entries.add_column("time (UTC)", no_wrap=True)
    entries.add_column("+s", justify="right", no_wrap=True)
    entries.add_column("what", no_wrap=True)
    entries.add_column("pod", no_wrap=True)
    entries.add_column("")
    for e in t.entries:
        entries.add_row(
            _clock(e.at),
            f"{(e.at - t.start).total_seconds():.3f}",
            Text(e.kind, style=KIND_STYLE.get(e.kind, "")),
            e.pod or "",
            e.text,
        )
    console.print(entries)

    if t.steps:
        steps = Table(title="steps", title_justify="left", header_style="bold")
        for name in (
            "pod",
            "step",
            "#",
            "rule",
            "due",
            "decided +",
            "applied +",
            "outcome",
            "HTTP",
        ):
            steps.add_column(name, no_wrap=True)
        for s in t.steps:
            outcome = s.result.outcome if s.result else "pending"
            steps.add_row(
                s.pod_name,
                s.step,
                str(s.attempt),
                s.rule,
                _clock(s.due_at),
                _secs(s.decide_latency_s),
                _secs(s.apply_latency_s),
                Text(outcome, style=OUTCOME_STYLE.get(outcome, "yellow")),
                str(s.result.http_status or "") if s.result else "",
            )
        console.print(steps)

    pods = Table(title="pods", title_justify="left", header_style="bold")
    for name in ("pod", "uid", "node", "last phase", "being deleted", "gone", "ended"):
        pods.add_column(name, no_wrap=True)
    for p in t.pods:
        pods.add_row(
            p.name,
            p.uid[:8],
            p.node or "-",
            p.phase,
            _clock(p.deleting_since) if p.deleting_since else "-",
            _clock(p.gone_at) if p.gone_at else "-",
            p.ended or ("still there" if p.gone_at is None else "gone"),
        )
    console.print(pods)
    killed, started = t.killed, t.started
    if killed is not None:
        took = ""
        if started is not None:
            seconds = (killed.killed_at - started.due_at).total_seconds()
            took = f", {seconds:.3f}s after the kill was due ({_clock(started.due_at)})"
        console.print(
            f"killed at {_clock(killed.killed_at)} ({killed.trigger}){took}", style="bold"
        )
    else:
        console.print("no JobKilled event for this Job", style="dim")
