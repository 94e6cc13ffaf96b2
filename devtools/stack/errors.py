"""The one error the stack raises: a one-line message naming the failing step."""

from __future__ import annotations

from pathlib import Path


class StackError(Exception):
    """A step of building, starting or stopping the stack failed.

    ``str(error)`` is a single line naming the step and, when there is one,
    the log to read; the CLI prints exactly that, without a traceback.
    """

    def __init__(self, message: str, *, step: str | None = None, log: Path | None = None) -> None:
        self.step = step
        self.log = log
        text = f"{step}: {message}" if step else message
        if log is not None:
            text += f" (log: {log})"
        super().__init__(text)


class ToolMissing(StackError):
    """A tool the stack needs (java, go, mvn, openssl) is not on PATH."""

    def __init__(self, tool: str, why: str) -> None:
        super().__init__(f"'{tool}' not found on PATH: {why}")
        self.tool = tool
