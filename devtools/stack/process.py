"""Start, find and stop the stack's processes through pid files.

A pid file records the pid, the process's start time (``/proc/<pid>/stat``
field 22) and its executable path. A process counts as ours only if all
three still match, so a recycled pid is never signalled. Nothing is ever
looked up or killed by name.

Processes are spawned in their own session with ``posix_spawn`` (no
``Popen`` object that would warn when the stack outlives it); they outlive
the Python process that started them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.stack.errors import StackError


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    exe: str
    argv: list[str]
    log: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    tail = raw[raw.rfind(")") + 2 :].split()
    return tail  # tail[0] is field 3 (state)


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def stopped(record: ProcessRecord) -> bool:
    """Whether the process is stopped by a signal (SIGSTOP: state ``T``)."""
    return _state(record.pid) == "T"


def _exe_matches(pid: int, exe: str) -> bool | None:
    """Whether the process runs ``exe``; None when the kernel will not say right now.

    ``/proc/<pid>/exe`` first; ``/proc/<pid>/cmdline`` can read empty for a
    moment (seen while a Go program starts up), so it is only a fallback.
    """
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(exe)
    except OSError:
        pass
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace") == exe


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (no zombie left)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    pid_file: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start ``argv`` detached, output appended to ``log``; write its pid file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    exe = argv[0]
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(argv)}\n".encode())
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawn(
            exe,
            list(argv),
            dict(env if env is not None else os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
            # Python ignores SIGPIPE and SIGXFSZ; give the child the defaults back.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    except OSError as e:
        raise StackError(
            f"cannot start {exe}: {e.strerror}", step=f"start {name}", log=log
        ) from None
    finally:
        os.close(fd)
        os.close(null)
    ticks = _start_ticks(pid)
    record = ProcessRecord(name, pid, ticks or 0, exe, list(argv), str(log))
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.__dict__))
    tmp.replace(pid_file)
    return record


def read(pid_file: Path) -> ProcessRecord | None:
    try:
        data = json.loads(pid_file.read_text())
        return ProcessRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def alive(record: ProcessRecord) -> bool:
    """The recorded process still runs (same pid, start time and executable)."""
    state = _state(record.pid)
    if state is None or state in ("Z", "X"):
        _reap(record.pid)
        return False
    if _start_ticks(record.pid) != record.start_ticks:
        return False
    # Pid and start time already identify the process; the executable is a
    # second check, skipped only when the kernel cannot tell at this moment.
    return _exe_matches(record.pid, record.exe) is not False


def running(pid_file: Path) -> ProcessRecord | None:
    record = read(pid_file)
    return record if record is not None and alive(record) else None


def stop(pid_file: Path, *, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the process of ``pid_file`` if it is still ours; remove the pid file.

    Sends ``sig`` to the process (SIGKILL after ``timeout``). Returns whether a
    process was stopped.
    """
    record = read(pid_file)
    stopped = False
    if record is not None and alive(record):
        stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)
        deadline = time.monotonic() + timeout
        while alive(record) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(record) and time.monotonic() < deadline:
                time.sleep(0.05)
        _reap(record.pid)
    pid_file.unlink(missing_ok=True)
    return stopped


def stop_many(pid_files: list[Path], *, timeout: float = 15.0) -> list[ProcessRecord]:
    """Stop several processes at once (SIGTERM to all, then SIGKILL); returns those stopped."""
    records = [r for r in (read(p) for p in pid_files) if r is not None and alive(r)]
    for record in records:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(r) for r in records) and time.monotonic() < deadline:
        time.sleep(0.05)
    for record in records:
        if alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(r) for r in records) and time.monotonic() < deadline:
        time.sleep(0.05)
    for record in records:
        _reap(record.pid)
    for pid_file in pid_files:
        pid_file.unlink(missing_ok=True)
    return records


def rss_bytes(record: ProcessRecord) -> int:
    """Resident memory of the process (0 if it is gone)."""
    if not alive(record):
        return 0
    try:
        for line in Path(f"/proc/{record.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0
