"""The watcher: Kubernetes watch streams -> ordered observations on Kafka.

One cycle, run by the holder of the Lease:

1. read ``k8s.objects`` and ``k8s.nodes`` to their end: what the log says
   exists (the seed of every reflector's store);
2. list each kind and publish the difference (``added``,
   ``synthetic-modified``, ``synthetic-deleted``): the log now matches the
   cluster, whatever happened while no watcher ran;
3. watch from the list's version, publishing each real change; on
   ``410 Gone`` list again and publish the difference;
4. meanwhile, publish again (``refreshed``) every live object whose newest
   record is getting old, before the topics' retention deletes it
   (:mod:`services.watcher.refresh`): the log always holds every object that
   exists, however long ago it last changed.

Observations go through one queue to one idempotent producer, in order.
A batch Kafka does not acknowledge is sent again from its first failed
record (so a key's records stay in order; a duplicate is possible and
harmless: consumers fold by resource version). Any other failure ends the
cycle, and the next cycle starts again from the log: nothing the cluster
did is lost, because step 2 re-derives it.

Along the way the leader tells users about invalid jobreaper annotations
(:mod:`services.watcher.annotation_events`): each published observation, and
after each list every object, is checked without waiting; the Events are
created in the background.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from schemas.cloudevents import DecodeError
from schemas.observations import DELETED_CHANGES, JobObserved, NodeObserved, PodObserved
from schemas.topics import K8S_NODES, K8S_OBJECTS
from services.runtime.kafka import (
    OutgoingRecord,
    describe_retention,
    ensure_topics,
    make_producer,
    read_topics_to_end,
    send_record,
)
from services.runtime.kube import KubeApiError, PermissionDenied
from services.runtime.kube_watch import Gone
from services.runtime.lease import LeaderElector, LeaseSettings
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC, outgoing
from services.runtime.retry import Backoff, retry_until_stopped
from services.runtime.settings import KafkaSettings
from services.runtime.tasks import Supervisor, until_stopped
from services.runtime.topics import TopicNames

from . import wire
from .annotation_events import AnnotationWarner, kube_post
from .claims import ClaimModes
from .convert import Observation, pod_observation
from .metrics import WatcherMetrics
from .reflector import Reflector
from .refresh import SETTING, RefreshPlan, plan_refresh
from .settings import WatcherSettings
from .stream import CLAIMS, JOBS, NODES, PODS, Kind, ResourceStream

log = get_logger(__name__)

PUBLISH_BACKOFF = Backoff(0.2, 5.0)
"""Between tries to publish a batch's unacknowledged records (Kafka away)."""

Known = tuple[Observation, float]
"""An observation the log holds and the timestamp (epoch seconds) of its record."""


def _now() -> datetime:
    return datetime.now(UTC)


def _permission_hint(exc: KubeApiError) -> str:
    resource = exc.path.rstrip("/").split("/")[-1]
    return (
        f"the API server denied {exc.verb} {exc.path} (403): grant the watcher's service account "
        f"get, list and watch on {resource} ({exc.message})"
    )


class Watcher:
    def __init__(
        self,
        api: client.ApiClient,
        kafka: KafkaSettings,
        settings: WatcherSettings,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.api = api
        self.kafka = kafka
        self.settings = settings
        self.names = TopicNames(kafka.topic_prefix)
        self.registry = registry or CollectorRegistry()
        self.metrics = WatcherMetrics(self.registry)
        self.source = f"/jobreaper/watcher/{settings.identity}"
        self.elector = LeaderElector(
            api,
            LeaseSettings.scaled(
                settings.lease_namespace,
                settings.lease_name,
                settings.identity,
                settings.lease_duration_s,
            ),
        )
        self._stopping = asyncio.Event()
        self._streams: list[tuple[ResourceStream[Any], Reflector]] = []
        self._synced: set[int] = set()
        self._queue: asyncio.Queue[Observation] = asyncio.Queue(settings.queue_size)
        self.warner: AnnotationWarner | None = (
            AnnotationWarner(
                kube_post(api),
                self.metrics,
                settings.identity,
                queue_size=settings.events_queue_size,
                remembered=settings.events_remembered,
            )
            if settings.events
            else None
        )
        self.last_error: str | None = None
        self.published = 0
        self.refresh_plan: RefreshPlan | None = None
        self.claims = ClaimModes()
        """The claims' access modes, put on the pods' observations (:mod:`.claims`)."""

    # -- the service protocol -------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def readiness(self) -> tuple[bool, str]:
        if not self.elector.is_leader:
            return True, f"standby: {self.elector.settings.name} is held by another replica"
        if self.last_error and len(self._synced) < len(self._streams):
            return False, f"not synced: {self.last_error}"
        if not self._streams or len(self._synced) < len(self._streams):
            return False, f"listing: {len(self._synced)}/{len(self._streams) or '?'} streams synced"
        return True, f"leader, {len(self._streams)} streams watched, {self.published} published"

    async def run(self) -> None:
        await until_stopped(self.elector.run(self._lead), self._stopping)

    # -- leading ----------------------------------------------------------------

    async def _lead(self) -> None:
        """Cycles until stopped; a failed cycle is retried with capped backoff."""
        self.metrics.leader.set(1)
        try:
            await retry_until_stopped(
                self._cycle,
                stopping=self._stopping,
                on_failure=self._failed,
                retryable=(KubeApiError, KafkaError, OSError, TimeoutError),
            )
        finally:
            self.metrics.leader.set(0)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, KubeApiError) and exc.status in (401, 403):
            raise PermissionDenied(_permission_hint(exc)) from exc
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._synced.clear()
        log.warning("watcher.cycle_failed", error=self.last_error)

    async def _cycle(self) -> None:
        if self.kafka.create_topics:
            await ensure_topics(self.kafka, job_partitions=self.kafka.job_partitions)
        plan = self.refresh_plan = await self._plan_refresh()
        known = await self._read_log()
        claim_streams = self._claim_streams()
        for stream in claim_streams:  # before the pods, which carry their claims' modes
            self.claims.on_list(stream.namespace, await stream.list())
        self._streams = self._make_streams(known)
        self._synced.clear()
        self._queue = asyncio.Queue(self.settings.queue_size)
        producer = make_producer(
            self.kafka, client_id=f"jobreaper-watcher-{self.settings.identity}"
        )
        await producer.start()
        try:
            async with Supervisor(self._stopping) as tasks:
                tasks.start(self._publish(producer), name="publisher")
                reflectors = [
                    tasks.start(self._reflect(i, stream, reflector), name=f"reflect-{i}")
                    for i, (stream, reflector) in enumerate(self._streams)
                ]
                reflectors.extend(
                    tasks.start(self._watch_claims(s), name=f"claims-{i}")
                    for i, s in enumerate(claim_streams)
                )
                if plan.after_s is not None:
                    reflectors.append(tasks.start(self._refresh(plan), name="refresher"))
                if self.warner is not None:
                    # A warning never stops publishing: its end ends nothing.
                    tasks.start(self.warner.run(), name="annotation-events", ends_all=False)
                if await tasks.wait():  # stopping; a failed task fails the cycle
                    await self._drain(reflectors)
        finally:
            await producer.stop()  # flushes what was sent but not yet acknowledged

    async def _drain(self, reflectors: list[asyncio.Task[None]]) -> None:
        """On stop: no new changes (nor refreshes: ``reflectors`` holds the refresher
        too); publish what is queued (bounded wait)."""
        for task in reflectors:
            task.cancel()
        await asyncio.gather(*reflectors, return_exceptions=True)
        try:
            async with asyncio.timeout(20):
                await self._queue.join()
        except TimeoutError:
            log.warning("watcher.drain_timeout", left=self._queue.qsize())

    # -- reading the log ----------------------------------------------------------

    async def _plan_refresh(self) -> RefreshPlan:
        """The refresh age, from the topics' retention (read now: an operator may have
        changed it) and the setting; a setting not below the retention stops the watcher."""
        topics = [self.names(K8S_OBJECTS), self.names(K8S_NODES)]
        retentions = None
        try:
            retentions = list((await describe_retention(self.kafka, topics)).values())
        except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
            if self.settings.refresh_after_s is None:
                raise PermissionDenied(
                    f"Kafka refused to describe the configs of {', '.join(topics)} ({exc}): "
                    f"grant DescribeConfigs on them, or set {SETTING} below their retention.ms"
                ) from exc
        plan = plan_refresh(retentions, self.settings.refresh_after_s, self.settings.refresh_rate)
        for warning in plan.warnings:
            log.warning("watcher.refresh_warning", detail=warning)
        log.info("watcher.refresh_plan", **plan.describe())
        self.metrics.refresh_after.set(plan.after_s or 0)
        return plan

    async def _read_log(self) -> list[Known]:
        """The last observation of every object the log says exists, with the timestamp
        of its record."""
        latest: dict[tuple[str, str], Known] = {}
        undecodable = 0

        def fold(record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal undecodable
            try:
                message = CODEC.decode(
                    record.headers, record.value, self.names.strip(record.topic)
                ).message
            except DecodeError:
                undecodable += 1
                return
            if isinstance(message, PodObserved | JobObserved | NodeObserved):
                key = (type(message).__name__, message.uid)
                if message.change in DELETED_CHANGES:
                    latest.pop(key, None)
                else:
                    latest[key] = (message, record.timestamp / 1000)

        await read_topics_to_end(
            self.kafka,
            [self.names(K8S_OBJECTS), self.names(K8S_NODES)],
            fold,
            client_id=f"jobreaper-watcher-{self.settings.identity}",
        )
        if undecodable:
            log.warning("watcher.log_undecodable", records=undecodable)
        log.info("watcher.log_read", objects=len(latest))
        return list(latest.values())

    def _claim_streams(self) -> list[ResourceStream[Any]]:
        """The PersistentVolumeClaims of the watched namespaces (all: one stream)."""
        s = self.settings
        scopes: list[str | None] = list(s.namespaces) or [None]
        return [
            ResourceStream(self.api, CLAIMS, namespace=namespace, watch_timeout_s=s.watch_timeout_s)
            for namespace in scopes
        ]

    async def _watch_claims(self, stream: ResourceStream[Any]) -> None:
        """Keep the claims' access modes current; on ``410 Gone`` list them all again."""
        while True:
            try:
                async for event in stream.watch():
                    self.claims.on_event(event.type, event.obj)
            except Gone as exc:
                log.info("watcher.gone", kind=CLAIMS.name, detail=str(exc))
                self.claims.on_list(stream.namespace, await stream.list())

    def _make_streams(self, known: Iterable[Known]) -> list[tuple[ResourceStream[Any], Reflector]]:
        s = self.settings
        scopes: list[str | None] = list(s.namespaces) or [None]
        pod_selector = ",".join(x for x in (s.pod_label_selector, s.label_selector) if x)
        by_kind: dict[type[Any], list[Observation]] = {wire.Pod: [], wire.Job: [], wire.Node: []}
        published_at: dict[str, float] = {}
        for obs, at in known:
            published_at[obs.uid] = at
            if isinstance(obs, PodObserved):
                by_kind[wire.Pod].append(obs)
            elif isinstance(obs, JobObserved):
                by_kind[wire.Job].append(obs)
            else:
                by_kind[wire.Node].append(obs)

        def in_scope(obs: Observation, namespace: str | None) -> bool:
            return namespace is None or getattr(obs, "namespace", None) == namespace

        streams: list[tuple[ResourceStream[Any], Reflector]] = []
        kinds: list[tuple[Kind[Any], str | None]] = [(JOBS, s.label_selector), (PODS, pod_selector)]
        for kind, selector in kinds:
            for namespace in scopes:
                stream: ResourceStream[Any] = ResourceStream(
                    self.api,
                    kind,
                    namespace=namespace,
                    label_selector=selector or None,
                    watch_timeout_s=s.watch_timeout_s,
                )
                seed = [o for o in by_kind[kind.object_type] if in_scope(o, namespace)]
                convert = self._convert_pod if kind is PODS else None
                reflector = Reflector(kind.object_type, seed, published_at, convert)
                streams.append((stream, reflector))
        node_stream: ResourceStream[Any] = ResourceStream(
            self.api, NODES, watch_timeout_s=s.watch_timeout_s
        )
        streams.append((node_stream, Reflector(wire.Node, by_kind[wire.Node], published_at)))
        return streams

    def _convert_pod(
        self, pod: wire.Pod, change: Any, observed_at: datetime, version: str | None
    ) -> Observation | None:
        return pod_observation(pod, change, observed_at, version, self.claims.claims_of)

    # -- watching -------------------------------------------------------------------

    async def _reflect(self, index: int, stream: ResourceStream[Any], reflector: Reflector) -> None:
        kind = stream.kind.name
        while True:
            items = await stream.list()
            self.metrics.relists.labels(kind).inc()
            self.metrics.observed.labels(kind).inc(len(items))
            listed_changes = reflector.on_list(items, stream.resource_version, _now())
            if self.warner is not None:
                # Every object, changed or not: a warning lost (a full queue, a failed
                # Event, another leader's last moments) is given again; one told is not.
                self.warner.check_all(reflector.store.values())
            for listed in listed_changes:
                await self._queue.put(listed)
            await self._queue.join()
            self._synced.add(index)
            self.last_error = None
            log.info("watcher.synced", kind=kind, namespace=stream.namespace, objects=len(items))
            restarts, malformed = stream.stats.restarts, stream.stats.malformed
            try:
                async for event in stream.watch():
                    self.metrics.observed.labels(kind).inc()
                    before = reflector.stats.dropped_unchanged, reflector.stats.malformed
                    observation = reflector.on_event(event.type, event.obj, _now())
                    if observation is not None:
                        if self.warner is not None:
                            self.warner.check(observation)
                        await self._queue.put(observation)
                        self.metrics.queue_depth.set(self._queue.qsize())
                    elif reflector.stats.dropped_unchanged > before[0]:
                        self.metrics.dropped.labels(kind, "unchanged").inc()
                    elif reflector.stats.malformed > before[1]:
                        self.metrics.dropped.labels(kind, "malformed").inc()
                    if stream.stats.restarts != restarts:
                        self.metrics.watch_restarts.labels(kind).inc(
                            stream.stats.restarts - restarts
                        )
                        restarts = stream.stats.restarts
                    if stream.stats.malformed != malformed:
                        self.metrics.dropped.labels(kind, "malformed").inc(
                            stream.stats.malformed - malformed
                        )
                        malformed = stream.stats.malformed
            except Gone as exc:
                self.metrics.expired.labels(kind).inc()
                log.info("watcher.gone", kind=kind, namespace=stream.namespace, detail=str(exc))

    # -- refreshing -----------------------------------------------------------------

    async def _refresh(self, plan: RefreshPlan) -> None:
        """Every sweep interval, publish again what is due (see :mod:`.refresh`)."""
        assert plan.after_s is not None
        while True:
            started = time.monotonic()
            await self._sweep(plan.after_s, plan.rate, plan.sweep_s)
            await asyncio.sleep(max(0.0, plan.sweep_s - (time.monotonic() - started)))

    async def _sweep(self, after_s: float, rate: float, sweep_s: float) -> int:
        """Publish again, oldest first, the objects of synced streams whose newest record
        is ``after_s`` old, at most ``rate`` per second and ``rate * sweep_s`` in all (the
        rest waits for the next sweep). Returns how many were queued."""
        now = time.time()
        cutoff = now - after_s
        due: list[tuple[float, str, int]] = []
        oldest: float | None = None
        for index, (_, reflector) in enumerate(self._streams):
            if index not in self._synced:
                continue  # its store is the log's, not yet the cluster's: list first
            due.extend((at, uid, index) for at, uid in reflector.due(cutoff))
            first = reflector.oldest()
            if first is not None and (oldest is None or first < oldest):
                oldest = first
        self.metrics.oldest_record_age.set(0 if oldest is None else max(0.0, now - oldest))
        self.metrics.refresh_due.set(len(due))
        budget = max(1, math.ceil(rate * sweep_s))
        chunk = max(1, math.ceil(rate / 10))
        queued = 0
        for _, uid, index in heapq.nsmallest(budget, due):
            if queued and queued % chunk == 0:
                await asyncio.sleep(chunk / rate)
            _, reflector = self._streams[index]
            observation = reflector.refresh(uid, cutoff, time.time())
            if observation is None:
                continue  # changed (so published) or gone since the sweep began
            await self._queue.put(observation)
            queued += 1
        if queued:
            log.debug("watcher.refreshed", objects=queued, due=len(due))
        return queued

    # -- publishing -----------------------------------------------------------------

    async def _publish(self, producer: AIOKafkaProducer) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.settings.publish_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._send(producer, batch)
            for _ in batch:
                self._queue.task_done()
            self.metrics.queue_depth.set(self._queue.qsize())

    async def _send(self, producer: AIOKafkaProducer, batch: list[Observation]) -> None:
        records = [outgoing(self.names, obs, source=self.source) for obs in batch]
        start = 0
        delays = PUBLISH_BACKOFF.delays()
        while True:
            first_failed = await self._send_from(producer, records, start)
            if first_failed is None:
                break
            self.metrics.publish_retries.inc()
            delay = delays.next()
            log.warning(
                "watcher.publish_retry", unsent=len(records) - first_failed, retry_in_s=delay
            )
            start = first_failed
            await asyncio.sleep(delay)
        acked = time.time()
        for obs in batch:
            self.metrics.published.labels(type(obs).__name__, obs.change).inc()
            if obs.change != "refreshed":  # a refresh carries the original's observed_at
                self.metrics.publish_latency.observe(max(0.0, acked - obs.observed_at.timestamp()))
        self.published += len(batch)

    async def _send_from(
        self, producer: AIOKafkaProducer, records: list[OutgoingRecord], start: int
    ) -> int | None:
        """Send ``records[start:]``; the index of the first unacknowledged one, or None."""
        futures: list[asyncio.Future[Any]] = []
        try:
            for record in records[start:]:
                futures.append(await send_record(producer, record))
        except KafkaError as exc:
            log.warning("watcher.send_failed", error=str(exc))
        results = await asyncio.gather(*futures, return_exceptions=True)
        for offset, result in enumerate(results):
            if isinstance(result, BaseException):
                log.warning("watcher.not_acknowledged", error=str(result))
                return start + offset
        if len(futures) < len(records) - start:
            return start + len(futures)
        return None
