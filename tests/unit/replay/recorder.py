"""An in-process killer partition that records a history as the live one does.

It encodes every input as a Kafka record would be (CODEC, one partition), folds
records in arrival order with the live killer's skip rules, decides at the
instants the test (or benchmark) chooses, and writes each decision's commands,
kill events and ``DecisionRecorded`` (positions, ``state``, ``rebuilt_from``) to the
history; its own output is folded back on the next step, as the live killer's
is. ``crash_and_rebuild()`` does what the killer's ``_rebuild`` does. No Kafka:
the walk of ``services.replay`` is tested (and benchmarked) on what this writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core import Decision, GlobalInputs, decide, event_id, evolve, new_state
from schemas.base import Message
from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.decisions import DecisionRecorded, InputPosition, decision_parts
from schemas.observations import NodeObserved
from schemas.topics import KILL_DECISIONS
from services.replay.history import GLOBAL_TOPICS, JOB_TOPICS, History, Rec
from services.runtime.messages import CODEC

SOURCE = "/jobreaper/killer/recorder"


class Recorder:
    def __init__(
        self, partition: int = 0, killer: str = "k-rec", *, record_states: bool = True
    ) -> None:
        self.partition = partition
        self.killer = killer
        self.record_states = record_states
        self.history = History()
        self.log: list[Rec] = []  # every record, in arrival order
        self.messages: dict[int, Any] = {}  # id(rec) -> the message as written
        self.cursor = 0  # next index of ``log`` to fold
        self.last_ms = 0
        self.globals = GlobalInputs()
        self.positions: dict[tuple[str, int], int] = {}
        self.global_positions: dict[tuple[str, int], int] = {}
        self.epoch = 0
        self.rebuilt_from: tuple[InputPosition, ...] = ()
        self.state = new_state()
        self.decisions = 0
        self.crash_and_rebuild()

    # -- writing records ------------------------------------------------------------

    def _append(
        self,
        topic: str,
        at: datetime,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        message: Any,
        *,
        fold: bool = True,
    ) -> Rec:
        partition = 0 if topic in GLOBAL_TOPICS else self.partition
        stream = self.history.streams.setdefault((topic, partition), [])
        # Strictly increasing timestamps: the arrival order is then unambiguous.
        self.last_ms = max(int(at.timestamp() * 1000), self.last_ms + 1)
        rec = Rec(topic, partition, len(stream), self.last_ms, value, headers)
        stream.append(rec)
        if fold:
            self.log.append(rec)
            self.messages[id(rec)] = message
        return rec

    def put(self, message: Message, at: datetime, *, event_id_: str | None = None) -> Rec:
        encoded = CODEC.encode(message, source=SOURCE, event_id=event_id_, time=at)
        return self._append(message.TOPIC, at, encoded.value, list(encoded.headers), message)

    def put_garbage(self, topic: str, at: datetime) -> Rec:
        """A poison record: not a message we understand."""
        return self._append(topic, at, b"{not json", [("ce_type", b"x")], DecodeError("poison"))

    # -- the killer -----------------------------------------------------------------

    def _fold_pending(self) -> None:
        while self.cursor < len(self.log):
            rec = self.log[self.cursor]
            self.cursor += 1
            self._fold(rec)

    def _fold(self, rec: Rec) -> None:
        message = self.messages[id(rec)]
        key = (rec.topic, rec.partition)
        if rec.topic in GLOBAL_TOPICS:
            self.global_positions[key] = rec.offset + 1
            if isinstance(message, NodeObserved | ConfigSnapshot) and self.globals.fold(message):
                evolve(self.state, message)
        elif rec.topic in JOB_TOPICS:
            self.positions[key] = rec.offset + 1
            if not isinstance(message, DecodeError):
                evolve(self.state, message)

    def crash_and_rebuild(self) -> None:
        """The killer's ``_rebuild`` after a restart: it reads the global topics to
        their end (remembering them as ``GlobalInputs`` does), then builds a new
        state seeded from those and folds the Job topics from
        offset 0. Records that arrived while it was down are folded then."""
        for rec in self.log[self.cursor :]:
            if rec.topic in GLOBAL_TOPICS:
                self._fold(rec)  # into the old state, which is dropped right after
        self.epoch += 1
        self.rebuilt_from = _positions(self.global_positions)
        self.state = self.globals.seed(new_state())
        self.positions = {(t, self.partition): 0 for t in JOB_TOPICS}
        for rec in self.log:
            if rec.topic in JOB_TOPICS:
                self._fold(rec)
        self.cursor = len(self.log)

    def step(self, now: datetime) -> Decision:
        """Fold what arrived, then decide at ``now``; record the decision if it did
        anything (in one 'transaction': commands, kill events, decision record)."""
        self._fold_pending()
        decision = decide(self.state, now)
        if not decision.commands and not decision.kill_events:
            return decision
        record = DecisionRecorded(
            partition=self.partition,
            decided_at=now,
            config_version=config.version if (config := self.globals.config) else 0,
            inputs=_positions({**self.positions, **self.global_positions}),
            killer=self.killer,
            state=f"{self.killer}-{self.epoch}" if self.record_states else "",
            rebuilt_from=self.rebuilt_from if self.record_states else (),
        )
        for cmd in decision.commands:
            self.put(cmd, now, event_id_=cmd.command_id)
        for ev in decision.kill_events:
            self.put(ev, now, event_id_=event_id(ev))
        # As the killer writes it: in parts when it lists more ids than a record holds.
        commands = [c.command_id for c in decision.commands]
        events = [event_id(e) for e in decision.kill_events]
        for part in decision_parts(record, commands, events):
            encoded = CODEC.encode(part, source=SOURCE, time=now)
            # Not in ``log``: the killer does not fold kill.decisions.
            self._append(
                KILL_DECISIONS, now, encoded.value, list(encoded.headers), part, fold=False
            )
        self.decisions += 1
        return decision


def _positions(positions: dict[tuple[str, int], int]) -> tuple[InputPosition, ...]:
    return tuple(
        InputPosition(topic=topic, partition=number, offset=offset)
        for (topic, number), offset in sorted(positions.items())
    )


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
