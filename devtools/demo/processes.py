"""jobreaper's services as real processes (``python -m services NAME run``), as they
would run in a cluster: own settings from the environment, own /readyz port.

Each process gets its own session so that a Ctrl-C in the terminal reaches the
demo only, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

KEPT_FILE = "demo-kept.json"
"""In the stack's folder: what a ``--keep`` run left running (for ``--stop``)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    http_port: int
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def jobreaper(
        cls, name: str, env: dict[str, str], log_dir: Path, *extra: str
    ) -> ServiceProcess:
        port = free_port()
        return cls(
            name=name,
            argv=[sys.executable, "-m", "services", name, "run", *extra],
            env={**env, "JOBREAPER_HTTP_PORT": str(port)},
            log_path=log_dir / f"{name}.log",
            http_port=port,
        )

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    async def ready(self, session: aiohttp.ClientSession) -> tuple[bool, str]:
        """Its /readyz: (ready, the detail the service gives)."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200, (await response.text()).strip()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False, "starting"

    async def stop(self, timeout_s: float = 20) -> int | None:
        """SIGTERM (the services finish what is in flight), SIGKILL after ``timeout_s``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.proc.poll() is None:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.proc is None else self.proc.returncode


async def wait_ready(
    services: list[ServiceProcess],
    timeout_s: float,
    progress: Callable[[list[str]], None] | None = None,
) -> None:
    """Until every service answers /readyz 200. Raises RuntimeError naming a service
    that exited or is not ready in time (with the end of its log)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            waiting: list[str] = []
            for service in services:
                code = service.exited()
                if code is not None:
                    raise RuntimeError(
                        f"{service.name} exited with status {code}; the end of "
                        f"{service.log_path}:\n{service.tail()}"
                    )
                ok, detail = await service.ready(session)
                if not ok:
                    waiting.append(f"{service.name} ({detail})")
            if not waiting:
                return
            if progress is not None:
                progress(waiting)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {timeout_s:.0f}s: {', '.join(waiting)}")
            await asyncio.sleep(0.3)


# -- what --keep leaves behind --------------------------------------------------------


def save_kept(stack_dir: Path, namespace: str, services: list[ServiceProcess]) -> Path:
    path = stack_dir / KEPT_FILE
    record = {
        "namespace": namespace,
        "services": [
            {"name": s.name, "pid": s.proc.pid, "port": s.http_port}
            for s in services
            if s.proc is not None
        ],
    }
    path.write_text(json.dumps(record, indent=2))
    return path


def load_kept(stack_dir: Path) -> dict[str, object] | None:
    path = stack_dir / KEPT_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stop_kept(stack_dir: Path, say: Callable[[str], None]) -> str | None:
    """Stop the services a ``--keep`` run left (only if each pid is still one of our
    service processes); return the namespace it used, and forget the record."""
    record = load_kept(stack_dir)
    if record is None:
        return None
    services = record.get("services")
    signalled: list[int] = []
    for entry in services if isinstance(services, list) else []:
        pid, name = int(entry.get("pid", 0)), str(entry.get("name", "?"))
        if pid > 0 and _is_our_service(pid, name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                signalled.append(pid)
                say(f"stopping the {name} an earlier --keep run left (pid {pid})")
    for pid in signalled:
        _wait_gone(pid, 20)
    (stack_dir / KEPT_FILE).unlink(missing_ok=True)
    namespace = record.get("namespace")
    return namespace if isinstance(namespace, str) else None


def _is_our_service(pid: int, name: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"services" in argv and name.encode() in argv and b"run" in argv


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Wait for a process we signalled (not our child: poll /proc); SIGKILL it late."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
