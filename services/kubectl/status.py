"""What the cluster shows of one Job's kill, read from the Job, its pods and its
Events (no Kafka): a pure function of their JSON, so that what ``kubectl jobreaper
status`` prints is tested without a cluster.

The Job's annotations come in two sets:

- **inputs**, what users write (``schemas/annotations.py``): the kill time, the
  timeouts, ``forbid-force-deletion``, and the ``jobreaper.io/enforce`` label;
- **outputs**, what jobreaper writes on the Job (rule *job.show-kill*):
  ``jobreaper.io/kill-state`` (``due``, ``killing``, ``killed``, ``cancelled``),
  ``kill-trigger``, ``kill-due-at`` and ``killed-at``. They may be absent: no kill
  time set and no kill started (timeouts are not announced before they kill), or
  a jobreaper that does not write them yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from schemas.annotations import (
    ENFORCE,
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    Invalid,
    job_annotations,
    parse_timestamp,
)

KILL_STATE: Final = "jobreaper.io/kill-state"
KILL_TRIGGER: Final = "jobreaper.io/kill-trigger"
KILL_DUE_AT: Final = "jobreaper.io/kill-due-at"
KILLED_AT: Final = "jobreaper.io/killed-at"
OUTPUTS: Final = (KILL_STATE, KILL_TRIGGER, KILL_DUE_AT, KILLED_AT)
INPUTS: Final = (KILL_TIMESTAMP, PENDING_TIMEOUT, RUNNING_TIMEOUT, FORBID_FORCE_DELETION)
FINAL_STATES: Final = frozenset({"killing", "killed"})
"""A kill in these states has started: it is final, no cancel or new time changes it."""
CONDITION_PREFIX: Final = "JobReaper"
"""The reason of the FailureTarget/Failed condition jobreaper's fail-job writes."""
EVENT_PREFIX: Final = "jobreaper"
"""jobreaper's Events: reportingController jobreaper.io/..., reasons Jobreaper..."""


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    at: str


@dataclass(frozen=True)
class Pod:
    name: str
    phase: str
    node: str
    deleting_since: str | None
    active_deadline_seconds: int | None


@dataclass(frozen=True)
class Event:
    at: str
    type: str
    reason: str
    by: str
    note: str
    count: int

    @property
    def from_jobreaper(self) -> bool:
        return self.by.startswith(EVENT_PREFIX) or self.reason.lower().startswith(EVENT_PREFIX)


@dataclass(frozen=True)
class KillStatus:
    namespace: str
    name: str
    uid: str
    inputs: dict[str, str]
    enforce: str | None
    invalid: tuple[Invalid, ...]
    kill_at: datetime | None
    outputs: dict[str, str]
    conditions: tuple[Condition, ...]
    finished: str | None
    """``Complete``/``Failed`` when the Job has ended (by itself or killed)."""
    pods: tuple[Pod, ...] = ()
    events: tuple[Event, ...] = field(default=())

    @property
    def state(self) -> str | None:
        return self.outputs.get(KILL_STATE)

    @property
    def started(self) -> bool:
        """The kill started (final): shown killing/killed, or a jobreaper condition."""
        return self.state in FINAL_STATES or any(
            c.reason.startswith(CONDITION_PREFIX) and c.status == "True" for c in self.conditions
        )

    def summary(self, now: datetime) -> str:
        """One line: what a user wants to know first."""
        state = self.state
        trigger = self.outputs.get(KILL_TRIGGER)
        why = f" ({trigger})" if trigger else ""
        if state == "killed":
            return f"killed{why} at {self.outputs.get(KILLED_AT, '?')}"
        if state == "killing":
            return f"being killed{why}: the kill started (final)"
        if state == "due":
            due = self.outputs.get(KILL_DUE_AT, "?")
            return f"kill due{why} at {due}{_relative(parse_timestamp(due), now)}"
        if self.started:
            return "killed by jobreaper (see the condition)"
        if state == "cancelled":
            return "a kill that was due was cancelled"
        if self.finished:
            return f"finished ({self.finished}) without a kill by jobreaper"
        if self.kill_at is not None:
            return (
                f"kill time set: {_rfc3339(self.kill_at)}{_relative(self.kill_at, now)}"
                " (jobreaper has not shown it on the Job yet)"
            )
        return "no kill time set (timeouts, if any, kill without notice)"


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _relative(at: datetime | None, now: datetime) -> str:
    if at is None:
        return ""
    seconds = round((at - now).total_seconds())
    return f" (in {seconds} s)" if seconds >= 0 else f" ({-seconds} s ago)"


def _instant(stamp: str) -> datetime:
    """For ordering: Events carry seconds (lastTimestamp) or microseconds (eventTime)."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def kill_status(
    job: dict[str, Any], pods: list[dict[str, Any]], events: list[dict[str, Any]]
) -> KillStatus:
    """From the Job's JSON, its pods' and the Events about it (core/v1 or
    events.k8s.io/v1 objects). A field missing anywhere reads as absent."""
    meta = job.get("metadata") or {}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    parsed = job_annotations(annotations)
    status = job.get("status") or {}
    conditions = tuple(
        Condition(
            type=_text(c.get("type")),
            status=_text(c.get("status")),
            reason=_text(c.get("reason")),
            message=_text(c.get("message")),
            at=_text(c.get("lastTransitionTime")),
        )
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    )
    finished = next(
        (c.type for c in conditions if c.type in ("Complete", "Failed") and c.status == "True"),
        None,
    )
    return KillStatus(
        namespace=_text(meta.get("namespace")),
        name=_text(meta.get("name")),
        uid=_text(meta.get("uid")),
        inputs={k: annotations[k] for k in INPUTS if k in annotations},
        enforce=labels.get(ENFORCE),
        invalid=parsed.invalid,
        kill_at=parsed.kill_at,
        outputs={k: annotations[k] for k in OUTPUTS if k in annotations},
        conditions=conditions,
        finished=finished,
        pods=tuple(sorted((_pod(p) for p in pods), key=lambda p: p.name)),
        events=tuple(sorted((_event(e) for e in events), key=lambda e: _instant(e.at))),
    )


def _pod(pod: dict[str, Any]) -> Pod:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    deadline = spec.get("activeDeadlineSeconds")
    return Pod(
        name=_text(meta.get("name")),
        phase=_text((pod.get("status") or {}).get("phase")),
        node=_text(spec.get("nodeName")),
        deleting_since=meta.get("deletionTimestamp"),
        active_deadline_seconds=deadline if isinstance(deadline, int) else None,
    )


def _event(event: dict[str, Any]) -> Event:
    """A core/v1 Event (as kubectl reads them; events.k8s.io writes show there too)."""
    source = event.get("source") or {}
    at = (
        event.get("eventTime")
        or event.get("lastTimestamp")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
    )
    series = event.get("series") or {}
    count = series.get("count") or event.get("count") or 1
    return Event(
        at=_text(at),
        type=_text(event.get("type")),
        reason=_text(event.get("reason")),
        by=_text(event.get("reportingComponent") or source.get("component")),
        note=_text(event.get("message") or event.get("note")),
        count=count if isinstance(count, int) else 1,
    )


def as_json(status: KillStatus, now: datetime) -> dict[str, Any]:
    return {
        "namespace": status.namespace,
        "name": status.name,
        "uid": status.uid,
        "summary": status.summary(now),
        "started": status.started,
        "inputs": status.inputs,
        "enforce": status.enforce,
        "invalid": [i.message() for i in status.invalid],
        "outputs": status.outputs,
        "conditions": [vars(c) for c in status.conditions],
        "pods": [vars(p) for p in status.pods],
        "events": [vars(e) | {"from_jobreaper": e.from_jobreaper} for e in status.events],
    }


def render(status: KillStatus, now: datetime, *, all_events: bool = False) -> list[str]:
    """The lines ``kubectl jobreaper status`` prints."""
    lines = [
        f"Job {status.namespace}/{status.name}  uid {status.uid}",
        f"  {status.summary(now)}",
        "",
        "Inputs (annotations you write):",
    ]
    lines += [f"  {k}={v}" for k, v in status.inputs.items()] or ["  (none)"]
    if status.enforce is not None:
        lines.append(f"  label {ENFORCE}={status.enforce}")
    lines += [f"  invalid, ignored: {i.message()}" for i in status.invalid]
    lines += ["", "Outputs (annotations jobreaper writes):"]
    if status.outputs:
        lines += [f"  {k}={v}" for k, v in status.outputs.items()]
    else:
        lines.append(
            "  (none: no kill time is set and no kill started, or this jobreaper does not"
            " write them)"
        )
    ours = [c for c in status.conditions if c.reason.startswith(CONDITION_PREFIX)]
    lines += ["", "Conditions set by jobreaper:"]
    lines += [f"  {c.type}={c.status} {c.reason} at {c.at}: {c.message}" for c in ours] or [
        "  (none)"
    ]
    if status.finished and not ours:
        lines.append(f"  (the Job ended {status.finished} by itself)")
    lines += ["", "Pods:"]
    lines += [
        f"  {p.name}  {p.phase or '?'}  node {p.node or '-'}"
        + (f"  deleting since {p.deleting_since}" if p.deleting_since else "")
        + (
            f"  activeDeadlineSeconds {p.active_deadline_seconds}"
            if p.active_deadline_seconds is not None
            else ""
        )
        for p in status.pods
    ] or ["  (none)"]
    shown = [e for e in status.events if all_events or e.from_jobreaper]
    lines += [
        "",
        "Events" + ("" if all_events else " from jobreaper (--all-events: every one)") + ":",
    ]
    lines += [
        f"  {e.at}  {e.type}  {e.reason}"
        + (f" (x{e.count})" if e.count > 1 else "")
        + f"  {e.note}"
        for e in shown
    ] or ["  (none)"]
    return lines
