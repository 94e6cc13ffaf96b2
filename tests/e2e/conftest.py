from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devtools.stack.api import StackInfo
from tests.e2e.harness import System


@pytest_asyncio.fixture(loop_scope="session")
async def system(stack: StackInfo, namespace: str, topic_prefix: str) -> AsyncIterator[System]:
    """jobreaper, whole, on the test's namespace; call ``await system.start(**config)``."""
    running = System(stack, namespace, topic_prefix)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def real_node(stack: StackInfo) -> str:
    """The stack's real node (containerd + a real kubelet), or a skip saying how to get one."""
    if not stack.real_nodes:
        pytest.skip(
            f"stack '{stack.name}' has no real node: start it with "
            f"`jobreaper-dev stack up --name {stack.name} --real-nodes 1` "
            "(`JOBREAPER_STACK_REAL_NODES=1 ./dev test` does; needs root and Debian packages)"
        )
    return stack.real_nodes[0]
