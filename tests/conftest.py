"""Fixtures for tests on the real local stack: Kafka, Kubernetes control plane, kwok.

- ``stack`` (session): the stack named by ``JOBREAPER_KUBECONFIG`` +
  ``JOBREAPER_KAFKA_BOOTSTRAP`` (+ ``JOBREAPER_AUDIT_LOG``), as ``jobreaper
  stack env`` exports them; otherwise ``ensure_stack("test")`` builds (first
  time: minutes) and starts one, or reuses it if it runs.
- ``kube_api`` (session, async): a kubernetes-asyncio ApiClient on it.
- ``namespace`` (per test): a fresh namespace, deleted afterwards.
- ``topic_prefix`` (per test): a unique Kafka topic prefix ``t-<hex>.``.
- ``node_loss`` (per test): ``node_loss.lose(node)``; lost nodes come back
  after the test.

Mark tests that use them with ``@pytest.mark.stack``, and those that must have the
stack to themselves with ``@pytest.mark.exclusive("why")`` too (every user of
``node_loss`` must be: a lost node stalls every pod on it, whoever's). ``./dev test``
runs the others concurrently (pytest-xdist), then these alone; docs/stack.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from devtools.stack.api import StackError, StackInfo, attach, build_stack, ensure_stack
from tests.stack_fixtures import NodeLoss
from tests.integration.helpers import one_process_at_a_time

TEST_STACK_NAME = os.environ.get("JOBREAPER_TEST_STACK", "test")


def _stack_from_env() -> StackInfo | None:
    kubeconfig = os.environ.get("JOBREAPER_KUBECONFIG")
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not (kubeconfig and bootstrap):
        return None
    # A stack started by devtools.stack: its folder holds the kubeconfig.
    stack_dir = os.environ.get("JOBREAPER_STACK_DIR") or str(Path(kubeconfig).parent)
    if (Path(stack_dir) / "state.json").is_file():
        try:
            info = attach(Path(stack_dir))
        except StackError:
            info = None
        if info is not None and str(info.kubeconfig) == kubeconfig:
            return info
    # Some other cluster: no stack folder, so no lose-node.
    audit = os.environ.get("JOBREAPER_AUDIT_LOG", "")
    return StackInfo(
        name="env",
        stack_dir=None,
        kubeconfig=Path(kubeconfig),
        kafka_bootstrap=bootstrap,
        audit_log=Path(audit) if audit else None,
        api_server="",
        nodes=(),
        kube_version="",
        kafka_version="",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that loses a node among concurrent tests would strand their pods."""
    unmarked = [
        item.nodeid
        for item in items
        if "node_loss" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("exclusive") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that lose a node must be marked @pytest.mark.exclusive(...): "
            + ", ".join(unmarked)
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the stack (minutes, the first time) before any test's timeout runs."""
    if _stack_from_env() is not None or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("stack") for item in session.items):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with (
        capture.global_and_fixture_disabled() if capture else contextlib.nullcontext(),
        one_process_at_a_time("build-stack"),
    ):
        try:
            build_stack()
        except StackError as e:
            pytest.exit(f"the local stack cannot be built: {e}", returncode=1)


@pytest.fixture(scope="session")
def stack() -> StackInfo:
    info = _stack_from_env()
    if info is not None:
        return info
    try:
        return ensure_stack(TEST_STACK_NAME)
    except StackError as e:
        pytest.fail(f"the local stack is not available: {e}", pytrace=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube_api(stack: StackInfo) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(stack.kubeconfig))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
def topic_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}."


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    """A new namespace whose ``default`` ServiceAccount exists (pods can be created)."""
    core = client.CoreV1Api(kube_api)
    name = f"jr-{uuid.uuid4().hex[:10]}"
    await core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"jobreaper.test/owner": "pytest"})
        )
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await core.read_namespaced_service_account("default", name)
                break
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        yield name
    finally:
        # Not waited for: pods left on a lost node keep a namespace Terminating.
        try:
            await core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture
def node_loss(stack: StackInfo) -> Iterator[NodeLoss]:
    """``node_loss.lose(node)`` makes a node lost (waits for NotReady); restored after."""
    if stack.stack_dir is None or not stack.nodes:
        pytest.skip("losing a node needs a stack started by devtools.stack")
    loss = NodeLoss(stack)
    try:
        yield loss
    finally:
        loss.restore_all()
