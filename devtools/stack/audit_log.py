"""Reading the API server's audit log of a stack (``StackInfo.audit_log``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_audit_events(path: Path) -> list[dict[str, Any]]:
    """Every event of the API server's audit log (JSON lines; rotated files not read)."""
    events: list[dict[str, Any]] = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if line:
                events.append(json.loads(line))
    return events
