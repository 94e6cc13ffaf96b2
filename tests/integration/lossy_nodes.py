"""Nodes that tests may lose, kept apart from every other test's pods, so that tests
that lose a node run beside the others (pytest-xdist) without stranding their pods.

- The *lossy* nodes are the last two of the stack, never its first: the first stays
  Ready, so at most two of three nodes are ever NotReady at once and the node
  lifecycle controller stays in its normal mode (it calls a zone disrupted only when
  no node is Ready, or more than two and 55 % are not).
- They carry the label ``jobreaper.test/lossy`` (put by the ``namespace`` fixture's
  session), and every pod a test makes without pinning it to a node avoids them
  (:data:`AVOID_LOSSY_NODES`, which ``job_manifest`` and the other pod builders use).
- A test that loses a node reserves one first (:func:`reserved`, a file lock per
  node: one test process at a time per node), pins its pods there, and loses only it.
  Before it is handed over, the node must carry no pod of this run that was not
  pinned to it: such a pod belongs to a test that forgot :data:`AVOID_LOSSY_NODES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from tests.stack_fixtures import NodeLoss

LOSSY_LABEL = "jobreaper.test/lossy"
# When this test process started (the workers of a run start within a few seconds).
THIS_RUN_STARTED = datetime.now(UTC) - timedelta(seconds=10)
HOSTNAME = "kubernetes.io/hostname"

AVOID_LOSSY_NODES = client.V1Affinity(
    node_affinity=client.V1NodeAffinity(
        required_during_scheduling_ignored_during_execution=client.V1NodeSelector(
            node_selector_terms=[
                client.V1NodeSelectorTerm(
                    match_expressions=[
                        client.V1NodeSelectorRequirement(key=LOSSY_LABEL, operator="DoesNotExist")
                    ]
                )
            ]
        )
    )
)


def lossy_nodes(stack: StackInfo) -> tuple[str, ...]:
    """The nodes tests may lose: the last two, never the first (none on one node)."""
    return tuple(stack.nodes[1:][-2:])


async def label_lossy_nodes(api: client.ApiClient, stack: StackInfo) -> None:
    core = client.CoreV1Api(api)
    for node in lossy_nodes(stack):
        await core.patch_node(node, {"metadata": {"labels": {LOSSY_LABEL: "true"}}})


def _lock_path(stack: StackInfo, node: str) -> Path:
    where = str(stack.stack_dir or stack.kubeconfig).strip("/").replace("/", "-")
    return Path(tempfile.gettempdir()) / f"jobreaper-tests-{where}-{node}.lock"


def _try_lock(path: Path) -> IO[str] | None:
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def every_lossy_node_held(stack: StackInfo) -> Iterator[None]:
    """Every lossy node reserved for the block (waiting for each in turn): no test loses
    one meanwhile, and so no kwok of the stack is restarted (its pid changes)."""
    with contextlib.ExitStack() as held:
        for node in lossy_nodes(stack):
            handle = _lock_path(stack, node).open("a")
            held.callback(handle.close)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.asynccontextmanager
async def reserved(
    api: client.ApiClient, stack: StackInfo, node: str | None = None, *, timeout: float = 900
) -> AsyncIterator[str]:
    """A lossy node (``node``, or the first free one) held by this test until the block
    ends; waits while other test processes hold it."""
    candidates = lossy_nodes(stack)
    if stack.stack_dir is None or not candidates:
        pytest.skip("losing a node needs a stack of devtools.stack with two nodes or more")
    if node is not None:
        assert node in candidates, f"{node} is not a lossy node ({', '.join(candidates)})"
        candidates = (node,)
    deadline = time.monotonic() + timeout
    while True:
        for name in candidates:
            handle = _try_lock(_lock_path(stack, name))
            if handle is not None:
                try:
                    await _no_strangers(api, name)
                    yield name
                finally:
                    handle.close()  # releases the lock
                return
        if time.monotonic() > deadline:
            pytest.fail(f"no lossy node free within {timeout:.0f} s: {', '.join(candidates)}")
        await asyncio.sleep(0.5)


async def _no_strangers(api: client.ApiClient, node: str, timeout: float = 60) -> None:
    """Wait until every live pod on ``node`` made by this run was pinned there (pods of
    earlier tests that lost it are deleted with their namespaces; that can take a
    moment). Older pods are left out: an interrupted run's namespace (never deleted)
    must not make every later run on a long-lived stack fail here."""
    deadline = time.monotonic() + timeout
    while True:
        strangers = _unpinned(
            (
                await client.CoreV1Api(api).list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={node}"
                )
            ).items,
            node,
        )
        if not strangers:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"pods that were not pinned to the lossy node {node} run there: {strangers}; "
                "a test made a pod without tests.integration.lossy_nodes.AVOID_LOSSY_NODES"
            )
        await asyncio.sleep(1)


def _unpinned(pods: list[Any], node: str) -> list[str]:
    return [
        f"{p.metadata.namespace}/{p.metadata.name}"
        for p in pods
        if p.metadata.deletion_timestamp is None
        and p.status.phase in ("Pending", "Running")
        and p.metadata.creation_timestamp >= THIS_RUN_STARTED
        and (p.spec.node_selector or {}).get(HOSTNAME) != node
    ]


@dataclass
class ReservedNodeLoss(NodeLoss):
    """:class:`NodeLoss` of one test, which may lose only the node it reserved."""

    reserved: str = ""

    def lose(self, node: str | None = None, *, wait_not_ready: bool = True) -> str:
        node = node or self.reserved
        assert node == self.reserved, f"this test reserved {self.reserved}; it may not lose {node}"
        return super().lose(node, wait_not_ready=wait_not_ready)
