"""The config service on the real stack: ConfigMap edits reach a running killer,
bad edits are refused and leave the version in force, restarts reuse no version,
and concurrent or stale writers cannot publish conflicting versions."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from typer.testing import CliRunner

from devtools.stack.api import StackInfo
from schemas.config import ConfigSnapshot
from services.config.cli import app as config_cli
from services.config.service import ConfigService
from services.config.settings import ConfigServiceSettings
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.runtime.kube import load_api_client
from services.runtime.settings import KafkaSettings
from tests.integration.helpers import eventually, messages

if TYPE_CHECKING:
    from tests.integration.config.conftest import Accounts

pytestmark = pytest.mark.stack

CM = "jobreaper-config"


class Harness:
    """In-process config services (and a killer) on the test's namespace and topics."""

    def __init__(self, stack: StackInfo, namespace: str, prefix: str) -> None:
        self.stack = stack
        self.namespace = namespace
        self.prefix = prefix
        self.kafka = KafkaSettings(
            bootstrap=stack.kafka_bootstrap, topic_prefix=prefix, job_partitions=1
        )
        self.running: list[tuple[Any, asyncio.Task[None], Any]] = []

    async def config(self, identity: str = "c1", **settings: Any) -> ConfigService:
        api = await load_api_client(str(self.stack.kubeconfig))
        values: dict[str, Any] = {
            "source": "configmap",
            "configmap_namespace": self.namespace,
            "configmap_name": CM,
            "lease_namespace": self.namespace,
            "lease_duration_s": 4.0,
            "identity": identity,
            "api_port": 0,
            **settings,
        }
        service = ConfigService(self.kafka, ConfigServiceSettings(**values), api=api)
        task = asyncio.create_task(service.run())
        self.running.append((service, task, api))
        await eventually(f"{identity} read the topic", lambda: self._read(service, task))
        return service

    async def killer(self) -> Killer:
        killer = Killer(
            self.kafka, KillerServiceSettings(group_id=f"k-{uuid.uuid4().hex[:8]}", identity="k")
        )
        task = asyncio.create_task(killer.run())
        self.running.append((killer, task, None))

        async def ready() -> bool:
            self._alive(task)
            return killer.readiness()[0]

        await eventually("killer ready", ready)
        return killer

    @staticmethod
    def _alive(task: asyncio.Task[None]) -> None:
        if task.done():
            task.result()
            raise AssertionError("the service stopped by itself")

    async def _read(self, service: ConfigService, task: asyncio.Task[None]) -> bool:
        self._alive(task)
        return service.tail.read

    async def stop(self, service: Any) -> None:
        for entry in list(self.running):
            if entry[0] is service:
                self.running.remove(entry)
                service.stop()
                await asyncio.wait_for(entry[1], 30)
                if entry[2] is not None:
                    await entry[2].close()

    async def close(self) -> None:
        for service, _, _ in list(self.running):
            await self.stop(service)

    async def snapshots(self) -> list[ConfigSnapshot]:
        found = await messages(self.stack.kafka_bootstrap, f"{self.prefix}config")
        return [m for m in found if isinstance(m, ConfigSnapshot)]

    async def versions(self, at_least: int) -> list[ConfigSnapshot]:
        async def enough() -> list[ConfigSnapshot] | None:
            found = await self.snapshots()
            return found if len(found) >= at_least else None

        return await eventually(f"{at_least} versions on the topic", enough)


@pytest_asyncio.fixture(loop_scope="session")
async def harness(stack: StackInfo, namespace: str, topic_prefix: str) -> AsyncIterator[Harness]:
    running = Harness(stack, namespace, topic_prefix)
    try:
        yield running
    finally:
        await running.close()


async def put_configmap(api: client.ApiClient, namespace: str, document: Any) -> None:
    """Create or replace the ConfigMap (a dict is dumped to JSON; a str goes as is)."""
    core = client.CoreV1Api(api)
    text = document if isinstance(document, str) else json.dumps(document)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=CM), data={"config.json": text})
    try:
        await core.replace_namespaced_config_map(CM, namespace, body)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        await core.create_namespaced_config_map(namespace, body)


async def events(api: client.ApiClient, namespace: str, reason: str) -> list[Any]:
    listed = await client.CoreV1Api(api).list_namespaced_event(namespace)
    return [e for e in listed.items if e.reason == reason and e.involved_object.name == CM]


async def test_a_configmap_edit_reaches_a_running_killer(
    harness: Harness, kube_api: client.ApiClient, namespace: str
) -> None:
    killer = await harness.killer()
    service = await harness.config()

    async def waiting_for_the_configmap() -> str | None:
        ready, detail = service.readiness()
        return detail if not ready and "not found" in detail else None

    detail = await eventually("not ready without the ConfigMap", waiting_for_the_configmap)
    assert "version 0 stays in force" in detail
    assert killer.config is None

    await put_configmap(kube_api, namespace, {"deleteKillingTasksTimeoutSeconds": 60})
    (first,) = await harness.versions(1)
    assert first.version == 1
    assert first.diff == ("deleteKillingTasksTimeoutSeconds: 180 -> 60",)
    assert first.source.startswith(f"configmap:{namespace}/{CM}@")
    assert first.author and first.author != "unknown"  # the ConfigMap's field manager
    await eventually("the killer holds version 1", lambda: _version(killer, 1))
    assert killer.config is not None
    assert killer.config.config.delete_killing_tasks_timeout_seconds == 60

    await put_configmap(
        kube_api,
        namespace,
        {
            "deleteKillingTasksTimeoutSeconds": 60,
            "overrides": {"namespaces": {"batch": {"killMethod": "delete"}}},
        },
    )
    await eventually("the killer holds version 2", lambda: _version(killer, 2))
    assert killer.config is not None
    assert killer.config.config.resolve("batch", {}).kill_method == "delete"
    assert killer.config.diff == ('overrides.namespaces.batch: added {"killMethod": "delete"}',)
    assert service.readiness()[0]
    published = await eventually(
        "a ConfigPublished Event", lambda: events(kube_api, namespace, "ConfigPublished")
    )
    assert any("version 1" in e.message for e in published)


async def _version(killer: Killer, version: int) -> bool:
    return killer.config is not None and killer.config.version == version


async def test_a_bad_edit_is_refused_and_the_old_version_stays(
    harness: Harness, kube_api: client.ApiClient, namespace: str
) -> None:
    await put_configmap(kube_api, namespace, {"killMethod": "delete"})
    service = await harness.config()
    await harness.versions(1)

    bad = {"killMethod": "kill", "forceDeleteTaskTimeoutSeconds": -1, "defaultPendingTimeout": 5}
    await put_configmap(kube_api, namespace, bad)
    (warning,) = await eventually(
        "a ConfigRejected Event", lambda: events(kube_api, namespace, "ConfigRejected")
    )
    assert warning.type == "Warning"
    assert "version 1 stays in force: 3 problems" in warning.message
    for path in ("$.killMethod", "$.forceDeleteTaskTimeoutSeconds", "$.defaultPendingTimeout"):
        assert path in warning.message
    assert 'did you mean "defaultPendingTimeoutSeconds"?' in warning.message
    metric = service.registry.get_sample_value
    assert metric("jobreaper_config_source_valid") == 0
    assert (
        metric("jobreaper_config_changes_total", {"source": "configmap", "outcome": "rejected"})
        == 1
    )
    ready, detail = service.readiness()
    assert ready and "rejected" in detail and "version 1 in force" in detail
    assert [s.version for s in await harness.snapshots()] == [1]
    assert service.head.version == 1

    await put_configmap(
        kube_api, namespace, {"killMethod": "delete", "defaultPendingTimeoutSeconds": 5}
    )
    second = (await harness.versions(2))[-1]
    assert (second.version, second.diff) == (2, ("defaultPendingTimeoutSeconds: 900 -> 5",))
    assert metric("jobreaper_config_source_valid") == 1


async def test_a_restarted_service_neither_duplicates_nor_reuses_versions(
    harness: Harness, kube_api: client.ApiClient, namespace: str
) -> None:
    await put_configmap(kube_api, namespace, {"defaultPendingTimeoutSeconds": 1})
    first = await harness.config("first")
    await harness.versions(1)
    await put_configmap(kube_api, namespace, {"defaultPendingTimeoutSeconds": 2})
    await harness.versions(2)
    await harness.stop(first)  # releases the Lease: the next replica leads at once

    second = await harness.config("second")
    await eventually("second is the writer and ready", lambda: _ready(second))
    assert second.head.version == 2
    assert (
        second.registry.get_sample_value(
            "jobreaper_config_changes_total", {"source": "configmap", "outcome": "unchanged"}
        )
        == 1
    ), "the same ConfigMap content, read again, publishes nothing"
    await put_configmap(kube_api, namespace, {"defaultPendingTimeoutSeconds": 3})
    await harness.versions(3)
    snapshots = await harness.snapshots()
    assert [s.version for s in snapshots] == [1, 2, 3]
    assert [s.config.default_pending_timeout_seconds for s in snapshots] == [1, 2, 3]
    assert second.tail.duplicates == 0


async def _ready(service: ConfigService) -> bool:
    return service.readiness()[0] and service.is_writer


async def test_concurrent_puts_one_wins_and_a_fenced_writer_cannot_publish(
    harness: Harness, accounts: Accounts, namespace: str, tmp_path: Path
) -> None:
    http = {"source": "http", "lease": False, "api_auth_namespace": namespace}
    one = await harness.config("one", **http)
    await eventually("one is the writer", lambda: _ready(one))
    url = f"http://127.0.0.1:{one.http.bound_port}"
    token_file = await accounts.token_file(tmp_path / "token", "writer")
    token = token_file.read_text().strip()

    async with aiohttp.ClientSession() as session:

        async def put(base: str, document: Any, if_match: str) -> tuple[int, dict[str, Any]]:
            headers = {"If-Match": if_match, "Authorization": f"Bearer {token}"}
            async with session.put(f"{base}/config", json=document, headers=headers) as answer:
                return answer.status, await answer.json()

        results = await asyncio.gather(
            put(url, {"deleteKillingTasksTimeoutSeconds": 10}, '"0"'),
            put(url, {"deleteKillingTasksTimeoutSeconds": 20}, '"0"'),
        )
        assert sorted(status for status, _ in results) == [200, 409], results
        assert [s.version for s in await harness.versions(1)] == [1]

        # A second replica without the Lease takes the transactional id: it fences "one".
        two = await harness.config("two", **http)
        await eventually("two is the writer", lambda: _ready(two))
        assert two.head.version == 1
        status, body = await put(url, {"killMethod": "delete"}, '"1"')
        assert status == 503, body  # the fenced producer's transaction is refused
        status, body = await put(
            f"http://127.0.0.1:{two.http.bound_port}", {"killMethod": "delete"}, '"1"'
        )
        assert (status, body["version"]) == (200, 2)
        # "one" takes the id back, reads the topic again, and so knows version 1 is stale.
        await eventually("one is the writer again", lambda: _ready(one))
        status, body = await put(url, {"defaultPendingTimeoutSeconds": 0}, '"1"')
        assert (status, body["version"]) == (409, 2), body

    assert [s.version for s in await harness.snapshots()] == [1, 2]

    # The CLI against the same service: set, a rejected set, get and history.
    runner = CliRunner()
    env = {
        "JOBREAPER_CONFIG_URL": url,
        "JOBREAPER_CONFIG_TOKEN_FILE": str(token_file),
        "JOBREAPER_KAFKA_BOOTSTRAP": harness.stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": harness.prefix,
    }
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"killMethod": "delete", "defaultPendingTimeoutSeconds": 30}))
    bad.write_text(json.dumps({"killMethod": "delete", "defaultPendingTimeoutSeconds": "30s"}))

    def cli(*args: str) -> Any:
        return runner.invoke(config_cli, list(args), env=env)

    done = await asyncio.to_thread(cli, "set", str(good))
    assert done.exit_code == 0, done.output
    assert "published version 3" in done.output
    refused = await asyncio.to_thread(cli, "set", str(bad))
    assert refused.exit_code == 3
    assert "$.defaultPendingTimeoutSeconds: must be a whole number" in refused.output
    stale = await asyncio.to_thread(cli, "set", str(good), "--version", "1")
    assert stale.exit_code == 4 and "version 3 is current" in stale.output
    shown = await asyncio.to_thread(cli, "get", "--json")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["author"] == f"system:serviceaccount:{namespace}:writer"
    history = await asyncio.to_thread(cli, "history")
    assert history.exit_code == 0, history.output
    assert [line.split()[0] for line in history.stdout.splitlines() if line.startswith("v")] == [
        "v1",
        "v2",
        "v3",
    ]
