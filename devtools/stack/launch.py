"""Starting one of a stack's processes and waiting until it serves.

Shared by the component modules (``kafka``, ``etcd``, ``apiserver``,
``controllers``, ``kwok``) and by ``faults`` (a restarted component is waited
for with the same ready check as at start).
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from devtools.stack import process
from devtools.stack.errors import StackError
from devtools.stack.layout import Layout, State, save_state
from devtools.stack.util import Say, free_port, last_line, log_mentions

#: What a component's log says when a port it was given was taken meanwhile.
PORT_IN_USE = ("address already in use", "BindException", "bind: address already in use")


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    proc: tuple[str, Layout] | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``check`` until true; fail early if the watched process died."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None:
            name, layout = proc
            if process.running(layout.pid(name)) is None:
                log = layout.log(name)
                hint = last_line(log)
                raise StackError(
                    "the process exited" + (f": {hint}" if hint else ""),
                    step=f"start {name}",
                    log=log,
                )
        if time.monotonic() > deadline:
            proc_log = proc[1].log(proc[0]) if proc is not None else None
            raise StackError(f"not ready after {timeout:.0f}s", step=what, log=proc_log)
        time.sleep(interval)


def http_ok(url_host: str, port: int, path: str, *, tls: bool) -> bool:
    """Whether ``GET path`` answers 200 (a health endpoint)."""
    conn: http.client.HTTPConnection
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a component's self-signed serving cert on loopback
        conn = http.client.HTTPSConnection(url_host, port, context=ctx, timeout=3)
    else:
        conn = http.client.HTTPConnection(url_host, port, timeout=3)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@dataclass(frozen=True)
class Launcher:
    """Starts the processes of one stack: its folder, and where progress lines go."""

    layout: Layout
    say: Say

    @property
    def name(self) -> str:
        return self.layout.name

    def spawn(self, proc: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``proc`` (pid file ``run/<proc>.pid``, log ``logs/<proc>.log``)."""
        process.spawn(
            proc, argv, pid_file=self.layout.pid(proc), log=self.layout.log(proc), env=env
        )

    def start_with_port_retry(
        self,
        proc: str,
        state: State,
        port_keys: tuple[str, ...],
        taken: set[int],
        start: Callable[[], None],
        ready: Callable[[], bool],
        timeout: float,
    ) -> None:
        """Start a process on free ports; if a port was grabbed meanwhile, pick others."""
        for attempt in range(3):
            for key in port_keys:
                state.ports[key] = free_port(taken)
            save_state(self.layout, state)
            start()
            try:
                wait_for(f"start {proc}", ready, timeout=timeout, proc=(proc, self.layout))
                return
            except StackError:
                process.stop(self.layout.pid(proc))
                if attempt < 2 and log_mentions(self.layout.log(proc), *PORT_IN_USE):
                    self.say(f"  a port of {proc} was taken meanwhile; picking others")
                    continue
                raise
