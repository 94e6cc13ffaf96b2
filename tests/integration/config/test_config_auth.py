"""Who may PUT /config, on the real stack: the API server authenticates the caller's
token (TokenReview) and RBAC authorizes its user (SubjectAccessReview), with the
manifests' ClusterRoles; the published snapshot names that user as its author."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from typer.testing import CliRunner

from devtools.stack.api import StackInfo
from schemas.config import ConfigSnapshot
from services.config.cli import app as config_cli
from services.config.service import ConfigService
from services.config.settings import ConfigServiceSettings
from services.runtime.kube import load_api_client
from services.runtime.settings import KafkaSettings
from tests.integration.helpers import eventually, messages

if TYPE_CHECKING:
    from tests.integration.config.conftest import Accounts

pytestmark = pytest.mark.stack

AUDIENCE = "jobreaper-config-test"


async def test_put_config_needs_a_token_whose_user_rbac_allows_and_records_that_user(
    accounts: Accounts, stack: StackInfo, namespace: str, topic_prefix: str, tmp_path: Path
) -> None:
    kafka = KafkaSettings(
        bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix, job_partitions=1
    )
    # The service runs as its own ServiceAccount, bound only to the manifests'
    # jobreaper-config-auth: that is enough to review its callers.
    api = await load_api_client(str(accounts.service_kubeconfig))
    settings = ConfigServiceSettings(
        source="http",
        lease=False,
        api_port=0,
        identity="auth-test",
        api_auth_namespace=namespace,
        api_auth_audiences=[AUDIENCE],
    )
    service = ConfigService(kafka, settings, api=api)
    task = asyncio.create_task(service.run())

    async def writer_ready() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the config service stopped by itself")
        return service.readiness()[0] and service.is_writer

    try:
        await eventually("the config service is the writer", writer_ready)
        url = f"http://127.0.0.1:{service.http.bound_port}"
        writer = await accounts.token("writer", AUDIENCE)
        reader = await accounts.token("reader", AUDIENCE)
        writer_for_the_api_server = await accounts.token("writer")

        async with aiohttp.ClientSession() as session:

            async def put(token: str | None, **headers: str) -> tuple[int, dict[str, Any], Any]:
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                async with session.put(
                    f"{url}/config",
                    json={"killMethod": "delete"},
                    headers={"If-Match": "*", **headers},
                ) as answer:
                    return answer.status, await answer.json(), answer.headers

            status, body, headers = await put(None)
            assert status == 401, body
            assert "Authorization: Bearer <token>" in body["error"]
            assert headers["WWW-Authenticate"] == 'Bearer realm="jobreaper-config"'

            status, body, _ = await put(writer[:-4] + "AAAA")  # a forged signature
            assert status == 401 and "did not authenticate this token" in body["error"], body

            status, body, _ = await put(writer_for_the_api_server)
            assert status == 401, "a token meant for the API server is not one for us"
            assert f"audience {AUDIENCE}" in body["error"], body

            status, body, _ = await put(reader)
            assert status == 403, body
            assert body["user"] == accounts.user("reader")
            assert body["missing_permission"] == {
                "verb": "update",
                "group": "jobreaper.io",
                "resource": "configs",
                "namespace": namespace,
            }
            assert body["error"].startswith(
                f"{accounts.user('reader')} may not update configs.jobreaper.io "
                f"in namespace {namespace}"
            )

            status, body, _ = await put(
                writer, **{"X-Remote-User": "admin", "X-Jobreaper-Author": "mallory"}
            )
            assert (status, body["published"], body["version"]) == (200, True, 1), body

            async with session.get(f"{url}/config") as answer:  # reads need no token
                assert answer.status == 200
                assert (await answer.json())["author"] == accounts.user("writer")

        (first,) = await snapshots(stack, topic_prefix, 1)
        assert first.version == 1 and first.author == accounts.user("writer")
        assert first.author == f"system:serviceaccount:{namespace}:writer"
        assert first.source == "http:127.0.0.1"

        # The CLI sends the token of --token-file.
        document = tmp_path / "config.json"
        document.write_text(json.dumps({"defaultPendingTimeoutSeconds": 60}))
        runner = CliRunner()
        env = {"JOBREAPER_CONFIG_URL": url, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}

        def cli(token_file: Path) -> Any:
            args = ["set", str(document), "--force", "--token-file", str(token_file)]
            return runner.invoke(config_cli, args, env=env)

        reader_file = await accounts.token_file(tmp_path / "reader", "reader", AUDIENCE)
        refused = await asyncio.to_thread(cli, reader_file)
        assert refused.exit_code == 6, refused.output
        assert f"HTTP 403: {accounts.user('reader')} may not update" in refused.output
        writer_file = await accounts.token_file(tmp_path / "writer", "writer", AUDIENCE)
        done = await asyncio.to_thread(cli, writer_file)
        assert done.exit_code == 0, done.output
        assert "published version 2" in done.output

        found = await snapshots(stack, topic_prefix, 2)
        assert [(s.version, s.author) for s in found] == [
            (1, accounts.user("writer")),
            (2, accounts.user("writer")),
        ]
        counted = service.registry.get_sample_value
        assert counted("jobreaper_config_api_writes_total", {"result": "allowed"}) == 2
        assert counted("jobreaper_config_api_writes_total", {"result": "forbidden"}) == 2
        assert counted("jobreaper_config_api_writes_total", {"result": "unauthenticated"}) == 3
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)
        await api.close()


async def snapshots(stack: StackInfo, prefix: str, count: int) -> list[ConfigSnapshot]:
    async def enough() -> list[ConfigSnapshot] | None:
        found = [
            m
            for m in await messages(stack.kafka_bootstrap, f"{prefix}config")
            if isinstance(m, ConfigSnapshot)
        ]
        return found if len(found) >= count else None

    return await eventually(f"{count} snapshots on the topic", enough)
