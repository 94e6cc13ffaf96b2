"""Helpers for tests on the local stack: lose nodes during a test, a Kafka broker of a
test's own. Test code, so it lives here rather than in ``devtools.stack``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devtools.stack.api import lose_node, restore_node
from devtools.stack.errors import StackError
from devtools.stack.layout import StackInfo
from devtools.stack.stack import Stack
from devtools.stack.util import Say, say_nothing


@dataclass
class NodeLoss:
    """Lose kwok nodes during a test; ``restore_all`` brings them back."""

    stack: StackInfo
    lost: list[str] = field(default_factory=list)

    def lose(self, node: str | None = None, *, wait_not_ready: bool = True) -> str:
        """Make ``node`` (default: the last node) lost; returns its name."""
        if self.stack.stack_dir is None or not self.stack.nodes:
            raise StackError("losing a node needs a stack started by devtools.stack")
        node = node or self.stack.nodes[-1]
        self.lost.append(node)
        lose_node(self.stack, node, wait_not_ready=wait_not_ready)
        return node

    def restore(self, node: str) -> None:
        restore_node(self.stack, node)
        if node in self.lost:
            self.lost.remove(node)

    def restore_all(self) -> None:
        for node in list(self.lost):
            self.restore(node)


@contextlib.contextmanager
def lone_kafka(root: Path, properties: dict[str, str], say: Say = say_nothing) -> Iterator[str]:
    """A Kafka broker of its own, beside the stack, for the block; yields its bootstrap.

    Same build, heap and base config as the stack's broker, plus ``properties``
    (e.g. ``log.retention.check.interval.ms``, which a running broker cannot change);
    its folder is ``root``, its data fresh, and it is stopped and deleted after."""
    stack = Stack(f"lone-kafka-{root.name}", say, root=root)
    try:
        yield stack.up_kafka_only(properties)
    finally:
        stack.down(purge=True)
