"""A stack's folder and its state file: what a stack is, on disk.

Per-stack state lives in ``<cache>/stacks/<name>/``::

    state.json        ports, nodes, builds, versions of the running stack
    kubeconfig        admin kubeconfig (client certificate, system:masters)
    pki/              CA, serving and client certificates, service-account keys
    conf/             component configs and kubeconfigs, kwok stages, audit policy
    data/             etcd and Kafka data (wiped on every fresh start)
    logs/             one log per process
    audit/audit.log   the API server's audit log (JSON lines)
    run/              pid files

Only processes recorded in ``run/*.pid`` are ever stopped, after checking
that the pid still belongs to the process that was started. Stacks started by
an older jobreaper (``jobreaper stack up``) have the same layout and state file,
so this code reads and stops them too: change neither lightly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devtools.stack import config


@dataclass(frozen=True)
class StackInfo:
    """What a client of a running stack needs to know.

    ``stack_dir`` and ``audit_log`` are None only for a cluster described by
    environment variables alone (not started by devtools.stack).
    """

    name: str
    stack_dir: Path | None
    kubeconfig: Path
    kafka_bootstrap: str
    audit_log: Path | None
    api_server: str
    nodes: tuple[str, ...]
    kube_version: str
    kafka_version: str
    #: Nodes run by a real kubelet (``stack up --real-nodes N``), beside ``nodes`` (kwok).
    real_nodes: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        """Environment variables for services and tests (``stack env`` prints them)."""
        env = {
            "JOBREAPER_KUBECONFIG": str(self.kubeconfig),
            "KUBECONFIG": str(self.kubeconfig),
            "JOBREAPER_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
        }
        if self.audit_log is not None:
            env["JOBREAPER_AUDIT_LOG"] = str(self.audit_log)
        if self.stack_dir is not None:
            env["JOBREAPER_STACK_DIR"] = str(self.stack_dir)
        if self.real_nodes:
            env["JOBREAPER_REAL_NODES"] = ",".join(self.real_nodes)
        return env


@dataclass
class State:
    """The contents of ``state.json``."""

    name: str
    ports: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    builds: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    up: bool = False
    lost: list[str] = field(default_factory=list)  # nodes made lost on purpose
    real_nodes: list[str] = field(default_factory=list)  # containerd + kubelet each


class Layout:
    """Paths inside one stack's folder (``<cache>/stacks/<name>`` unless ``root`` is given)."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.root = root if root is not None else config.stack_dir(name)

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.log"

    def pid(self, proc: str) -> Path:
        return self.run / f"{proc}.pid"

    def log(self, proc: str) -> Path:
        return self.logs / f"{proc}.log"

    def component_kubeconfig(self, who: str) -> Path:
        return self.conf / f"{who}.kubeconfig"


def kwok_proc(node: str) -> str:
    """The process (pid file, log) that simulates ``node``."""
    return f"kwok-{node}"


def containerd_proc(node: str) -> str:
    """The containerd of real node ``node``."""
    return f"containerd-{node}"


def kubelet_proc(node: str) -> str:
    """The kubelet of real node ``node``."""
    return f"kubelet-{node}"


def process_names(state: State) -> list[str]:
    """Every process of the stack, in start order."""
    fixed = ["kafka", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    real = [p for n in state.real_nodes for p in (containerd_proc(n), kubelet_proc(n))]
    return fixed + [kwok_proc(n) for n in state.nodes] + real


def load_state(layout: Layout) -> State | None:
    try:
        data = json.loads(layout.state.read_text())
        return State(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_state(layout: Layout, state: State) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    tmp = layout.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(layout.state)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down/node changes of one stack across processes."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def info_from(layout: Layout, state: State) -> StackInfo:
    return StackInfo(
        name=state.name,
        stack_dir=layout.root,
        kubeconfig=layout.kubeconfig,
        kafka_bootstrap=f"127.0.0.1:{state.ports['kafka']}",
        audit_log=layout.audit_log,
        api_server=f"https://127.0.0.1:{state.ports['apiserver']}",
        nodes=tuple(state.nodes),
        kube_version=state.versions.get("kube", ""),
        kafka_version=state.versions.get("kafka", ""),
        real_nodes=tuple(state.real_nodes),
    )


def stack_names() -> list[str]:
    """The stacks that have a state file under the cache."""
    root = config.stacks_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
