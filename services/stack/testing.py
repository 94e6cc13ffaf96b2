"""Helpers for tests on the local stack (used by tests/integration/conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.stack.api import lose_node, restore_node
from services.stack.errors import StackError
from services.stack.stack import StackInfo


@dataclass
class NodeLoss:
    """Lose kwok nodes during a test; ``restore_all`` brings them back."""

    stack: StackInfo
    lost: list[str] = field(default_factory=list)

    def lose(self, node: str | None = None, *, wait_not_ready: bool = True) -> str:
        """Make ``node`` (default: the last node) lost; returns its name."""
        if self.stack.stack_dir is None or not self.stack.nodes:
            raise StackError("losing a node needs a stack started by services.stack")
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


def read_audit_events(path: Path) -> list[dict[str, Any]]:
    """Every event of the API server's audit log (JSON lines; rotated files not read)."""
    events: list[dict[str, Any]] = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if line:
                events.append(json.loads(line))
    return events
