"""The config service: one source -> validation -> versioned snapshots on ``config``.

**Reading.** Every replica tails the compacted ``config`` topic
(read_committed, no group) from the beginning: the newest version is the
configuration in force (the *head*; version 0 = the built-in defaults).
``GET /config`` answers from it on any replica.

**Writing.** One replica writes: the holder of the Lease (``lease=true``),
and only while it holds the Kafka transactional id
``<transactional_id>.<topic prefix>``. Taking the id (``init_transactions``)
fences any earlier holder: the broker refuses that producer's transactions
from then on, and completes or aborts the one it had open. *After* taking
it the writer reads the topic to its end again, so its head is the newest
committed version and ``head + 1`` cannot exist yet. The Lease makes one
replica the writer in the normal case (no ping-pong of fencing); the
transactional id makes a stale writer harmless whatever the clocks do (a
paused process that still believes it holds the Lease cannot commit).

**Publishing.** A change is validated first (every problem at once; a
rejected one publishes nothing and the head stays in force), then planned
against the head (stale ``If-Match``: 409; same digest: nothing new;
otherwise version ``head + 1`` with a diff), then written in one
transaction. Any failure of the producer (fenced, Kafka gone, an unknown
commit outcome) drops the writer: the next one re-fences and re-reads, so
an ambiguous commit can never make a version reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.topics import CONFIG
from services.runtime.kafka import (
    ensure_topics,
    make_consumer,
    make_producer,
    read_partitions_to_end,
    read_to_end,
    send_in_transaction,
)
from services.runtime.kafka import topic_partitions as list_partitions
from services.runtime.kube import KubeApiError
from services.runtime.kube_auth import (
    KubeAuthorizer,
    Permission,
    api_reviewer,
    missing_review_permissions,
)
from services.runtime.lease import LeaderElector, LeaseSettings
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC, outgoing
from services.runtime.retry import retry_until_stopped
from services.runtime.settings import KafkaSettings
from services.runtime.tasks import Supervisor
from services.runtime.topics import TopicNames

from .api import ConfigApi
from .metrics import ConfigMetrics
from .settings import WRITE_GROUP, WRITE_RESOURCE, WRITE_VERB, ConfigServiceSettings
from .sources import ConfigMapSource, Content, FileSource
from .validation import Issue, Report, validate_text
from .versioning import Head, IfMatch, make_snapshot, plan

log = get_logger(__name__)

Result = Literal["published", "unchanged", "rejected", "stale", "not_writer"]


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted change."""

    result: Result
    head: Head
    report: Report | None = None
    snapshot: ConfigSnapshot | None = None
    detail: str = ""


class WriterLost(Exception):
    """The producer can no longer be trusted (fenced, or a commit with no clear outcome)."""


@dataclass
class _Tail:
    """What this replica has read of the topic."""

    history: list[ConfigSnapshot] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)
    duplicates: int = 0
    read: bool = False


class ConfigService:
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ConfigServiceSettings,
        *,
        api: client.ApiClient | None = None,
        registry: CollectorRegistry | None = None,
        history_size: int = 1000,
        authorizer: KubeAuthorizer | None = None,
    ) -> None:
        needs_api = (
            settings.source == "configmap"
            or settings.lease
            or (settings.authenticates_writes and authorizer is None)
        )
        if needs_api and api is None:
            raise ValueError(
                "source=configmap, lease=true and source=http with api_auth=kubernetes "
                "(TokenReview, SubjectAccessReview) need a Kubernetes API client"
            )
        self.kafka = kafka
        self.settings = settings
        self.api = api
        self.names = TopicNames(kafka.topic_prefix)
        self.topic = self.names(CONFIG)
        self.registry = registry or CollectorRegistry()
        self.metrics = ConfigMetrics(self.registry)
        self.source_uri = f"/jobreaper/config/{settings.identity}"
        self.head = Head.of(None)
        self.tail = _Tail()
        self.history_size = history_size
        self.last_rejection: Report | None = None
        self.last_error: str | None = None
        self.authorizer: KubeAuthorizer | None = None
        """Who may PUT /config; None when PUT is refused anyway (source is not http)
        or accepted from anyone (api_auth=none)."""
        if settings.authenticates_writes:
            if authorizer is None:
                assert api is not None
                authorizer = KubeAuthorizer(
                    api_reviewer(api),
                    write_permission(settings),
                    audiences=settings.api_auth_audiences,
                    cache_s=settings.api_auth_cache_s,
                )
            self.authorizer = authorizer
        self.http = ConfigApi(self)
        self.elector: LeaderElector | None = None
        if settings.lease:
            assert api is not None
            self.elector = LeaderElector(
                api,
                LeaseSettings.scaled(
                    settings.lease_namespace,
                    settings.lease_name,
                    settings.identity,
                    settings.lease_duration_s,
                ),
            )
        self.configmap: ConfigMapSource | None = None
        self._source_loaded = settings.source == "http"
        self._source_detail = "waiting for the source"
        self._writer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._partitions: list[TopicPartition] = []

    # -- the service protocol ---------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    @property
    def is_writer(self) -> bool:
        return self._writer is not None

    def readiness(self) -> tuple[bool, str]:
        ready, detail = self._readiness()
        if self.settings.source == "http" and self.settings.api_auth == "none":
            detail += " (PUT /config is NOT authenticated: api_auth=none)"
        return ready, detail

    def _readiness(self) -> tuple[bool, str]:
        version = self.head.version
        if not self.tail.read:
            return False, "reading the config topic"
        if self.elector is not None and not self.elector.is_leader:
            return True, f"standby (not holding the Lease): version {version} in force"
        if self._writer is None:
            return False, f"becoming the writer ({self.last_error or 'fencing, reading'})"
        if not self._source_loaded:
            return False, f"{self._source_detail}; version {version} stays in force"
        detail = f"writer ({self.settings.source}), version {version} in force"
        if self.last_rejection is not None:
            detail += (
                f"; the source's current content is rejected: {self.last_rejection.summary(2)}"
            )
        return True, detail

    async def run(self) -> None:
        if self.kafka.create_topics:
            await ensure_topics(self.kafka, job_partitions=self.kafka.job_partitions)
        self._partitions = await list_partitions(self.kafka, [self.topic])
        if not self._partitions:
            raise RuntimeError(f"topic {self.topic} does not exist (create it: jobreaper topics)")
        await self._announce_auth()
        consumer = make_consumer(
            self.kafka, client_id=f"jobreaper-config-{self.settings.identity}", group_id=None
        )
        await consumer.start()
        await self.http.start(self.settings.api_host, self.settings.api_port)
        try:
            await read_to_end(consumer, self._partitions, self._on_tail)
            self.tail.read = True
            log.info("config.topic_read", version=self.head.version, records=len(self.tail.history))
            lead: Coroutine[Any, Any, None] = (
                self.elector.run(self._lead) if self.elector is not None else self._lead()
            )
            # A task that ends by itself ends the service, with its error.
            async with Supervisor(self._stopping) as tasks:
                tasks.start(self._follow(consumer), name="config-tail")
                tasks.start(lead, name="config-lead")
                await tasks.wait()
        finally:
            await self._drop_writer()
            await self.http.stop()
            await consumer.stop()

    async def _announce_auth(self) -> None:
        """Say who may write, and loudly when anyone may or when nobody can be checked."""
        s = self.settings
        if s.source != "http":
            return
        if s.api_auth == "none":
            log.warning(
                "config.api_auth_disabled",
                detail=f"PUT /config on {s.api_host}:{s.api_port} accepts a new configuration "
                "from ANY local caller, unauthenticated (JOBREAPER_CONFIG_API_AUTH=none): for "
                "local development only, never in a cluster",
            )
            return
        assert self.authorizer is not None
        log.info(
            "config.api_auth",
            needs=f"a bearer token whose user may {self.authorizer.permission}",
            audiences=list(self.authorizer.audiences) or "the API server's",
        )
        try:
            missing = await missing_review_permissions(self.authorizer.review)
        except (KubeApiError, OSError, TimeoutError, ValueError) as exc:
            log.warning("config.api_auth_check_failed", error=str(exc))
            return
        if missing:
            log.error(
                "config.api_auth_permission_missing",
                missing_permission=missing,
                effect="every PUT /config will be answered 503: this service cannot check "
                "who sends it (bind the ClusterRole jobreaper-config-auth or "
                "system:auth-delegator to its ServiceAccount)",
            )

    # -- reading the topic ----------------------------------------------------------

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> ConfigSnapshot | None:
        try:
            message = CODEC.decode(record.headers, record.value, CONFIG).message
        except DecodeError as exc:
            log.warning("config.undecodable", offset=record.offset, reason=exc.reason)
            return None
        return message if isinstance(message, ConfigSnapshot) else None

    def _on_tail(self, record: ConsumerRecord[bytes, bytes]) -> None:
        snapshot = self._decode(record)
        if snapshot is None:
            return
        if snapshot.version in self.tail.versions:
            self.tail.duplicates += 1
            log.error("config.duplicate_version", version=snapshot.version, offset=record.offset)
        self.tail.versions.add(snapshot.version)
        self.tail.history.append(snapshot)
        del self.tail.history[: -self.history_size]
        self.head = self.head.fold(snapshot)
        self.metrics.version.set(self.head.version)

    async def _follow(self, consumer: Any) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    self._on_tail(record)

    async def _read_head(self) -> None:
        """Read the topic to its end with a fresh consumer: the newest committed version."""

        def fold(record: ConsumerRecord[bytes, bytes]) -> None:
            snapshot = self._decode(record)
            if snapshot is not None:
                self.head = self.head.fold(snapshot)

        await read_partitions_to_end(
            self.kafka,
            self._partitions,
            fold,
            client_id=f"jobreaper-config-{self.settings.identity}",
        )
        self.metrics.version.set(self.head.version)

    # -- writing ----------------------------------------------------------------------

    async def _lead(self) -> None:
        """While we may lead: take the writer role, run the source; again after a failure."""
        self.metrics.leader.set(1)
        try:
            await retry_until_stopped(
                self._write,
                stopping=self._stopping,
                on_failure=self._lead_failed,
                retryable=(WriterLost, KafkaError, KubeApiError, OSError, TimeoutError),
                max_delay_s=self.settings.retry_max_s,
            )
        finally:
            self.metrics.leader.set(0)

    async def _write(self) -> None:
        """One turn as the writer: until the source or the writer role fails."""
        try:
            await self._become_writer()
            self.last_error = None
            await self._run_source()
        finally:
            await self._drop_writer()

    def _lead_failed(self, exc: Exception) -> None:
        if isinstance(exc, WriterLost):
            self.metrics.fenced.inc()
            self.last_error = f"writer lost: {exc}"
            log.warning("config.writer_lost", error=str(exc))
        else:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("config.lead_failed", error=self.last_error)

    async def _become_writer(self) -> None:
        producer = make_producer(
            self.kafka,
            client_id=f"jobreaper-config-{self.settings.identity}",
            transactional_id=writer_transactional_id(self.settings, self.kafka.topic_prefix),
        )
        try:
            await producer.start()  # init_transactions: fences every earlier holder of the id
            await self._read_head()  # after fencing: nothing newer can commit behind our back
        except BaseException:
            await producer.stop()
            raise
        async with self._lock:
            self._writer = producer
            self._lost.clear()
        log.info("config.writer", version=self.head.version, identity=self.settings.identity)

    async def _drop_writer(self) -> None:
        async with self._lock:
            producer, self._writer = self._writer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await producer.stop()
            _retrieve_transaction_error(producer)

    async def _run_source(self) -> None:
        """Feed the source's changes in until the writer is lost or the service stops."""
        async with Supervisor(self._stopping) as tasks:
            tasks.start(self._feed(), name="config-source")
            lost = tasks.start(self._lost.wait(), name="config-writer-lost")
            await tasks.wait()
            if lost.done():
                raise WriterLost(self.last_error or "the producer failed")

    async def _feed(self) -> None:
        s = self.settings
        if s.source == "http":
            await asyncio.Event().wait()  # PUT /config submits; nothing to read
        elif s.source == "file":
            assert s.file is not None
            async for content in FileSource(s.file, poll_s=s.file_poll_s).changes():
                await self._from_source(content)
        else:
            assert self.api is not None
            self.configmap = ConfigMapSource(
                self.api, s.configmap_namespace, s.configmap_name, s.configmap_key
            )
            async for content in self.configmap.changes():
                await self._from_source(content)

    async def _from_source(self, content: Content) -> None:
        if content.text is None and not content.involved:
            # Absent: the version in force stays (deleting the ConfigMap is no "reset").
            self._source_loaded = False
            self._source_detail = content.problem or "no content"
            log.warning("config.source_missing", origin=content.origin, detail=content.problem)
            return
        self._source_loaded = True
        report = (
            validate_text(content.text)
            if content.text is not None
            else Report(None, (Issue("$", "required", content.problem or "no content"),))
        )
        outcome = await self.submit(
            report, author=content.author, origin=content.origin, kind=self.settings.source
        )
        if outcome.result == "not_writer":
            raise WriterLost(outcome.detail)
        if self.configmap is None or not self.settings.events:
            return
        if outcome.result == "rejected":
            await self.configmap.post_event(
                content,
                reason="ConfigRejected",
                message=f"not published, version {outcome.head.version} stays in force: "
                + report.summary(),
                warning=True,
                reporter=self.settings.identity,
            )
        elif outcome.result == "published" and outcome.snapshot is not None:
            changes = "; ".join(outcome.snapshot.diff) or "no change"
            await self.configmap.post_event(
                content,
                reason="ConfigPublished",
                message=f"published as version {outcome.snapshot.version}: {changes}",
                warning=False,
                reporter=self.settings.identity,
            )

    async def submit(
        self,
        change: Report | str | bytes,
        *,
        author: str,
        origin: str,
        kind: str,
        if_match: IfMatch | None = None,
    ) -> Outcome:
        """Validate, plan and publish one change; the head stays when it is not published."""
        started = time.monotonic()
        report = change if isinstance(change, Report) else validate_text(change)
        is_source = kind in ("configmap", "file")  # a watched source, not an HTTP request
        if not report.ok or report.config is None:
            self.metrics.changes.labels(kind, "rejected").inc()
            for issue in report.errors:
                self.metrics.validation_errors.labels(issue.code).inc()
            if is_source:
                self.last_rejection = report
                self.metrics.source_valid.set(0)
            log.warning(
                "config.rejected",
                origin=origin,
                author=author,
                version_in_force=self.head.version,
                problems=[str(issue) for issue in report.errors],
            )
            return Outcome("rejected", self.head, report)
        async with self._lock:
            writer = self._writer
            if writer is None:
                return Outcome("not_writer", self.head, report, detail=self._not_writer())
            decided = plan(self.head, report.config, if_match)
            if decided.action != "publish":
                self.metrics.changes.labels(kind, decided.action).inc()
                if is_source:
                    self.last_rejection = None
                    self.metrics.source_valid.set(1)
                return Outcome(decided.action, self.head, report)
            snapshot = make_snapshot(
                decided, report.config, author=author, source=origin, at=datetime.now(UTC)
            )
            record = outgoing(
                self.names,
                snapshot,
                source=self.source_uri,
                event_id=f"{self.kafka.topic_prefix}config-v{snapshot.version}",
                time=snapshot.changed_at,
            )
            try:
                await send_in_transaction(writer, [record])
            except Exception as exc:  # any doubt about the commit: the writer must re-fence
                self.last_error = f"publishing version {snapshot.version}: {exc!r}"
                self._lost.set()
                return Outcome("not_writer", self.head, report, detail=self.last_error)
            self.head = self.head.fold(snapshot)
        self.metrics.version.set(self.head.version)
        self.metrics.changes.labels(kind, "published").inc()
        self.metrics.publish_seconds.observe(time.monotonic() - started)
        if is_source:
            self.last_rejection = None
            self.metrics.source_valid.set(1)
        log.info(
            "config.published",
            version=snapshot.version,
            author=author,
            origin=origin,
            diff=list(snapshot.diff),
            warnings=[str(w) for w in report.warnings],
        )
        return Outcome("published", self.head, report, snapshot)

    def _not_writer(self) -> str:
        if self.elector is not None and not self.elector.is_leader:
            return "this replica is a standby; the Lease holder writes"
        return f"the writer is not ready ({self.last_error or 'fencing, reading the topic'})"


def writer_transactional_id(settings: ConfigServiceSettings, topic_prefix: str) -> str:
    """The one writer's transactional id: taking it fences every earlier writer."""
    return f"{settings.transactional_id}.{topic_prefix}"


def write_permission(settings: ConfigServiceSettings) -> Permission:
    """What a caller of PUT /config must be allowed (SubjectAccessReview)."""
    return Permission(
        verb=WRITE_VERB,
        group=WRITE_GROUP,
        resource=WRITE_RESOURCE,
        namespace=settings.api_auth_namespace,
    )


def _retrieve_transaction_error(producer: AIOKafkaProducer) -> None:
    """Mark the futures a fenced producer failed as seen (aiokafka internals, best effort).

    When its sender dies of ``ProducerFenced``, aiokafka sets the error on
    the transaction waiter and on each pending batch's drain waiter, which
    nobody awaits once the error has reached us; asyncio would then log
    "Future exception was never retrieved" from a finalizer whenever the
    garbage collector runs. We have handled the error: the writer is dropped.
    """
    manager = getattr(producer, "_txn_manager", None)
    futures: list[Any] = [getattr(manager, "_transaction_waiter", None)]
    accumulator = getattr(producer, "_message_accumulator", None)
    batches = [
        *(b for queue in getattr(accumulator, "_batches", {}).values() for b in queue),
        *getattr(accumulator, "_pending_batches", ()),
    ]
    futures += [getattr(batch, "_drain_waiter", None) for batch in batches]
    futures += [getattr(batch, "future", None) for batch in batches]
    for future in futures:
        if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
            future.exception()
