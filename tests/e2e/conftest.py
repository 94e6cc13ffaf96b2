from __future__ import annotations

from collections.abc import AsyncIterator

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
