"""The HTTP API and the publish path over a fake transactional producer (no Kafka),
who may write (bearer tokens reviewed by a fake API server), the CLI's token, and
the sources' change detection."""

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
from structlog.testing import capture_logs
from typer.testing import CliRunner

from schemas.config import ConfigSnapshot
from services.config.cli import app as config_cli
from services.config.cli import credentials
from services.config.service import ConfigService, write_permission
from services.config.settings import ConfigServiceSettings
from services.config.sources import ConfigMapSource, FileSource, last_manager
from services.runtime.kube import KubeApiError
from services.runtime.kube_auth import KubeAuthorizer
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from tests.unit.kube_auth_fake import FakeApiServer

WRITER = "system:serviceaccount:ops:config-writer"
READER = "system:serviceaccount:ops:reader"


class FakeProducer:
    """Records what one transaction sends; can be told to fail like a fenced producer."""

    def __init__(self) -> None:
        self.sent: list[ConfigSnapshot] = []
        self.fail_with: Exception | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> asyncio.Future[None]:
        """The acknowledgement's future: failed as a fenced producer fails its batches."""
        await asyncio.sleep(0.01)  # let concurrent requests interleave
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_with is not None:
            acked.set_exception(self.fail_with)
            return acked
        assert topic == "u.config" and key == b"killer" and partition is None
        message = CODEC.decode(headers, value).message
        assert isinstance(message, ConfigSnapshot)
        self.sent.append(message)
        acked.set_result(None)
        return acked

    async def stop(self) -> None:
        pass


class Client:
    """Requests to the API; ``Authorization`` is the writer's token unless given."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def __call__(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, dict[str, Any], str]:
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        headers.setdefault("Authorization", "Bearer writer-token")
        headers = {k: v for k, v in headers.items() if v}  # "" drops a header
        async with self.session.request(
            method, self.base + path, data=data, headers=headers
        ) as response:
            return response.status, await response.json(), response.headers.get("ETag", "")


def fake_api_server() -> FakeApiServer:
    """Knows a writer (granted update configs.jobreaper.io in ops) and a reader."""
    api = FakeApiServer()
    api.token("writer-token", WRITER)
    api.token("reader-token", READER)
    api.grant(WRITER, verb="update", group="jobreaper.io", resource="configs", namespace="ops")
    return api


def make_service(api_server: FakeApiServer | None = None, **settings: Any) -> ConfigService:
    values: dict[str, Any] = {
        "source": "http",
        "lease": False,
        "api_port": 0,
        "api_auth_namespace": "ops",
        **settings,
    }
    config = ConfigServiceSettings(**values)
    authorizer = KubeAuthorizer(api_server or fake_api_server(), write_permission(config))
    return ConfigService(KafkaSettings(topic_prefix="u."), config, api=None, authorizer=authorizer)


Served = tuple[ConfigService, FakeProducer, Client]


@contextlib.asynccontextmanager
async def serving(service: ConfigService) -> AsyncIterator[Served]:
    producer = FakeProducer()
    service._writer = producer  # type: ignore[assignment]
    service.tail.read = True
    await service.http.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield service, producer, Client(session, f"http://127.0.0.1:{service.http.bound_port}")
    finally:
        await service.http.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[Served]:
    async with serving(make_service()) as running:
        yield running


async def test_put_needs_if_match_and_refuses_a_stale_one(
    served: Served,
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
        "PUT", "/config", {"killMethod": "delete"}, **{"If-Match": '"0"'}
    )
    assert (status, body["published"], body["version"], tag) == (200, True, 1, '"1"')
    assert body["diff"] == ["killMethod: activeDeadline -> delete"]
    assert [(s.version, s.author, s.config.kill_method) for s in producer.sent] == [
        (1, WRITER, "delete")
    ]
    assert producer.sent[0].source.startswith("http:") and producer.sent[0].digest

    status, body, tag = await call("PUT", "/config", {}, **{"If-Match": '"0"'})
    assert (status, body["version"], tag) == (409, 1, '"1"')
    assert "GET /config again" in body["error"]
    assert service.head.version == 1 and len(producer.sent) == 1


async def test_the_same_content_publishes_nothing(
    served: Served,
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
    served: Served,
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
    served: Served,
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
    served: Served,
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
    served: Served,
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


# -- who may write ----------------------------------------------------------------------


async def test_a_put_without_a_token_is_401_before_anything_else(served: Served) -> None:
    service, producer, call = served
    for headers in ({"Authorization": ""}, {"Authorization": "", "If-Match": '"0"'}):
        status, body, _ = await call("PUT", "/config", {"killMethod": "delete"}, **headers)
        assert status == 401, "401 even without If-Match: nobody learns more"
        assert "Authorization: Bearer <token>" in body["error"]
    async with call.session.put(f"{call.base}/config", data="{}") as answer:
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="jobreaper-config"'
    assert producer.sent == [] and service.head.version == 0
    unauthenticated = service.registry.get_sample_value(
        "jobreaper_config_api_writes_total", {"result": "unauthenticated"}
    )
    assert unauthenticated == 3


async def test_a_token_the_api_server_does_not_know_is_401(served: Served) -> None:
    _, producer, call = served
    status, body, _ = await call(
        "PUT", "/config", {}, **{"If-Match": "*", "Authorization": "Bearer forged-token"}
    )
    assert status == 401 and "did not authenticate this token" in body["error"]
    assert "forged-token" not in json.dumps(body)
    status, body, _ = await call(
        "PUT", "/config", {}, **{"If-Match": "*", "Authorization": "Basic d3JpdGVyOnB3"}
    )
    assert status == 401 and "Bearer <token>" in body["error"]
    assert producer.sent == []


async def test_a_user_without_the_permission_is_403_naming_both(served: Served) -> None:
    service, producer, call = served
    status, body, _ = await call(
        "PUT", "/config", {}, **{"If-Match": "*", "Authorization": "Bearer reader-token"}
    )
    assert status == 403
    assert body["user"] == READER
    assert body["missing_permission"] == {
        "verb": "update",
        "group": "jobreaper.io",
        "resource": "configs",
        "namespace": "ops",
    }
    assert body["error"].startswith(
        f"{READER} may not update configs.jobreaper.io in namespace ops"
    )
    assert (
        "kubectl -n ops create rolebinding <name> --clusterrole=jobreaper-config-writer "
        "--serviceaccount=ops:reader" in body["error"]
    )
    assert producer.sent == [] and service.head.version == 0
    assert (
        service.registry.get_sample_value(
            "jobreaper_config_api_writes_total", {"result": "forbidden"}
        )
        == 1
    )


async def test_the_author_is_the_token_user_never_a_header(served: Served) -> None:
    _, producer, call = served
    status, body, _ = await call(
        "PUT",
        "/config",
        {"killMethod": "delete"},
        **{"If-Match": "*", "X-Remote-User": "admin", "X-Jobreaper-Author": "mallory"},
    )
    assert (status, body["published"]) == (200, True)
    (snapshot,) = producer.sent
    assert snapshot.author == WRITER
    status, body, _ = await call("GET", "/config", Authorization="")
    assert (status, body["author"]) == (200, WRITER)


async def test_reads_and_dry_runs_need_no_token(served: Served) -> None:
    _, _, call = served
    for method, path in (("GET", "/config"), ("GET", "/config/history")):
        status, _, _ = await call(method, path, Authorization="")
        assert status == 200, path
    status, body, _ = await call("POST", "/config/validate", {}, Authorization="")
    assert (status, body["valid"]) == (200, True)


async def test_the_review_is_cached_per_token() -> None:
    api = fake_api_server()
    async with serving(make_service(api)) as (service, producer, call):
        for n in range(3):
            status, _, _ = await call(
                "PUT", "/config", {"defaultPendingTimeoutSeconds": n}, **{"If-Match": "*"}
            )
            assert status == 200
        assert service.authorizer is not None and service.authorizer.reviews == 1
        assert [s.version for s in producer.sent] == [1, 2, 3]


async def test_an_api_server_that_cannot_review_is_503_and_publishes_nothing() -> None:
    api = fake_api_server()
    api.fail_with = KubeApiError(0, "ClientConnectorError", "refused", verb="POST", path="/x")
    async with serving(make_service(api)) as (_, producer, call):
        status, body, _ = await call("PUT", "/config", {}, **{"If-Match": "*"})
        assert status == 503 and "cannot check the credentials now" in body["error"]
        assert producer.sent == []


async def test_at_start_it_says_who_may_write_and_what_it_lacks_to_check() -> None:
    api = fake_api_server()
    with capture_logs() as logs:
        await make_service(api)._announce_auth()
    (announced,) = [e for e in logs if e["event"] == "config.api_auth"]
    assert announced["needs"] == (
        "a bearer token whose user may update configs.jobreaper.io in namespace ops"
    )
    assert not [e for e in logs if e["event"] == "config.api_auth_permission_missing"]
    api.self_allowed = False
    with capture_logs() as logs:
        await make_service(api)._announce_auth()
    (missing,) = [e for e in logs if e["event"] == "config.api_auth_permission_missing"]
    assert missing["log_level"] == "error"
    assert missing["missing_permission"] == [
        "create tokenreviews.authentication.k8s.io",
        "create subjectaccessreviews.authorization.k8s.io",
    ]
    settings = ConfigServiceSettings(source="http", lease=False, api_auth="none")
    with capture_logs() as logs:
        await ConfigService(KafkaSettings(), settings, api=None)._announce_auth()
    assert [(e["event"], e["log_level"]) for e in logs] == [("config.api_auth_disabled", "warning")]


def test_writes_are_authenticated_by_default() -> None:
    settings = ConfigServiceSettings(source="http", lease=False)
    assert settings.api_auth == "kubernetes" and settings.authenticates_writes
    assert settings.needs_kubernetes, "the run command loads a Kubernetes client for the reviews"
    with pytest.raises(ValueError, match="need a Kubernetes API client"):
        ConfigService(KafkaSettings(), settings, api=None)


def test_no_auth_is_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="for local development only"):
        ConfigServiceSettings(source="http", api_auth="none", api_host="0.0.0.0")
    for host in ("127.0.0.1", "::1", "localhost"):
        ConfigServiceSettings(source="http", api_auth="none", api_host=host)
    # Only PUT is concerned, and only with source=http.
    ConfigServiceSettings(source="file", file="x", api_auth="none", api_host="0.0.0.0")


def test_audiences_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBREAPER_CONFIG_API_AUTH_AUDIENCES", "jobreaper-config, other,")
    assert ConfigServiceSettings().api_auth_audiences == ["jobreaper-config", "other"]


async def test_no_auth_mode_says_so_and_records_the_peer() -> None:
    settings = ConfigServiceSettings(source="http", lease=False, api_port=0, api_auth="none")
    service = ConfigService(KafkaSettings(topic_prefix="u."), settings, api=None)
    assert service.authorizer is None
    async with serving(service) as (_, producer, call):
        status, _, _ = await call(
            "PUT", "/config", {"killMethod": "delete"}, **{"If-Match": "*", "X-Remote-User": "a"}
        )
        assert status == 200
        assert [s.author for s in producer.sent] == ["unauthenticated@127.0.0.1"]
    assert "PUT /config is NOT authenticated" in service.readiness()[1]


# -- the CLI's token ---------------------------------------------------------------------


def kubeconfig(path: Path, user: dict[str, Any]) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_the_cli_token_comes_from_file_then_env_then_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    with_token = kubeconfig(tmp_path / "kc", {"token": "from-kubeconfig"})
    monkeypatch.setenv("JOBREAPER_CONFIG_TOKEN", "from-env")
    assert credentials(str(token_file), str(with_token)).token == "from-file"
    assert credentials(None, str(with_token)).token == "from-env"
    monkeypatch.delenv("JOBREAPER_CONFIG_TOKEN")
    found = credentials(None, str(with_token))
    assert found.token == "from-kubeconfig" and "kubeconfig" in found.origin
    monkeypatch.setenv("KUBECONFIG", str(with_token))
    assert credentials(None, None).token == "from-kubeconfig"
    certificate = kubeconfig(tmp_path / "cert", {"username": "a", "password": "b"})
    assert credentials(None, str(certificate)).token is None, "only a bearer token is sent"
    assert credentials(None, str(tmp_path / "missing")).token is None


async def test_cli_set_sends_the_token_and_explains_401_and_403(tmp_path: Path) -> None:
    runner = CliRunner()
    document = tmp_path / "c.json"
    document.write_text('{"killMethod": "delete"}')
    tokens = {}
    for name in ("writer", "reader"):
        tokens[name] = tmp_path / name
        tokens[name].write_text(f"{name}-token\n")
    empty_kubeconfig = str(tmp_path / "none")

    async with serving(make_service()) as (_, producer, call):
        env = {"JOBREAPER_CONFIG_URL": call.base, "KUBECONFIG": empty_kubeconfig}

        def cli(*args: str) -> Any:
            return runner.invoke(config_cli, ["set", str(document), *args], env=env)

        anonymous = await asyncio.to_thread(cli)
        assert anonymous.exit_code == 6, anonymous.output
        assert "HTTP 401" in anonymous.output and "--token-file" in anonymous.output
        refused = await asyncio.to_thread(cli, "--token-file", str(tokens["reader"]))
        assert refused.exit_code == 6, refused.output
        assert f"HTTP 403: {READER} may not update configs.jobreaper.io" in refused.output
        assert f"the token file {tokens['reader']}" in refused.output
        done = await asyncio.to_thread(cli, "--token-file", str(tokens["writer"]))
        assert done.exit_code == 0, done.output
        assert "published version 1" in done.output
        gone = await asyncio.to_thread(cli, "--author", "me")
        assert gone.exit_code == 2 and "--author is gone" in gone.output
    assert [s.author for s in producer.sent] == [WRITER]


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
