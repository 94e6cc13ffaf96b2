"""The HTTP API and the publish path over a fake transactional producer (no Kafka),
and the sources' change detection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from schemas.config import ConfigSnapshot
from services.config.service import ConfigService
from services.config.settings import ConfigServiceSettings
from services.config.sources import ConfigMapSource, FileSource, last_manager
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings


class FakeProducer:
    """Records what one transaction sends; can be told to fail like a fenced producer."""

    def __init__(self) -> None:
        self.sent: list[ConfigSnapshot] = []
        self.fail_with: Exception | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        await asyncio.sleep(0.01)  # let concurrent requests interleave
        if self.fail_with is not None:
            raise self.fail_with
        assert topic == "u.config" and key == b"killer"
        message = CODEC.decode(headers, value).message
        assert isinstance(message, ConfigSnapshot)
        self.sent.append(message)

    async def stop(self) -> None:
        pass


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def __call__(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, dict[str, Any], str]:
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        async with self.session.request(
            method, self.base + path, data=data, headers=headers
        ) as response:
            return response.status, await response.json(), response.headers.get("ETag", "")


def make_service(**settings: Any) -> ConfigService:
    values: dict[str, Any] = {"source": "http", "lease": False, "api_port": 0, **settings}
    return ConfigService(
        KafkaSettings(topic_prefix="u."), ConfigServiceSettings(**values), api=None
    )


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[tuple[ConfigService, FakeProducer, Client]]:
    service = make_service()
    producer = FakeProducer()
    service._writer = producer  # type: ignore[assignment]
    service.tail.read = True
    await service.http.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield service, producer, Client(session, f"http://127.0.0.1:{service.http.bound_port}")
    finally:
        await service.http.stop()


async def test_put_needs_if_match_and_refuses_a_stale_one(
    served: tuple[ConfigService, FakeProducer, Client],
) -> None:
    service, producer, call = served
    status, body, tag = await call("GET", "/config")
    assert (status, body["version"], tag) == (200, 0, '"0"')
    assert body["config"]["killMethod"] == "activeDeadline"

    status, body, _ = await call("PUT", "/config", {"killMethod": "delete"})
    assert status == 428 and "If-Match is required" in body["error"]
    status, body, _ = await call("PUT", "/config", {}, **{"If-Match": "latest"})
    assert status == 400

    status, body, tag = await call(
        "PUT",
        "/config",
        {"killMethod": "delete"},
        **{"If-Match": '"0"', "X-Jobreaper-Author": "al"},
    )
    assert (status, body["published"], body["version"], tag) == (200, True, 1, '"1"')
    assert body["diff"] == ["killMethod: activeDeadline -> delete"]
    assert [(s.version, s.author, s.config.kill_method) for s in producer.sent] == [
        (1, "al", "delete")
    ]
    assert producer.sent[0].source.startswith("http:") and producer.sent[0].digest

    status, body, tag = await call("PUT", "/config", {}, **{"If-Match": '"0"'})
    assert (status, body["version"], tag) == (409, 1, '"1"')
    assert "GET /config again" in body["error"]
    assert service.head.version == 1 and len(producer.sent) == 1


async def test_the_same_content_publishes_nothing(
    served: tuple[ConfigService, FakeProducer, Client],
) -> None:
    _, producer, call = served
    document = '{"killMethod":"delete"}'
    for expected in ((True, 1), (False, 1), (False, 1)):
        status, body, _ = await call("PUT", "/config", document, **{"If-Match": "*"})
        assert status == 200 and (body["published"], body["version"]) == expected
    reformatted = '{\n  "killMethod": "delete",\n  "deleteKillingTasksTimeoutSeconds": 180\n}'
    status, body, _ = await call("PUT", "/config", reformatted, **{"If-Match": '"1"'})
    assert (status, body["published"]) == (200, False)
    assert len(producer.sent) == 1


async def test_a_rejected_put_returns_every_problem_and_keeps_the_version(
    served: tuple[ConfigService, FakeProducer, Client],
) -> None:
    service, producer, call = served
    bad = {"killMethod": "nope", "deleteKillingTasksTimeoutSeconds": -1, "foo": 1}
    status, body, tag = await call("PUT", "/config", bad, **{"If-Match": '"0"'})
    assert (status, tag) == (422, '"0"')
    assert [e["path"] for e in body["errors"]] == [
        "$.killMethod",
        "$.deleteKillingTasksTimeoutSeconds",
        "$.foo",
    ]
    assert "version 0 stays in force" in body["error"]
    assert producer.sent == [] and service.head.version == 0
    rejected = service.registry.get_sample_value(
        "jobreaper_config_changes_total", {"source": "http", "outcome": "rejected"}
    )
    assert rejected == 1


async def test_concurrent_puts_one_wins_the_other_gets_409(
    served: tuple[ConfigService, FakeProducer, Client],
) -> None:
    _, producer, call = served
    answers = await asyncio.gather(
        *(
            call("PUT", "/config", {"defaultPendingTimeoutSeconds": n}, **{"If-Match": '"0"'})
            for n in (10, 20, 30)
        )
    )
    assert sorted(status for status, _, _ in answers) == [200, 409, 409]
    assert [s.version for s in producer.sent] == [1]


async def test_validate_is_a_dry_run_with_the_diff(
    served: tuple[ConfigService, FakeProducer, Client],
) -> None:
    service, producer, call = served
    status, body, _ = await call("POST", "/config/validate", {"defaultPendingTimeoutSeconds": 0})
    assert (status, body["valid"], body["version"]) == (200, True, 0)
    assert body["diff"] == ["defaultPendingTimeoutSeconds: 900 -> 0"]
    status, body, _ = await call("POST", "/config/validate", "{")
    assert (status, body["valid"]) == (422, False)
    assert body["errors"][0]["code"] == "syntax"
    assert producer.sent == [] and service.head.version == 0


async def test_a_failed_commit_drops_the_writer_and_publishes_nothing(
    served: tuple[ConfigService, FakeProducer, Client],
) -> None:
    service, producer, call = served
    producer.fail_with = RuntimeError("fenced")
    status, body, _ = await call("PUT", "/config", {"killMethod": "delete"}, **{"If-Match": "*"})
    assert status == 503 and "fenced" in body["error"]
    assert service.head.version == 0 and service._lost.is_set()


async def test_put_is_refused_when_the_writer_is_a_file(tmp_path: Path) -> None:
    service = make_service(source="file", file=str(tmp_path / "c.json"))
    service.tail.read = True
    await service.http.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            call = Client(session, f"http://127.0.0.1:{service.http.bound_port}")
            status, body, _ = await call("PUT", "/config", {}, **{"If-Match": "*"})
    finally:
        await service.http.stop()
    assert status == 405 and "the file" in body["error"]


# -- sources --------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


def test_the_file_source_yields_each_state_once(config_file: Path) -> None:
    source = FileSource(str(config_file))
    missing = source.poll()
    assert missing is not None and missing.text is None and "not found" in (missing.problem or "")
    assert source.poll() is None
    config_file.write_text('{"killMethod": "delete"}')
    first = source.poll()
    assert first is not None and first.text == '{"killMethod": "delete"}'
    assert first.author == str(config_file) and first.origin == f"file:{config_file}"
    assert source.poll() is None
    config_file.write_text("{}")
    os.utime(config_file, ns=(1, 1))  # a new mtime even within the clock's granularity
    again = source.poll()
    assert again is not None and again.text == "{}"


def configmap(rv: str, data: dict[str, str], managers: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "cm",
            "uid": "u1",
            "resourceVersion": rv,
            "managedFields": [{"manager": m, "time": t} for m, t in managers],
        },
        "data": data,
    }


def test_the_configmap_source_dedupes_on_resource_version_and_names_the_manager() -> None:
    source = ConfigMapSource(None, "ns", "cm", "config.json")  # type: ignore[arg-type]
    obj = configmap(
        "7",
        {"config.json": "{}"},
        [("kubectl-create", "2026-01-01T00:00:00Z"), ("kubectl-edit", "2026-01-02T00:00:00Z")],
    )
    first = source.content(obj)
    assert first is not None
    assert (first.text, first.author, first.origin) == ("{}", "kubectl-edit", "configmap:ns/cm@7")
    assert first.involved["uid"] == "u1" and first.involved["kind"] == "ConfigMap"
    assert source.content(obj) is None  # a re-list of the same state
    no_key = source.content(configmap("8", {"other": "x"}, []))
    assert no_key is not None and no_key.text is None
    assert "no data key config.json (it has: other)" in (no_key.problem or "")
    gone = source.content(None)
    assert gone is not None and gone.text is None and not gone.involved
    assert source.content(None) is None


def test_last_manager_picks_the_newest_entry() -> None:
    assert last_manager({}) == "unknown"
    meta = configmap("1", {}, [("b", "2026-01-02T00:00:00Z"), ("a", "2026-01-01T00:00:00Z")])
    assert last_manager(meta["metadata"]) == "b"
