"""etcd: the API server's store, one member on loopback (no fsync: a throw-away cluster)."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

from devtools.stack.build import Build
from devtools.stack.errors import StackError
from devtools.stack.launch import Launcher, http_ok
from devtools.stack.layout import State
from devtools.stack.util import elapsed


def ready_check(ports: Mapping[str, int]) -> Callable[[], bool]:
    """etcd's ``/health`` answers 200."""
    return lambda: http_ok("127.0.0.1", ports["etcd"], "/health", tls=False)


def start(launcher: Launcher, state: State, etcd: Build, taken: set[int]) -> None:
    """Start etcd on free client and peer ports, fresh data; wait until healthy."""
    layout = launcher.layout
    t0 = time.monotonic()

    def spawn() -> None:
        client, peer = state.ports["etcd"], state.ports["etcd-peer"]
        shutil.rmtree(layout.data / "etcd", ignore_errors=True)
        launcher.spawn(
            "etcd",
            [
                str(etcd.bin("etcd")),
                "--name=jobreaper",
                f"--data-dir={layout.data / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=jobreaper=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # a throw-away test cluster: speed over durability
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )

    launcher.start_with_port_retry(
        "etcd", state, ("etcd", "etcd-peer"), taken, spawn, ready_check(state.ports), timeout=60
    )
    launcher.say(f"  etcd {etcd.version} ready on 127.0.0.1:{state.ports['etcd']} ({elapsed(t0)})")


def compact(port: int) -> int:
    """Compact etcd's history up to its current revision (physically); returns it.

    Through etcd's gRPC gateway on the client port (``/v3/kv/range`` for the
    revision, ``/v3/kv/compaction``), as the API server's own compactor does
    every 5 minutes.
    """
    # Any key: the response header carries the store's current revision.
    header = _post(port, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
    revision = int(header["header"]["revision"])
    _post(port, "/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def _post(port: int, path: str, body: dict[str, Any]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise StackError(f"etcd {path}: {e}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise StackError(f"etcd {path}: HTTP {response.status}: {raw[:200]!r}")
    return json.loads(raw)
