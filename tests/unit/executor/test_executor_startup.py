"""The start-up permission check: loud about what is missing, fatal only on a 401."""

from __future__ import annotations

import orjson
import pytest
import structlog

from services.executor.apply import Answer
from services.executor.service import Executor
from services.executor.settings import ExecutorSettings
from services.runtime.kube import PermissionDenied
from services.runtime.settings import KafkaSettings

from .fakes import ScriptedApi


def review(allowed: bool) -> Answer:
    return Answer(201, "Created", "", orjson.dumps({"status": {"allowed": allowed}}))


def executor(api: ScriptedApi) -> Executor:
    return Executor(None, KafkaSettings(), ExecutorSettings(identity="t"), transport=api)


async def test_missing_permissions_are_named_in_error_logs() -> None:
    answers = [True, False, True, True, False, False]
    api = ScriptedApi([review(allowed) for allowed in answers])
    with structlog.testing.capture_logs() as logs:
        await executor(api)._check_permissions()
    missing = [e["missing_permission"] for e in logs if e["event"] == "executor.permission_missing"]
    assert missing == ["patch pods", "patch jobs/status.batch", "create events.events.k8s.io"]
    assert all(e["log_level"] == "error" for e in logs if "missing_permission" in e)
    reviewed = [c.body["spec"]["resourceAttributes"] for c in api.calls]
    assert reviewed[0] == {"verb": "get", "resource": "pods", "group": ""}
    assert reviewed[3] == {"verb": "get", "resource": "jobs", "group": "batch"}
    assert reviewed[4] == {
        "verb": "patch",
        "resource": "jobs",
        "subresource": "status",
        "group": "batch",
    }


async def test_rejected_credentials_are_fatal() -> None:
    api = ScriptedApi([Answer(401, "Unauthorized", "Unauthorized")])
    with pytest.raises(PermissionDenied, match="credentials"):
        await executor(api)._check_permissions()


async def test_an_unreachable_api_server_does_not_stop_the_start() -> None:
    api = ScriptedApi([Answer(0, "ClientConnectorError", "refused")])
    await executor(api)._check_permissions()
    assert len(api.calls) == 1
