"""The notifier: a consumer group on ``kill.events`` and ``kill.results`` that POSTs
each alert to a webhook and commits a record's offset only once its alert was
delivered (2xx) or rejected for good (a 4xx other than 408/429).

At least once: an alert repeats only if the webhook accepted it and then, before
the offset commit that follows, the notifier died or its partition moved to
another member (a rebalance). A repeat carries the same ``alert_id``.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry

from schemas.cloudevents import DecodeError
from schemas.topics import KILL_EVENTS, KILL_RESULTS
from services.runtime.kafka import ensure_topics, make_consumer
from services.runtime.logging import get_logger
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from services.runtime.tasks import until_stopped
from services.runtime.topics import TopicNames

from .alerts import Alert, alert_for
from .metrics import NotifyMetrics
from .settings import NotifySettings
from .webhook import WebhookBackoff, deliver, endpoint

log = get_logger(__name__)


class Notifier:
    def __init__(
        self,
        kafka: KafkaSettings,
        settings: NotifySettings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = NotifyMetrics(self.registry)
        names = self.names = TopicNames(kafka.topic_prefix)
        self.topics = (names(KILL_EVENTS), names(KILL_RESULTS))
        self.backoff = WebhookBackoff(
            initial_s=settings.backoff_initial_s,
            max_s=settings.backoff_max_s,
            retry_after_max_s=settings.retry_after_max_s,
        )
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    def stop(self) -> None:
        self._stopping.set()

    def readiness(self) -> tuple[bool, str]:
        consumer = self._consumer
        if consumer is None:
            return False, "starting"
        assigned = consumer.assignment()
        if not assigned:
            return False, "waiting for partitions (joining the consumer group)"
        return True, f"{len(assigned)} partitions assigned"

    async def run(self) -> None:
        if self.kafka.create_topics:
            await ensure_topics(self.kafka, job_partitions=self.kafka.job_partitions)
        log.info(
            "notify.webhook",
            endpoint=endpoint(self.settings.url),
            url_from=self.settings.origin,
            detail="the URL's path and query are a secret and are never logged",
        )
        consumer = make_consumer(
            self.kafka, *self.topics, client_id="jobreaper-notify", group_id=self.settings.group_id
        )
        await consumer.start()
        self._consumer = consumer
        try:
            async with aiohttp.ClientSession() as session:
                while not self._stopping.is_set():
                    batches = await consumer.getmany(timeout_ms=500)
                    for tp, records in batches.items():
                        if not await self._partition(consumer, session, tp, records):
                            return
        finally:
            self._consumer = None
            await consumer.stop()

    async def _partition(
        self,
        consumer: AIOKafkaConsumer,
        session: aiohttp.ClientSession,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> bool:
        """Handle one partition's batch in order; False when stopping mid-delivery."""
        for record in records:
            alert = self._alert(record)
            if alert is None:
                continue
            if not await self._deliver(session, alert):
                return False  # not committed: the alert is delivered after the restart
            await self._commit(consumer, tp, record.offset + 1)
        await self._commit(consumer, tp, records[-1].offset + 1)
        return True

    def _alert(self, record: ConsumerRecord[bytes, bytes]) -> Alert | None:
        try:
            envelope = CODEC.decode(record.headers, record.value, self.names.strip(record.topic))
        except DecodeError as exc:
            self.metrics.undecodable.inc()
            log.warning(
                "notify.undecodable",
                source=f"{record.topic}/{record.partition}@{record.offset}",
                reason=exc.reason,
            )
            return None
        return alert_for(
            envelope,
            failing_after=self.settings.failing_after,
            remind_every=self.settings.remind_every,
        )

    async def _deliver(self, session: aiohttp.ClientSession, alert: Alert) -> bool:
        """Deliver (or have rejected) ``alert``; False if the notifier stopped first."""
        answer = await until_stopped(
            deliver(
                session,
                self.settings.url,
                alert.payload(),
                self.backoff,
                timeout_s=self.settings.request_timeout_s,
                on_retry=lambda reason: self.metrics.retries.labels(reason).inc(),
            ),
            self._stopping,
        )
        if answer is None:
            return False
        verdict, status = answer
        self.metrics.alerts.labels(alert.kind, verdict).inc()
        if verdict == "rejected":
            log.error(
                "notify.rejected",
                alert_id=alert.id,
                kind=alert.kind,
                status=status,
                detail="the webhook refused the request itself; skipped, not retried",
            )
        else:
            log.info("notify.delivered", alert_id=alert.id, kind=alert.kind, status=status)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            # The partition moved (rebalance): its new owner starts from the last
            # commit and may send again what we delivered since: at least once.
            log.warning("notify.commit_failed", partition=str(tp), error=str(exc))
