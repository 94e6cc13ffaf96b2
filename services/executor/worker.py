"""One input partition of ``kill.commands``: apply its commands, commit in transactions.

A worker owns one transactional producer whose id is derived from the
partition, and runs batches in order:

1. decode each record; a poison record (undecodable, not a ``CommandIssued``)
   becomes a dead letter; a command id that already has a result is dropped;
2. apply the commands (distinct pods concurrently, one pod's commands in
   order) through :class:`~.apply.Applier`;
3. in ONE Kafka transaction: the results and dead letters, and the consumed
   offset (``send_offsets_to_transaction``). A result is on ``kill.results``
   if and only if its command's offset is committed.

When the worker is told to stop (rebalance, shutdown) commands not started
yet, or waiting to retry, are abandoned: the commit stops before the first of
them, so they are redelivered (and their next owner's GET sees any effect).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import ProducerFenced

from schemas.cloudevents import DecodeError
from schemas.commands import CommandApplied, CommandIssued
from schemas.topics import KILL_COMMANDS
from services.runtime.faults import crash_point
from services.runtime.kafka import OutgoingRecord, dead_letter_record, send_in_transaction
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC, outgoing
from services.runtime.topics import TopicNames

from .apply import Abandoned, Applier, Result
from .metrics import ExecutorMetrics

log = get_logger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


class Fenced(Exception):
    """Another producer with this partition's transactional id started: we are a zombie."""


def result_message(command: CommandIssued, result: Result) -> CommandApplied:
    return CommandApplied(
        command_id=command.command_id,
        step=command.step,
        namespace=command.namespace,
        job_name=command.job_name,
        job_uid=command.job_uid or (result.pod.job_uid if result.pod else None),
        pod_name=command.pod_name,
        pod_uid=command.pod_uid,
        attempt=command.attempt,
        outcome=result.outcome,
        applied_at=result.applied_at,
        http_status=result.http_status,
        message=result.message,
        attempts=result.attempts,
        wrote=result.wrote,
    )


@dataclass
class Decoded:
    """A batch sorted out: what to apply, what is already decided."""

    commands: list[tuple[int, CommandIssued]] = field(default_factory=list)
    """(index in the batch, command) to apply."""
    dead: dict[int, OutgoingRecord] = field(default_factory=dict)
    duplicates: set[int] = field(default_factory=set)


def sort_out(
    records: Sequence[Record],
    names: TopicNames,
    seen: set[str],
    metrics: ExecutorMetrics | None = None,
) -> Decoded:
    """Decode a batch: commands to apply, dead letters, duplicates (pure but for metrics)."""
    out = Decoded()
    in_batch: set[str] = set()
    for index, record in enumerate(records):
        reason: str | None = None
        try:
            message = CODEC.decode(record.headers, record.value, KILL_COMMANDS).message
        except DecodeError as exc:
            reason = exc.reason
        else:
            if not isinstance(message, CommandIssued):
                reason = f"wrong-type: {message.CE_TYPE} on {record.topic}"
        if reason is not None:
            out.dead[index] = dead_letter_record(
                names,
                source_topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                reason=reason,
            )
            if metrics is not None:
                metrics.deadletters.labels(reason.split(":", 1)[0]).inc()
            continue
        assert isinstance(message, CommandIssued)
        if message.command_id in seen or message.command_id in in_batch:
            out.duplicates.add(index)
            if metrics is not None:
                metrics.duplicates.inc()
            continue
        in_batch.add(message.command_id)
        out.commands.append((index, message))
    return out


class PartitionWorker:
    def __init__(
        self,
        tp: TopicPartition,
        producer: AIOKafkaProducer,
        *,
        group_id: str,
        names: TopicNames,
        source: str,
        applier: Applier,
        metrics: ExecutorMetrics,
        seen: set[str],
        next_offset: int,
        end_offset: int,
        max_batch: int,
        concurrency: int,
        commit_delay_s: float = 0.0,
        on_result: Callable[[CommandIssued, Result], None] | None = None,
    ) -> None:
        self.tp = tp
        self.producer = producer
        self.group_id = group_id
        self.names = names
        self.source = source
        self.applier = applier
        self.metrics = metrics
        self.seen = seen
        self.next_offset = next_offset
        """Every record before this offset is committed; older records are stale fetches."""
        self.end_offset = end_offset
        """The partition's end when it was assigned: caught up once past it."""
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.commit_delay_s = commit_delay_s
        self.on_result = on_result
        self.caught_up = False
        self.applied = 0
        self._pending: collections.deque[tuple[Record, datetime]] = collections.deque()
        """Records waiting for a batch, with when they were received."""
        self._wakeup = asyncio.Event()
        self._busy = False
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] = asyncio.create_task(self._run(), name=f"worker-{tp}")

    # -- the main loop's side -----------------------------------------------------

    def submit(self, records: Sequence[Record]) -> None:
        if self.stopping.is_set():
            return
        received = self.applier.now()
        self._pending.extend((r, received) for r in records if r.offset >= self.next_offset)
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._busy

    async def stop(self) -> BaseException | None:
        """Finish (and commit) the batch in flight, abandon the rest, close the producer."""
        self.stopping.set()
        self._wakeup.set()
        error: BaseException | None = None
        try:
            await self.task
        except BaseException as exc:  # the main loop reports it; stopping must go on
            error = exc
        try:
            await self.producer.stop()
        except Exception as exc:
            log.warning(
                "executor.producer_stop_failed", partition=self.tp.partition, error=str(exc)
            )
        return error

    # -- the worker's side ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while not self._pending and not self.stopping.is_set():
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.stopping.is_set():
                return
            batch = [
                self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))
            ]
            self._busy = True
            try:
                await self._process([r for r, _ in batch], [at for _, at in batch])
            finally:
                self._busy = False

    async def _process(self, records: list[Record], received: list[datetime]) -> None:
        decoded = sort_out(records, self.names, self.seen, self.metrics)
        for index, command in decoded.commands:
            delivery = (received[index] - command.decided_at).total_seconds()
            self.metrics.delivery.observe(max(0.0, delivery))
        results = await self._apply_all(decoded.commands)
        # Commit up to the first abandoned command: everything before it is decided.
        cut = len(records)
        for index, _ in decoded.commands:
            if results.get(index) is None:
                cut = index
                break
        if cut == 0:
            return
        if self.commit_delay_s:
            await asyncio.sleep(self.commit_delay_s)
        commands = dict(decoded.commands)
        outgoing_records: list[OutgoingRecord] = []
        decided: list[tuple[CommandIssued, Result]] = []
        for index in range(cut):
            if index in decoded.dead:
                outgoing_records.append(decoded.dead[index])
            elif index in commands:
                command, result = commands[index], results[index]
                assert result is not None
                decided.append((command, result))
                outgoing_records.append(
                    outgoing(
                        self.names,
                        result_message(command, result),
                        source=self.source,
                        event_id=f"result-{command.command_id}",
                        time=result.applied_at,
                    )
                )
        commit_to = records[cut].offset if cut < len(records) else records[-1].offset + 1
        await self._commit(outgoing_records, commit_to)
        crash_point("executor.after-commit")
        self.next_offset = commit_to
        for command, result in decided:
            self.seen.add(command.command_id)
            self._account(command, result)

    async def _apply_all(
        self, commands: list[tuple[int, CommandIssued]]
    ) -> dict[int, Result | None]:
        """Apply commands: one pod's in order, distinct pods concurrently. None: abandoned.

        ``fail-job`` commands of the batch go first, all of them before any pod's:
        once a Job has its ``FailureTarget`` the Job controller creates no replacement
        for a pod we delete next. ``annotate-job`` (what a Job shows) goes beside the
        pods' steps, never before them: it must not delay a kill."""
        results: dict[int, Result | None] = {}
        jobs: dict[tuple[str, str], list[tuple[int, CommandIssued]]] = {}
        by_pod: dict[tuple[str, str], list[tuple[int, CommandIssued]]] = {}
        for index, command in commands:
            if command.step == "fail-job":
                jobs.setdefault((command.namespace, command.job_name), []).append((index, command))
            elif command.pod_name is None:  # annotate-job: one queue per Job, in order
                key = (command.namespace, f"job/{command.job_name}")
                by_pod.setdefault(key, []).append((index, command))
            else:
                by_pod.setdefault((command.namespace, command.pod_name), []).append(
                    (index, command)
                )
        slots = asyncio.Semaphore(self.concurrency)

        async def one_pod(queue: list[tuple[int, CommandIssued]]) -> None:
            for position, (index, command) in enumerate(queue):
                try:
                    async with slots:
                        crash_point("executor.before-apply")
                        started = self.applier.now()
                        result = results[index] = await self.applier.apply(command, self.stopping)
                        crash_point("executor.after-apply")
                    took = (result.applied_at - started).total_seconds()
                    self.metrics.apply_seconds.labels(command.step).observe(max(0.0, took))
                except Abandoned:
                    for later, _ in queue[position:]:
                        results[later] = None
                    return
                except Exception as exc:  # a bug must not wedge the partition
                    log.exception("executor.apply_crashed", command_id=command.command_id)
                    results[index] = Result(
                        outcome="failed",
                        applied_at=self.applier.now(),
                        http_status=None,
                        message=f"executor error: {type(exc).__name__}: {exc}",
                        attempts=1,
                    )

        if jobs:
            await asyncio.gather(*(one_pod(queue) for queue in jobs.values()))
        await asyncio.gather(*(one_pod(queue) for queue in by_pod.values()))
        return results

    async def _commit(self, records: list[OutgoingRecord], commit_to: int) -> None:
        began = time.monotonic()
        try:
            await send_in_transaction(
                self.producer,
                records,
                offsets={self.tp: commit_to},
                group_id=self.group_id,
                before_commit=lambda: crash_point("executor.before-commit"),
            )
        except ProducerFenced as exc:
            self.metrics.transactions.labels("fenced").inc()
            raise Fenced(f"partition {self.tp.partition}: transactional id taken over") from exc
        except BaseException:
            self.metrics.transactions.labels("aborted").inc()
            raise
        self.metrics.transactions.labels("committed").inc()
        self.metrics.commit_seconds.observe(time.monotonic() - began)

    def _account(self, command: CommandIssued, result: Result) -> None:
        self.applied += 1
        self.metrics.commands.labels(command.step, result.outcome).inc()
        if result.wrote:
            self.metrics.writes.labels(command.step).inc()
        latency = (result.applied_at - command.due_at).total_seconds()
        self.metrics.kill_latency.labels(command.step).observe(max(0.0, latency))
        fields: dict[str, Any] = {
            "command_id": command.command_id,
            "step": command.step,
            "pod" if command.pod_name is not None else "job": (
                f"{command.namespace}/{command.pod_name or command.job_name}"
            ),
            "outcome": result.outcome,
            "http_status": result.http_status,
            "attempts": result.attempts,
            "latency_s": round(latency, 3),
            "detail": result.message,
        }
        if result.outcome == "forbidden":
            verb = result.message.split(" ", 1)[0]
            log.error(
                "executor.forbidden",
                missing_permission=(
                    f"{verb} jobs/status (batch) in namespace {command.namespace}"
                    if command.step == "fail-job"
                    else f"{verb} jobs (batch) in namespace {command.namespace}"
                    if command.step == "annotate-job"
                    else f"{verb} pods in namespace {command.namespace}"
                ),
                hint=(
                    "grant the executor's service account get, patch and delete on pods, "
                    "get and patch on jobs and patch on jobs/status in group batch "
                    "(and create on events.events.k8s.io)"
                ),
                **fields,
            )
        elif result.outcome == "failed":
            log.warning("executor.failed", **fields)
        elif result.outcome == "refused":
            reason = result.refusal or "unknown"
            self.metrics.refused.labels(reason).inc()
            log.warning("executor.refused", reason=reason, job=command.job_name, **fields)
        else:
            log.info("executor.result", **fields)
        if self.on_result is not None:
            self.on_result(command, result)
