"""The replay walk: re-run the pure core over a partition's recorded history and
compare each decision, byte for byte, with what the killer recorded.

For each ``DecisionRecorded`` of partition *p*, in order (a decision written in
parts is one decision, its parts' ids concatenated):

1. if it names a state (``state``) other than the previous decision's, the
   killer had rebuilt: start a new state as the killer's rebuild did (seeded with
   its memory of nodes and config below ``rebuilt_from``, ``GlobalInputs``, then
   the Job-keyed topics from offset 0);
2. fold every record not folded yet below the recorded input positions -
   including the killer's own past commands, results and kill events, as the live
   killer folded them back: the state is then the live state, and one diverging
   decision does not cascade into every later one;
3. ``decide(state, decided_at)`` and compare its commands and kill events with the
   recorded ones (found by id in ``kill.commands`` / ``kill.events`` of *p*): the
   ids in order, and the JSON bytes of each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import Decision, KillerState, decide, event_id
from schemas.decisions import DecisionRecorded
from schemas.topics import KILL_COMMANDS, KILL_DECISIONS, KILL_EVENTS

from .fold import Folder, positions
from .history import JOB_TOPICS, History, Rec, decisions, decode

DecideFn = Callable[[KillerState, datetime], Decision]


@dataclass(frozen=True)
class Window:
    """Which decisions are compared (by ``decided_at``, inclusive); all are folded."""

    start: datetime | None = None
    end: datetime | None = None

    def __contains__(self, at: datetime) -> bool:
        return (self.start is None or at >= self.start) and (self.end is None or at <= self.end)


@dataclass(frozen=True)
class Divergence:
    """One output of one decision that differs from the record."""

    partition: int
    decision: str
    """Where the decision record is: ``kill.decisions/<p>@<offset>``."""
    decided_at: datetime
    kind: str
    """``command``, ``event``, or ``decision`` (the record itself: parts missing)."""
    index: int
    """Its position in the decision's output of that kind."""
    problem: str
    expected_id: str | None
    got_id: str | None
    expected: str | None
    """The recorded JSON (None: nothing recorded there, or the record is missing)."""
    got: str | None
    """The replay's JSON (None: the replay decided nothing there)."""
    last_input: str | None
    """The last input record folded before this decision."""

    def as_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "decision": self.decision,
            "decided_at": self.decided_at.isoformat(),
            "kind": self.kind,
            "index": self.index,
            "problem": self.problem,
            "expected_id": self.expected_id,
            "got_id": self.got_id,
            "expected": self.expected,
            "got": self.got,
            "last_input": self.last_input,
        }


@dataclass
class PartitionResult:
    partition: int
    decisions: int = 0
    """Decision records compared (inside the window)."""
    commands: int = 0
    """Commands that matched, id and bytes."""
    events: int = 0
    """Kill events that matched, id and bytes."""
    folded: int = 0
    undecodable: int = 0
    states: int = 0
    """Continuous states walked (1 + the killer's rebuilds seen)."""
    divergences: list[Divergence] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "decisions": self.decisions,
            "commands_matched": self.commands,
            "events_matched": self.events,
            "records_folded": self.folded,
            "undecodable_skipped": self.undecodable,
            "states": self.states,
            "divergences": len(self.divergences),
        }


def describe(rec: Rec | None) -> str | None:
    """One line about a record: where it is and what it says."""
    if rec is None:
        return None
    message = decode(rec)
    what = [type(message).__name__]
    for name in ("change", "namespace", "name", "job_name", "pod_name", "status", "outcome"):
        value = getattr(message, name, None)
        if value:
            what.append(f"{name}={value}")
    observed = getattr(message, "observed_at", None)
    if observed is not None:
        what.append(f"observed_at={observed.isoformat()}")
    return f"{rec.where} " + " ".join(what)


def replay_partition(
    history: History,
    partition: int,
    window: Window = Window(),
    *,
    decide_fn: DecideFn = decide,
) -> PartitionResult:
    """Replay one partition (see the module docstring)."""
    streams = {(t, partition): history.stream(t, partition) for t in JOB_TOPICS}
    streams.update(history.global_streams())
    folder = Folder(streams)
    commands = _by_id(history.stream(KILL_COMMANDS, partition))
    events = _by_id(history.stream(KILL_EVENTS, partition))
    result = PartitionResult(partition)
    current: str | None = None
    for written in decisions(history.stream(KILL_DECISIONS, partition)):
        rec, record = written.rec, written.record
        if record.state and record.state != current:
            folder.rebuild(positions(record.rebuilt_from))
            result.states += 1
        elif current is None:
            result.states += 1  # no rebuild recorded: one continuous state from nothing
        current = record.state
        folder.fold_to(positions(record.inputs))
        decision = decide_fn(folder.state, record.decided_at)
        if record.decided_at not in window:
            continue
        result.decisions += 1
        where = f"{KILL_DECISIONS}/{partition}@{rec.offset}"
        last = describe(folder.last)
        if written.incomplete is not None:
            result.divergences.append(
                Divergence(
                    partition,
                    where,
                    record.decided_at,
                    "decision",
                    0,
                    f"the decision record is incomplete ({written.incomplete}): its other"
                    " ids are unknown",
                    None,
                    None,
                    None,
                    None,
                    last,
                )
            )
        got_commands = [(c.command_id, c.model_dump_json(by_alias=True)) for c in decision.commands]
        got_events = [(event_id(e), e.model_dump_json(by_alias=True)) for e in decision.kill_events]
        inputs = positions(record.inputs)
        recorded = [
            _written_by(commands.get(i), inputs.get((KILL_COMMANDS, partition), 0))
            for i in record.command_ids
        ]
        matched, diffs = _compare(
            "command", got_commands, record.command_ids, recorded, partition, where, record, last
        )
        result.commands += matched
        result.divergences += diffs
        recorded = [
            _written_by(events.get(i), inputs.get((KILL_EVENTS, partition), 0))
            for i in record.event_ids
        ]
        matched, diffs = _compare(
            "event", got_events, record.event_ids, recorded, partition, where, record, last
        )
        result.events += matched
        result.divergences += diffs
    result.folded = folder.folded
    result.undecodable = folder.undecodable
    return result


def _by_id(stream: list[Rec]) -> dict[str, list[Rec]]:
    index: dict[str, list[Rec]] = {}
    for rec in stream:
        ce_id = rec.header("ce_id")
        if ce_id is not None:
            index.setdefault(ce_id, []).append(rec)
    return index


def _written_by(records: list[Rec] | None, position: int) -> Rec | None:
    """The record a decision wrote: its outputs follow what it had folded (a command
    re-issued later under the same id, e.g. after a forgotten generation, is another
    record with the same id and perhaps another ``decided_at``)."""
    if not records:
        return None
    for rec in records:
        if rec.offset >= position:
            return rec
    return records[-1]


def _compare(
    kind: str,
    got: list[tuple[str, str]],
    expected_ids: tuple[str, ...],
    recorded: list[Rec | None],
    partition: int,
    where: str,
    record: DecisionRecorded,
    last: str | None,
) -> tuple[int, list[Divergence]]:
    matched = 0
    diffs: list[Divergence] = []
    for index in range(max(len(got), len(expected_ids))):
        got_id, got_json = got[index] if index < len(got) else (None, None)
        expected_id = expected_ids[index] if index < len(expected_ids) else None
        rec = recorded[index] if index < len(recorded) else None
        expected_json = None
        if rec is not None and rec.value is not None:
            expected_json = rec.value.decode(errors="replace")
        if expected_id is None:
            problem = f"the replay decided a {kind} the killer did not"
        elif got_id is None:
            problem = f"the killer decided a {kind} the replay did not"
        elif rec is None:
            topic = KILL_COMMANDS if kind == "command" else KILL_EVENTS
            problem = f"the recorded {kind} {expected_id} is not on {topic}"
        elif got_id != expected_id:
            problem = "different id"
        elif got_json != expected_json:
            problem = "same id, different bytes"
        else:
            matched += 1
            continue
        diffs.append(
            Divergence(
                partition,
                where,
                record.decided_at,
                kind,
                index,
                problem,
                expected_id,
                got_id,
                expected_json,
                got_json,
                last,
            )
        )
    return matched, diffs


__all__ = ["DecideFn", "Divergence", "PartitionResult", "Window", "describe", "replay_partition"]
