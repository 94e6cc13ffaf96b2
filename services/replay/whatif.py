"""What-if: the same recorded history under another configuration.

The what-if killer folds only the recorded *inputs* (observations, kill requests,
nodes) - never the recorded commands, results or kill events, which the real
configuration produced. It decides

* at every recorded ``decided_at`` (after folding the inputs below that decision's
  positions, as the replay does),
* when each input arrives - taken as its Kafka timestamp, the producer's clock:
  the live killer decides after every fold, and that is also how it learns its
  next timer - and
* at its own timers: ``decide``'s ``next_due_at``, between recorded inputs,
  because another configuration changes due times and nothing in the record
  says when those would have come.

Results do not exist for commands that were never really issued, so each
hypothetical command is assumed *applied* at the moment it is decided (its own
command and kill events are folded back, as the live killer does). The pods' real
later observations still arrive as recorded: a hypothetical delete does not make
the pod's recorded observations show a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from core import decide, evolve
from schemas.commands import CommandApplied, CommandIssued
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.topics import K8S_OBJECTS, KILL_COMMANDS, KILL_DECISIONS, KILL_REQUESTS

from .fold import Folder, positions
from .history import History, Rec, decisions, decode

INPUT_TOPICS = (K8S_OBJECTS, KILL_REQUESTS)
"""The Job-keyed topics a what-if folds (the globals come too)."""


def snapshot_for(config: KillerConfig, history: History, source: str) -> ConfigSnapshot:
    """The what-if config as a snapshot, one version above every recorded one."""
    newest = 0
    for stream in history.global_streams().values():
        for rec in stream:
            message = decode(rec)
            if isinstance(message, ConfigSnapshot):
                newest = max(newest, message.version)
    return ConfigSnapshot(
        version=newest + 1,
        config=config,
        author="what-if",
        changed_at=datetime.now(UTC),
        source=source,
    )


@dataclass
class WhatIfRun:
    """What a partition's killer did (recorded) and would have done (what-if)."""

    partition: int
    recorded: list[CommandIssued] = field(default_factory=list)
    hypothetical: list[CommandIssued] = field(default_factory=list)
    decisions: int = 0
    """Every ``decide`` of the what-if (recorded instants and timers)."""
    timers: int = 0
    """Of which at the what-if's own timers."""


def _at(rec: Rec) -> datetime:
    return datetime.fromtimestamp(rec.timestamp_ms / 1000, UTC)


class _WhatIf:
    def __init__(self, folder: Folder, config: ConfigSnapshot, run: WhatIfRun) -> None:
        self.folder = folder
        self.config = config
        self.run = run
        self.now: datetime | None = None
        self.due: datetime | None = None

    def decide(self, now: datetime) -> None:
        if self.now is not None and now < self.now:
            now = self.now  # the clock never goes back
        self.now = now
        decision = decide(self.folder.state, now, self.config)
        self.run.decisions += 1
        self.due = decision.next_due_at
        for cmd in decision.commands:
            self.run.hypothetical.append(cmd)
            evolve(self.folder.state, cmd)
            evolve(self.folder.state, assumed_applied(cmd, now))
        for event in decision.kill_events:
            evolve(self.folder.state, event)

    def timers_before(self, limit: datetime | None) -> None:
        """Decide at every timer due strictly before ``limit`` (None: all of them)."""
        while self.due is not None and (limit is None or self.due < limit):
            if self.now is not None and self.due <= self.now:
                # Already decided at that instant: nothing more will come of it.
                break
            self.run.timers += 1
            self.decide(self.due)

    def fold(self, rec: Rec) -> None:
        """An input arrives (at its Kafka timestamp): a live killer folds it and
        decides at once, which also tells it its next timer."""
        at = _at(rec)
        self.timers_before(at)
        folded = self.folder.folded
        self.folder.fold(rec)
        if self.folder.folded != folded:
            self.decide(at)


def assumed_applied(cmd: CommandIssued, at: datetime) -> CommandApplied:
    """The result a what-if assumes for ``cmd``: applied at ``at``."""
    return CommandApplied(
        command_id=cmd.command_id,
        step=cmd.step,
        namespace=cmd.namespace,
        job_name=cmd.job_name,
        job_uid=cmd.job_uid,
        pod_name=cmd.pod_name,
        pod_uid=cmd.pod_uid,
        attempt=cmd.attempt,
        outcome="applied",
        applied_at=at,
    )


def what_if_partition(
    history: History, partition: int, config: ConfigSnapshot, *, until: datetime | None = None
) -> WhatIfRun:
    """Run partition ``partition``'s history under ``config``; timers run up to
    ``until`` (default: the last record of the history)."""
    run = WhatIfRun(partition)
    seen: set[str] = set()
    for rec in history.stream(KILL_COMMANDS, partition):
        message = decode(rec)
        if isinstance(message, CommandIssued) and message.command_id not in seen:
            seen.add(message.command_id)
            run.recorded.append(message)
    streams = {(t, partition): history.stream(t, partition) for t in INPUT_TOPICS}
    streams.update(history.global_streams())
    whatif = _WhatIf(Folder(streams), config, run)
    last_ms = 0
    for rec in history.stream(KILL_DECISIONS, partition):
        last_ms = max(last_ms, rec.timestamp_ms)
    for recorded in decisions(history.stream(KILL_DECISIONS, partition)):
        record = recorded.record  # its parts merged: one decision, decided once
        for pending in list(whatif.folder.pending(positions(record.inputs))):
            whatif.fold(pending)
        whatif.timers_before(record.decided_at)
        whatif.decide(record.decided_at)
    everything = {key: len(stream) and stream[-1].offset + 1 for key, stream in streams.items()}
    for pending in list(whatif.folder.pending(everything)):
        last_ms = max(last_ms, pending.timestamp_ms)
        whatif.fold(pending)
    end = until or datetime.fromtimestamp(last_ms / 1000, UTC)
    whatif.timers_before(end)
    return run


__all__ = ["INPUT_TOPICS", "WhatIfRun", "snapshot_for", "what_if_partition"]
