"""Small helpers: progress lines, tool look-up, free ports, running a logged step."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devtools.stack.errors import StackError, ToolMissing

Say = Callable[[str], None]


def say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def say_nothing(message: str) -> None:
    del message


def elapsed(start: float) -> str:
    seconds = time.monotonic() - start
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def require_tool(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(tool, why)
    return path


def free_port(taken: set[int]) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (and not in ``taken``)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise StackError("no free TCP port on 127.0.0.1", step="choose ports")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def last_line(log: Path, limit: int = 300) -> str:
    """The last non-empty line of a log, for error messages (may be empty)."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:limit] if lines else ""


def log_mentions(log: Path, *needles: str) -> bool:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return any(n in text for n in needles)


def run_logged(
    argv: Sequence[str],
    *,
    step: str,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Run a command to completion with its output appended to ``log``.

    A failure raises a one-line :class:`StackError` naming ``step`` and ``log``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"timed out after {timeout:.0f}s", step=step, log=log) from None
        except OSError as e:
            raise StackError(f"could not run {argv[0]}: {e.strerror}", step=step, log=log) from None
    if proc.returncode != 0:
        hint = last_line(log)
        detail = f"exit status {proc.returncode}" + (f": {hint}" if hint else "")
        raise StackError(detail, step=step, log=log)
