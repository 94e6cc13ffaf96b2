"""Writing a decision: its commands, kill events and decision record in one transaction.

The commands and kill events of one ``decide`` go to partition *p* of their
topics in one transaction of *p*'s producer, with one ``DecisionRecorded`` (what
the decision saw and when: DESIGN section 4, the clock is an input). What the
caller does with the outcome: a failed transaction sends the partition to a
rebuild (the state, which ``decide`` already updated, is never trusted beyond
what the log holds); a fenced producer means a newer owner: the partition is
released.
"""

from __future__ import annotations

import enum
import time
from datetime import datetime

from aiokafka.errors import KafkaError, ProducerFenced

from core import Decision, event_id
from schemas.decisions import DecisionRecorded, decision_parts
from schemas.events import ForceDeletionHeld, ForceDeletionPaused, ForceDeletionResumed
from services.runtime.faults import crash_point
from services.runtime.kafka import OutgoingRecord, send_in_transaction
from services.runtime.logging import get_logger
from services.runtime.messages import outgoing
from services.runtime.topics import TopicNames

from .metrics import KillerMetrics
from .partition import Partition, input_positions

log = get_logger(__name__)

LOGGED_COMMANDS = 20
"""Commands named in a ``killer.decided`` line (the total is always there)."""


class Outcome(enum.Enum):
    COMMITTED = "committed"
    FENCED = "fenced"
    """A newer owner started this partition's producer: release the partition."""
    FAILED = "failed"
    """Aborted (Kafka away, a record refused...): rebuild the partition."""


class Committer:
    """Writes the decisions of every owned partition through its producer."""

    def __init__(
        self, names: TopicNames, metrics: KillerMetrics, *, source: str, identity: str
    ) -> None:
        self.names = names
        self.metrics = metrics
        self.source = source
        self.identity = identity

    def records(
        self,
        partition: Partition,
        now: datetime,
        decision: Decision,
        *,
        config_version: int,
        global_positions: dict[tuple[str, int], int],
    ) -> list[OutgoingRecord]:
        """The commands, the kill events, then the decision record (in parts when it
        lists more ids than a record holds)."""
        event_ids = [event_id(ev) for ev in decision.kill_events]
        records = [
            outgoing(self.names, cmd, source=self.source, event_id=cmd.command_id, time=now)
            for cmd in decision.commands
        ] + [
            outgoing(self.names, ev, source=self.source, event_id=ev_id, time=now)
            for ev, ev_id in zip(decision.kill_events, event_ids, strict=True)
        ]
        recorded = DecisionRecorded(
            partition=partition.number,
            decided_at=now,
            config_version=config_version,
            inputs=input_positions({**partition.positions, **global_positions}),
            state=partition.state_id,
            rebuilt_from=partition.rebuilt_from,
            killer=self.identity,
        )
        commands = [cmd.command_id for cmd in decision.commands]
        return records + [
            outgoing(self.names, part, source=self.source, time=now)
            for part in decision_parts(recorded, commands, event_ids)
        ]

    async def commit(
        self,
        partition: Partition,
        now: datetime,
        decision: Decision,
        *,
        config_version: int,
        global_positions: dict[tuple[str, int], int],
    ) -> Outcome:
        """Write the decision's :meth:`records` to partition *p* in one transaction."""
        records = self.records(
            partition,
            now,
            decision,
            config_version=config_version,
            global_positions=global_positions,
        )
        started = time.monotonic()
        try:
            await send_in_transaction(
                partition.producer,
                records,
                partition=partition.number,
                before_commit=lambda: crash_point("killer.before-commit"),
            )
        except ProducerFenced:
            log.warning("killer.fenced", partition=partition.number)
            return Outcome.FENCED
        except KafkaError as exc:
            log.error("killer.transaction_failed", partition=partition.number, error=str(exc))
            return Outcome.FAILED
        crash_point("killer.after-commit")
        self._count(now, decision, records, time.monotonic() - started, partition.number)
        return Outcome.COMMITTED

    def _count(
        self,
        now: datetime,
        decision: Decision,
        records: list[OutgoingRecord],
        seconds: float,
        number: int,
    ) -> None:
        for cmd in decision.commands:
            self.metrics.commands.labels(cmd.step, cmd.trigger).inc()
            self.metrics.decide_lateness.observe(max(0.0, (now - cmd.due_at).total_seconds()))
        events: dict[str, int] = {}
        for ev in decision.kill_events:
            self.metrics.kill_events.labels(type(ev).__name__).inc()
            if isinstance(ev, ForceDeletionHeld):
                self.metrics.force_held.labels(ev.waits_for).inc()
            elif isinstance(ev, ForceDeletionPaused):
                self.metrics.guard_tripped.labels(ev.zone).set(1)
                self.metrics.guard_trips.inc()
            elif isinstance(ev, ForceDeletionResumed):
                self.metrics.guard_tripped.labels(ev.zone).set(0)
            events[type(ev).__name__] = events.get(type(ev).__name__, 0) + 1
        log.info(
            "killer.decided",
            partition=number,
            # Bounded: a decision about a Job of 20,000 pods is one line, not 2 MB.
            commands=[
                f"{c.step}:{c.namespace}/{c.pod_name or c.job_name}"
                for c in decision.commands[:LOGGED_COMMANDS]
            ],
            commands_total=len(decision.commands),
            events=events,
            records=len(records),
            seconds=round(seconds, 3),
        )
