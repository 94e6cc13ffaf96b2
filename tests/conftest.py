"""Fixtures for tests on the real local stack: Kafka, Kubernetes control plane, kwok.

- ``stack`` (session): the stack named by ``JOBREAPER_KUBECONFIG`` +
  ``JOBREAPER_KAFKA_BOOTSTRAP`` (+ ``JOBREAPER_AUDIT_LOG``), as ``jobreaper
  stack env`` exports them; otherwise ``ensure_stack("test")`` builds (first
  time: minutes) and starts one, or reuses it if it runs.
- ``kube_api`` (session, async): a kubernetes-asyncio ApiClient on it.
- ``namespace`` (per test): a fresh namespace, deleted afterwards.
- ``topic_prefix`` (per test): a unique Kafka topic prefix ``t-<hex>.``.
- ``node_loss`` (per test): ``node_loss.lose()`` makes the node reserved for the
  test (``node_loss.reserved``, one of the lossy nodes: tests/integration/lossy_nodes.py)
  lost; it comes back after the test, and other tests' pods are never on it.

Mark tests that use them with ``@pytest.mark.stack``, and those that must have the
stack to themselves with ``@pytest.mark.exclusive("why")`` too. ``./dev test`` runs
the others concurrently (pytest-xdist), then these alone; docs/stack.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

# Loaded now, not by hypothesis' terminal summary at the very end of a session: there,
# compiled under pytest's assertion rewriting deep in pluggy's stack, CPython 3.11
# once raised "SystemError: AST constructor recursion depth mismatch" after every test
# had passed (stop 17's last CI run), failing the run.
import hypothesis.internal.observability  # noqa: F401
import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from devtools.stack.api import StackError, StackInfo, attach, build_stack, ensure_stack
from tests.integration.helpers import one_process_at_a_time
from tests.integration.lossy_nodes import (
    ReservedNodeLoss,
    label_lossy_nodes,
    lossy_nodes,
    reserved,
)

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


# Modules whose tests share a costly module-scoped fixture: under pytest-xdist, one
# worker runs each of them whole, so the fixture starts once, not once per worker.
ONE_WORKER_MODULES = ("tests/integration/kafka_acls/test_kafka_acls.py",)  # its own broker


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``, grouping ONE_WORKER_MODULES by module: xdist 3.8 groups by
    its ``xdist_group`` mark by rewriting node ids, which pytest 9.2 no longer reads
    (pytest-dev/pytest-xdist#1386), so the mark alone groups nothing."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModulesTogether(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else str(super()._split_scope(nodeid))

    return ModulesTogether(config, log)


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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def lossy_nodes_labelled(stack: StackInfo, kube_api: client.ApiClient) -> tuple[str, ...]:
    """The nodes tests may lose, labelled so that other tests' pods avoid them."""
    if stack.stack_dir is not None:
        await label_lossy_nodes(kube_api, stack)
    return lossy_nodes(stack)


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(
    kube_api: client.ApiClient, lossy_nodes_labelled: tuple[str, ...]
) -> AsyncIterator[str]:
    """A new namespace whose ``default`` ServiceAccount exists (pods can be created),
    once the lossy nodes are labelled (its pods must avoid them)."""
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


@pytest_asyncio.fixture(loop_scope="session")
async def lossy_node(
    stack: StackInfo, kube_api: client.ApiClient, lossy_nodes_labelled: tuple[str, ...]
) -> AsyncIterator[str]:
    """A lossy node reserved for this test: no other test process loses it meanwhile."""
    async with reserved(kube_api, stack) as node:
        yield node


@pytest.fixture
def node_loss(stack: StackInfo, lossy_node: str) -> Iterator[ReservedNodeLoss]:
    """``node_loss.lose()`` makes the test's node lost (waits for NotReady); restored
    after the test, before the node is free for another."""
    loss = ReservedNodeLoss(stack, reserved=lossy_node)
    try:
        yield loss
    finally:
        loss.restore_all()
