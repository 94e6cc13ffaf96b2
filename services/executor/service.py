"""The executor: ``kill.commands`` -> Kubernetes API -> ``kill.results``, each command once.

Exactly-once, and why it holds across crashes and rebalances
------------------------------------------------------------
aiokafka lacks KIP-447 (fencing by consumer-group generation), so the
executor uses the classic scheme: **one transactional producer per input
partition**, transactional id ``<prefix>.<group>.<commands topic>.<p>``,
independent of which replica runs it. Per partition *p*:

1. On assignment, the new owner starts *p*'s producer first. Its
   ``InitProducerId`` bumps the epoch of that transactional id: any older
   producer for *p* (a zombie: a replica whose session expired but which
   still runs) is fenced, and the coordinator finishes the transaction that
   producer left open (aborts it, or completes a commit already decided)
   before answering.
2. Only then does it fetch *p*'s committed offset and seek there, and read
   ``kill.results`` partition *p* (``read_committed``) into the set of
   command ids that already have a result. Both now reflect every
   transaction any earlier owner will ever commit.
3. Each batch's results, dead letters and the consumed offset are written in
   ONE transaction: a result exists if and only if its command's offset is
   committed. A zombie's commit fails (``ProducerFenced``) and leaves
   nothing behind.

Revocation (``on_partitions_revoked``, awaited by aiokafka before it rejoins)
lets each worker finish the call in flight and commit what is decided;
commands waiting to retry are abandoned and redelivered. The rebalance
timeout is set above one API call's timeout so this fits in it.

Redelivery: a crash (or fencing) between an API call and the commit means
the command is consumed again. Every command starts with a GET of the pod,
and a command whose effect is already there sends no second write (see
:mod:`.apply`). Duplicates the killer issues itself (same derived id after
its restart) are dropped by the id set of step 2, kept up to date with each
commit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from schemas.cloudevents import DecodeError
from schemas.commands import CommandApplied, CommandIssued
from schemas.topics import KILL_COMMANDS, KILL_EVENTS, KILL_RESULTS
from services.runtime.faults import crash_point
from services.runtime.kafka import (
    client_kwargs,
    ensure_topics,
    make_producer,
    read_partitions_to_end,
    topic_partitions,
)
from services.runtime.kube import PermissionDenied
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC
from services.runtime.retry import retry_until_stopped
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

from .apply import Applier, Result, Transport, describe
from .events import EventRecorder
from .held import GROUP_SUFFIX, feed_held_events
from .metrics import ExecutorMetrics
from .retry import RetryPolicy
from .settings import ExecutorSettings
from .transport import kube_transport
from .worker import Fenced, PartitionWorker

log = get_logger(__name__)

USER_AGENT = "jobreaper-executor/0.1"
KAFKA_AUTH_ERRORS = (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
NEEDED = (
    ("get", "pods", ""),
    ("patch", "pods", ""),
    ("delete", "pods", ""),
    ("get", "jobs", "batch"),
    ("patch", "jobs/status", "batch"),
)
"""(verb, resource[/subresource], group): the pod ladder's, then ``fail-job``'s."""
WANTED = (("create", "events", "events.k8s.io"),)


def _attributes(verb: str, resource: str, group: str) -> dict[str, str]:
    name, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "resource": name, "group": group}
    if subresource:
        attributes["subresource"] = subresource
    return attributes


def transactional_id_prefix(settings: ExecutorSettings, commands_topic: str) -> str:
    """What every transactional id of the executors of one install starts with."""
    return f"{settings.transactional_id_prefix}.{settings.group_id}.{commands_topic}."


def transactional_id(settings: ExecutorSettings, tp: TopicPartition) -> str:
    """The producer of input partition ``tp``: its new owner fences the old one."""
    return f"{transactional_id_prefix(settings, tp.topic)}{tp.partition}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, executor: Executor, consumer: AIOKafkaConsumer) -> None:
        self.executor = executor
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.executor._revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.executor._assign(self.consumer, set(assigned))


class Executor:
    def __init__(
        self,
        api: client.ApiClient | None,
        kafka: KafkaSettings,
        settings: ExecutorSettings,
        *,
        registry: CollectorRegistry | None = None,
        transport: Transport | None = None,
    ) -> None:
        if transport is None:
            if api is None:
                raise ValueError("an ApiClient or a transport is needed")
            api.user_agent = f"{USER_AGENT} ({settings.identity})"
            transport = kube_transport(api)
        self.transport = transport
        self.kafka = kafka
        self.settings = settings
        self.names = TopicNames(kafka.topic_prefix)
        self.commands_topic = self.names(KILL_COMMANDS)
        self.results_topic = self.names(KILL_RESULTS)
        self.registry = registry or CollectorRegistry()
        self.metrics = ExecutorMetrics(self.registry)
        self.source = f"/jobreaper/executor/{settings.identity}"
        self.applier = Applier(
            transport,
            RetryPolicy(
                initial_s=settings.backoff_initial_s,
                max_s=settings.backoff_max_s,
                budget_s=settings.command_budget_s,
            ),
            request_timeout_s=settings.request_timeout_s,
            on_retry=lambda step, status: self.metrics.api_retries.labels(step, str(status)).inc(),
        )
        self.recorder = (
            EventRecorder(transport, self.metrics, settings.identity) if settings.events else None
        )
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        self.seen: set[str] = set()
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._joined = False
        self._fatal: BaseException | None = None
        self._closing = False
        self._rebalancing = asyncio.Lock()
        self._paused: set[TopicPartition] = set()

    # -- the service protocol ---------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def readiness(self) -> tuple[bool, str]:
        if not self._joined:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            return False, f"joining consumer group {self.settings.group_id}{why}"
        workers = list(self.workers.values())
        behind = [w for w in workers if not w.caught_up]
        if behind:
            return False, f"catching up: {len(workers) - len(behind)}/{len(workers)} partitions"
        applied = sum(w.applied for w in workers)
        return True, f"ready: {len(workers)} partitions assigned and caught up, {applied} applied"

    async def run(self) -> None:
        await self._check_permissions()
        held = (
            asyncio.create_task(self._held_events(self.recorder), name="held-events")
            if self.recorder is not None
            else None
        )
        try:
            await retry_until_stopped(
                self._cycle, stopping=self._stopping, on_failure=self._cycle_failed
            )
        finally:
            if held is not None:
                held.cancel()
                await asyncio.gather(held, return_exceptions=True)
            if self.recorder is not None:
                await self.recorder.drain()

    async def _held_events(self, recorder: EventRecorder) -> None:
        """Events on pods whose force deletion is held or forbidden (:mod:`.held`), for
        as long as the executor runs; a Kafka failure restarts the feed, never the
        executor (an Event is a courtesy, the commands are the job)."""
        group = self.settings.group_id + GROUP_SUFFIX

        async def cycle() -> None:
            await feed_held_events(
                self.kafka,
                self.names(KILL_EVENTS),
                group,
                recorder,
                self.settings.identity,
                self._stopping,
            )

        def failed(exc: Exception) -> None:
            log.warning("executor.held_events_failed", error=f"{type(exc).__name__}: {exc}")

        await retry_until_stopped(cycle, stopping=self._stopping, on_failure=failed)

    def _cycle_failed(self, exc: Exception) -> None:
        if isinstance(exc, KAFKA_AUTH_ERRORS):
            raise PermissionDenied(
                f"Kafka refused the executor: {type(exc).__name__}: {exc} (it needs read "
                f"on {self.commands_topic} and group {self.settings.group_id}, write on "
                f"{self.results_topic}, and write on transactional ids "
                f"{self.settings.transactional_id_prefix}.*)"
            ) from exc
        if isinstance(exc, Fenced):
            # A zombie of ours (e.g. a long pause): its batch is not committed;
            # the partition's new owner applies it. Rejoin the group.
            self.last_error = f"fenced: {exc}"
            log.warning("executor.fenced", error=str(exc), action="rejoining the group")
            return
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("executor.cycle_failed", error=self.last_error, exc_info=True)

    # -- one consumer-group membership ----------------------------------------------------

    async def _cycle(self) -> None:
        if self.kafka.create_topics:
            await ensure_topics(self.kafka, job_partitions=self.kafka.job_partitions)
        self._fatal = None
        self._closing = False
        rebalance_timeout_ms = int((2 * self.settings.request_timeout_s + 30) * 1000)
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.kafka),
            client_id=f"jobreaper-executor-{self.settings.identity}",
            group_id=self.settings.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 4),
            rebalance_timeout_ms=max(rebalance_timeout_ms, self.settings.session_timeout_ms),
        )
        await consumer.start()
        try:
            consumer.subscribe([self.commands_topic], listener=_Rebalance(self, consumer))
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=200, max_records=4 * self.settings.max_batch
                )
                if self._fatal is not None:
                    raise self._fatal
                for tp, records in batches.items():
                    worker = self.workers.get(tp)
                    # No worker yet: the assignment is still being set up and will
                    # seek to the committed offset, so nothing is skipped.
                    if worker is not None:
                        worker.submit(records)
                await self._supervise(consumer)
        finally:
            self._closing = True  # an assignment still in flight must not start workers
            async with self._rebalancing:
                await self._stop_workers(set(self.workers))
            self._joined = False
            await consumer.stop()
            await self._stop_workers(set(self.workers))

    async def _supervise(self, consumer: AIOKafkaConsumer) -> None:
        for tp, worker in list(self.workers.items()):
            if self.workers.get(tp) is not worker:
                continue  # revoked meanwhile: its stop reported how it ended
            if worker.task.done() and not worker.task.cancelled():
                error = worker.task.exception()
                if error is not None:
                    raise error
            if worker.backlog > 2 * self.settings.max_batch and tp not in self._paused:
                consumer.pause(tp)
                self._paused.add(tp)
            elif tp in self._paused and worker.backlog <= self.settings.max_batch:
                consumer.resume(tp)
                self._paused.discard(tp)
            if not worker.caught_up and worker.idle:
                try:
                    position = await consumer.position(tp)
                except Exception:  # unassigned meanwhile: the next rebalance sorts it out
                    continue
                if position >= worker.end_offset and self.workers.get(tp) is worker:
                    worker.caught_up = True
                    log.info("executor.caught_up", partition=tp.partition, offset=position)

    # -- rebalances -------------------------------------------------------------------------

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        # A rebalance starts: not ready until the new assignment is set up.
        self._joined = False
        async with self._rebalancing:
            await self._stop_workers(revoked)

    async def _stop_workers(self, tps: set[TopicPartition]) -> None:
        stopping = [self.workers.pop(tp) for tp in sorted(tps) if tp in self.workers]
        self._paused -= tps
        errors = await asyncio.gather(*(w.stop() for w in stopping))
        for worker, error in zip(stopping, errors, strict=True):
            if error is not None:
                log.warning(
                    "executor.worker_stopped_with_error",
                    partition=worker.tp.partition,
                    error=f"{type(error).__name__}: {error}",
                )
        if stopping:
            log.info("executor.revoked", partitions=[w.tp.partition for w in stopping])
        self.metrics.assigned.set(len(self.workers))

    async def _assign(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        try:
            async with self._rebalancing:
                if self._closing:
                    return
                await self._start_workers(consumer, sorted(assigned - set(self.workers)))
                self._joined = True
                self.last_error = None
        except Exception as exc:
            # aiokafka would only log it; the main loop restarts the membership instead.
            log.warning("executor.assign_failed", error=f"{type(exc).__name__}: {exc}")
            self._fatal = exc

    def transactional_id(self, tp: TopicPartition) -> str:
        return transactional_id(self.settings, tp)

    async def _start_workers(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        if not tps:
            self.metrics.assigned.set(len(self.workers))
            return
        producers = [
            make_producer(
                self.kafka,
                client_id=f"jobreaper-executor-{self.settings.identity}-{tp.partition}",
                transactional_id=self.transactional_id(tp),
            )
            for tp in tps
        ]
        # Nothing of these partitions reaches the main loop before their workers
        # exist: it would be dropped (no worker) after the position moved past it.
        consumer.pause(*tps)
        try:
            # Fences any earlier producer of these partitions and settles its transaction.
            await asyncio.gather(*(p.start() for p in producers))
            starts: dict[TopicPartition, int] = {}
            for tp in tps:
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                    starts[tp] = 0
                else:
                    consumer.seek(tp, committed)
                    starts[tp] = committed
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            known = await self._read_results(consumer, tps)
        except BaseException:
            await asyncio.gather(*(p.stop() for p in producers), return_exceptions=True)
            raise
        for tp, producer in zip(tps, producers, strict=True):
            self.workers[tp] = PartitionWorker(
                tp,
                producer,
                group_id=self.settings.group_id,
                names=self.names,
                source=self.source,
                applier=self.applier,
                metrics=self.metrics,
                seen=self.seen,
                next_offset=starts[tp],
                end_offset=ends[tp],
                max_batch=self.settings.max_batch,
                concurrency=self.settings.concurrency,
                commit_delay_s=self.settings.commit_delay_s,
                on_result=self._on_result,
            )
        consumer.resume(*tps)
        self.metrics.assigned.set(len(self.workers))
        log.info(
            "executor.assigned",
            partitions=[tp.partition for tp in tps],
            committed={tp.partition: starts[tp] for tp in tps},
            ends={tp.partition: ends[tp] for tp in tps},
            known_results=known,
        )

    async def _read_results(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
        """Add the command ids that have a result on the matching partitions of kill.results."""
        results = await topic_partitions(self.kafka, [self.results_topic])
        commands = consumer.partitions_for_topic(self.commands_topic) or set()
        wanted = {tp.partition for tp in tps}
        if len(results) == len(commands):
            partitions = [r for r in results if r.partition in wanted]
        else:
            log.warning(
                "executor.partition_counts_differ",
                commands=len(commands),
                results=len(results),
                action="reading every partition of kill.results",
            )
            partitions = results
        before = len(self.seen)

        def keep(record: ConsumerRecord[bytes, bytes]) -> None:
            crash_point("executor.rebuild")
            try:
                message = CODEC.decode(record.headers, record.value, KILL_RESULTS).message
            except DecodeError:
                return
            if isinstance(message, CommandApplied):
                self.seen.add(message.command_id)

        await read_partitions_to_end(
            self.kafka,
            partitions,
            keep,
            client_id=f"jobreaper-executor-{self.settings.identity}-results",
        )
        return len(self.seen) - before

    def _on_result(self, command: CommandIssued, result: Result) -> None:
        if self.recorder is not None:
            self.recorder.record(command, result)

    # -- start-up check ------------------------------------------------------------------------

    async def _check_permissions(self) -> None:
        """Say loudly, at start, which permissions are missing (cluster-wide check).

        Missing ones are not fatal: a namespaced Role may grant them where
        needed, and a refused command is recorded ``forbidden`` anyway. A
        401 is fatal: the credentials themselves are refused.
        """
        for verb, resource, group in NEEDED + WANTED:
            review: dict[str, Any] = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": _attributes(verb, resource, group)},
            }
            try:
                answer = await self.transport(
                    "POST",
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                    review,
                    "application/json",
                    self.settings.request_timeout_s,
                )
            except Exception as exc:
                log.warning("executor.permission_check_failed", error=str(exc))
                return
            if answer.status == 401:
                raise PermissionDenied(
                    f"the API server rejected the executor's credentials: {describe(answer)}"
                )
            if not 200 <= answer.status < 300:
                log.warning("executor.permission_check_failed", error=describe(answer))
                return
            try:
                allowed = bool(orjson.loads(answer.body).get("status", {}).get("allowed"))
            except (orjson.JSONDecodeError, AttributeError):
                allowed = False
            if not allowed:
                what = f"{verb} {resource}" + (f".{group}" if group else "")
                log.error(
                    "executor.permission_missing",
                    missing_permission=what,
                    scope="cluster-wide (a namespaced Role may still grant it where needed)",
                    effect=(
                        "commands will be recorded 'forbidden'"
                        if (verb, resource, group) in NEEDED
                        else "Kubernetes Events will not be created"
                    ),
                )
