"""The whole of jobreaper on the real stack: watcher, killer and executor in this
process, on the test's namespace and topics, with a configuration the test chooses."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.commands import CommandApplied, CommandIssued
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    JobKilled,
    KillStarted,
    KillStep,
)
from services.executor.service import Executor
from services.executor.settings import ExecutorSettings
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.kube import load_api_client
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings
from tests.integration.helpers import (
    eventually,
    issued,
    job_metadata_writes,
    job_status_writes,
    messages,
    pod_creations,
    pod_writes,
)

PARTITIONS = 3

T = TypeVar("T")


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class System:
    def __init__(self, stack: StackInfo, namespace: str, prefix: str) -> None:
        self.stack = stack
        self.namespace = namespace
        self.namespaces = [namespace]  # a test may add more before start()
        self.prefix = prefix
        self.kafka = KafkaSettings(
            bootstrap=stack.kafka_bootstrap, topic_prefix=prefix, job_partitions=PARTITIONS
        )
        self.names = TopicNames(prefix)
        self.run_id = uuid.uuid4().hex[:8]
        self.version = 0
        self._running: list[tuple[Any, asyncio.Task[None]]] = []
        self._clients: list[client.ApiClient] = []

    async def start(self, *, executor: bool = True, killer: bool = True, **config: Any) -> None:
        """Publish ``config`` (Furiko key names) as version 1, then start the services
        (the executor later, with :meth:`start_executor`, if ``executor`` is False)."""
        await ensure_topics(self.kafka, job_partitions=PARTITIONS)
        await self.configure(**config)
        api = await self._api()
        watcher = Watcher(
            api,
            self.kafka,
            WatcherSettings(
                namespaces=self.namespaces,
                lease_namespace=self.namespace,
                identity=f"w-{self.run_id}",
            ),
        )
        await self._launch(watcher)
        if killer:
            await self._launch(
                Killer(
                    self.kafka,
                    KillerServiceSettings(
                        group_id=f"killer-{self.run_id}", identity=f"k-{self.run_id}"
                    ),
                )
            )
        if executor:
            await self.start_executor()

    async def start_executor(self) -> None:
        await self._launch(
            Executor(
                await self._api(),
                self.kafka,
                ExecutorSettings(
                    group_id=f"executor-{self.run_id}",
                    transactional_id_prefix=f"executor-{self.run_id}",
                    identity=f"e-{self.run_id}",
                ),
            )
        )

    def service(self, kind: type[T]) -> T:
        """The running service of this type (the first one started)."""
        for service, _ in self._running:
            if isinstance(service, kind):
                return service
        raise LookupError(f"no {kind.__name__} running")

    async def _launch(self, service: Any) -> None:
        task = asyncio.create_task(service.run())
        self._running.append((service, task))
        await eventually(f"{type(service).__name__} ready", lambda: _ready(service, task))

    async def _api(self) -> client.ApiClient:
        api = await load_api_client(str(self.stack.kubeconfig))
        self._clients.append(api)
        return api

    async def configure(self, **config: Any) -> int:
        """Publish a new config version (as the config service would)."""
        self.version += 1
        snapshot = ConfigSnapshot(
            version=self.version,
            config=KillerConfig.model_validate(config),
            author="e2e",
            changed_at=datetime.now(UTC),
        )
        producer = make_producer(self.kafka, client_id="e2e-config")
        await producer.start()
        try:
            record = outgoing(self.names, snapshot, source="/e2e")
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=record.headers
            )
        finally:
            await producer.stop()
        return self.version

    async def stop(self) -> None:
        """Ask every service to stop; cancel what has not stopped after 30 s. Never
        waits on a cancellation for long: a hung teardown must not hang the suite."""
        for service, _ in self._running:
            service.stop()
        tasks = [task for _, task in self._running]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                names = [type(s).__name__ for s, t in self._running if t in pending]
                print(f"services that did not stop within 30 s: {names}")
        for api in self._clients:
            await api.close()

    # -- what happened ------------------------------------------------------------

    async def topic(self, name: str) -> list[Any]:
        return await messages(self.stack.kafka_bootstrap, self.names(name))

    async def commands(self, *, shows: bool = False) -> list[CommandIssued]:
        """The commands issued, ``annotate-job`` only with ``shows`` (``helpers.issued``)."""
        return issued(await self.topic("kill.commands"), shows=shows)

    async def results(self, *, shows: bool = False) -> list[CommandApplied]:
        """The results, of ``annotate-job`` only with ``shows`` (as :meth:`commands`)."""
        return [
            m
            for m in await self.topic("kill.results")
            if isinstance(m, CommandApplied) and (shows or m.step != "annotate-job")
        ]

    async def kill_events(
        self,
    ) -> list[KillStarted | KillStep | ForceDeletionForbidden | ForceDeletionHeld | JobKilled]:
        return list(await self.topic("kill.events"))

    async def job_killed(self, job: str, timeout: float = 60) -> JobKilled:
        async def probe() -> JobKilled | None:
            for event in await self.kill_events():
                if isinstance(event, JobKilled) and event.job_name == job:
                    return event
            return None

        return await eventually(f"JobKilled for {job}", probe, timeout=timeout)

    def writes(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The executor's pod writes, from the API server's audit log."""
        return pod_writes(self.stack.audit_log, namespace or self.namespace)

    def writes_of(self, verb: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [w for w in self.writes(namespace) if w["verb"] == verb]

    def job_writes(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The executor's Job status writes (``fail-job``), from the audit log."""
        return job_status_writes(self.stack.audit_log, namespace or self.namespace)

    def job_annotation_writes(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The executor's Job metadata writes (``annotate-job``), from the audit log."""
        return job_metadata_writes(self.stack.audit_log, namespace or self.namespace)

    def pod_creations(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every pod created in the namespace (by the Job controller), from the audit log."""
        return pod_creations(self.stack.audit_log, namespace or self.namespace)


async def _ready(service: Any, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
        raise AssertionError(f"{type(service).__name__} stopped by itself")
    ready, _ = service.readiness()
    return bool(ready)
