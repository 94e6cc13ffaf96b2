"""Crash points for fault tests: a process kills itself (SIGKILL) at a named point.

``JOBREAPER_CRASH_AT="killer.before-commit:2"`` makes the process die the 2nd
time it reaches ``crash_point("killer.before-commit")`` (``:1`` if omitted):
no cleanup, no flush, exactly what a node failure or the OOM killer does.
Tests use it to prove that no step is lost or applied twice whatever moment
a process dies. Unset (always, outside tests), a crash point is a dict lookup.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "JOBREAPER_CRASH_AT"


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    return name, int(count or 1)


_TARGET = _parse(os.environ.get(ENV, ""))
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here if this is the configured point and occurrence."""
    if _TARGET is None or _TARGET[0] != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == _TARGET[1]:
        sys.stderr.write(f"jobreaper: crash point {name}:{_TARGET[1]} reached, SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
