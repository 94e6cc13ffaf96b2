"""Bring a named local stack up and down: Kafka, etcd, the Kubernetes control plane, kwok.

The order of a start, and why: Kafka's storage is formatted and etcd started
first; then the broker is spawned (its JVM is the slowest to come up) while
the API server, the controllers and the kwok nodes start one after the other;
the broker is waited for last. Each component's start and ready check live in
its module (``kafka``, ``etcd``, ``apiserver``, ``controllers``, ``kwok``), the
folder and state file in ``layout``, faults injected on purpose in ``faults``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from devtools.stack import (
    apiserver,
    config,
    controllers,
    etcd,
    kafka,
    kafkaprobe,
    kwok,
    process,
    realnode,
)
from devtools.stack import build as buildmod
from devtools.stack.build import Build
from devtools.stack.certs import Pki, ensure_pki
from devtools.stack.kuberest import KubeRest
from devtools.stack.launch import Launcher
from devtools.stack.layout import (
    Layout,
    StackInfo,
    State,
    info_from,
    kwok_proc,
    load_state,
    locked,
    process_names,
    save_state,
)
from devtools.stack.util import Say, elapsed, require_tool


class Stack:
    """One named stack: start it (or reuse it), stop it, ask how it is."""

    def __init__(self, name: str, say: Say, *, root: Path | None = None) -> None:
        self.launcher = Launcher(Layout(name, root), say)

    @property
    def name(self) -> str:
        return self.launcher.name

    @property
    def layout(self) -> Layout:
        return self.launcher.layout

    @property
    def say(self) -> Say:
        return self.launcher.say

    # -- queries ------------------------------------------------------------

    def state(self) -> State | None:
        return load_state(self.layout)

    def processes(self, state: State) -> dict[str, process.ProcessRecord | None]:
        return {p: process.running(self.layout.pid(p)) for p in process_names(state)}

    def healthy(self, state: State) -> bool:
        """Every process runs (but kwok of lost nodes), the API server is ready, Kafka answers."""
        if not state.up:
            return False
        lost = {kwok_proc(n) for n in state.lost}
        if not all(rec for name, rec in self.processes(state).items() if name not in lost):
            return False
        pki = Pki(self.layout.pki_dir)
        if not KubeRest(state.ports["apiserver"], pki, timeout=5).readyz():
            return False
        return kafkaprobe.ready("127.0.0.1", state.ports["kafka"])

    def _healthy_within(self, state: State, *, timeout: float) -> bool:
        """Healthy now, or soon: a loaded machine can make a probe time out once.

        False at once if a process is gone (a restart is needed anyway).
        """
        deadline = time.monotonic() + timeout
        lost = {kwok_proc(n) for n in state.lost}
        while state.up:
            if not all(r for n, r in self.processes(state).items() if n not in lost):
                return False
            if self.healthy(state):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return False

    def info(self) -> StackInfo | None:
        state = self.state()
        if state is None or not state.up:
            return None
        return info_from(self.layout, state)

    def rss(self) -> dict[str, int]:
        state = self.state()
        if state is None:
            return {}
        return {name: process.rss_bytes(rec) for name, rec in self.processes(state).items() if rec}

    # -- up -------------------------------------------------------------------

    def up(
        self, *, nodes: int = config.DEFAULT_NODE_COUNT, real_nodes: int | None = None
    ) -> StackInfo:
        """Start the stack, or reuse it if it runs healthy.

        ``real_nodes``: None reuses a running stack whatever its real nodes, and
        restarts a broken one with as many as it had (a new stack has none); a
        number restarts a running stack that has another number.
        """
        with locked(self.layout):
            state = self.state()
            if (
                state is not None
                and real_nodes in (None, len(state.real_nodes))
                and self._healthy_within(state, timeout=30)
            ):
                self.say(f"stack '{self.name}' is already up")
                return info_from(self.layout, state)
            if state is not None:
                # Half-started, crashed, or asked for another number of real nodes:
                # start afresh.
                self._stop_all(state, quiet=True)
            require_tool("java", "Kafka runs on a Java 17+ JRE (apt-get install openjdk-17-jre)")
            if real_nodes is None:
                real_nodes = len(state.real_nodes) if state is not None else 0
            components = config.COMPONENTS + (config.REAL_NODE_COMPONENTS if real_nodes else ())
            builds = buildmod.ensure_builds(self.say, components)
            start = time.monotonic()
            state = State(
                name=self.name,
                nodes=[f"kwok-node-{i}" for i in range(nodes)],
                real_nodes=realnode.node_names(real_nodes),
                builds={c: b.key for c, b in builds.items()},
                versions={c: b.version for c, b in builds.items()},
                started_at=time.time(),
            )
            try:
                self._start(state, builds)
            except BaseException:
                self.say(f"stack '{self.name}' failed to start; stopping what was started")
                self._stop_all(state, quiet=True)
                raise
            state.up = True
            save_state(self.layout, state)
            self.say(f"stack '{self.name}' is up in {elapsed(start)}")
            return info_from(self.layout, state)

    def up_kafka_only(self, properties: Mapping[str, str]) -> str:
        """Start a Kafka broker alone in this stack's folder (no etcd, no Kubernetes),
        with ``properties`` added to its server.properties; return its bootstrap.

        For a test that needs broker settings the stack's broker does not have and
        cannot change at run time (``log.retention.check.interval.ms`` is read-only
        in Kafka 3.9). Fresh data every time; ``down(purge=True)`` stops it."""
        with locked(self.layout):
            require_tool("java", "Kafka runs on a Java 17+ JRE (apt-get install openjdk-17-jre)")
            (kafka_build,) = buildmod.ensure_builds(self.say, ("kafka",)).values()
            state = State(
                name=self.name,
                builds={"kafka": kafka_build.key},
                versions={"kafka": kafka_build.version},
                started_at=time.time(),
            )
            overrides = dict(properties)
            try:
                self._fresh_dirs()
                save_state(self.layout, state)
                taken: set[int] = set()
                kafka.prepare(self.launcher, state, kafka_build, taken, overrides)
                started = kafka.start(self.launcher, kafka_build)
                kafka.wait_ready(self.launcher, state, kafka_build, taken, started, overrides)
            except BaseException:
                self._stop_all(state, quiet=True)
                raise
            save_state(self.layout, state)
            return f"127.0.0.1:{state.ports['kafka']}"

    def _fresh_dirs(self) -> None:
        layout = self.layout
        shutil.rmtree(layout.data, ignore_errors=True)
        shutil.rmtree(layout.run, ignore_errors=True)
        for d in (
            layout.conf,
            layout.data / "etcd",
            layout.data / "kafka",
            layout.logs,
            layout.run,
        ):
            d.mkdir(parents=True, exist_ok=True)
        layout.audit_log.parent.mkdir(parents=True, exist_ok=True)
        # Keep the previous run's logs one generation back.
        prev = layout.root / "logs.prev"
        shutil.rmtree(prev, ignore_errors=True)
        if any(layout.logs.iterdir()):
            layout.logs.rename(prev)
            layout.logs.mkdir()
        for old in layout.audit_log.parent.glob("audit*.log"):
            old.unlink()

    def _start(self, state: State, builds: dict[str, Build]) -> None:
        layout, launcher = self.layout, self.launcher
        self._fresh_dirs()
        save_state(layout, state)  # so `down` finds a half-started stack
        pki = ensure_pki(layout.pki_dir, layout.log("pki"))
        taken: set[int] = set()

        kafka.prepare(launcher, state, builds["kafka"], taken)
        etcd.start(launcher, state, builds["etcd"], taken)
        kafka_started = kafka.start(launcher, builds["kafka"])
        apiserver.start(launcher, state, builds["kube"], pki, taken)
        controllers.start(launcher, state, builds["kube"], pki, taken)
        kwok.start_nodes(launcher, state, builds["kwok"], pki)
        if state.real_nodes:
            realnode.start(launcher, state, builds["kubelet"], pki, taken)
            save_state(layout, state)  # the kubelets' ports
        kafka.wait_ready(launcher, state, builds["kafka"], taken, kafka_started)

    # -- down -----------------------------------------------------------------

    def down(self, *, purge: bool = False) -> bool:
        """Stop the stack's processes; ``purge`` also deletes its folder."""
        with locked(self.layout):
            state = self.state()
            stopped = False
            if state is not None:
                stopped = self._stop_all(state)
                state.up = False
                save_state(self.layout, state)
            else:
                # No state but maybe pid files (a crash while writing state).
                for pid_file in sorted(self.layout.run.glob("*.pid")):
                    stopped = process.stop(pid_file) or stopped
            if purge:
                for child in self.layout.root.iterdir():
                    if child.name != ".lock":
                        if child.is_dir():
                            shutil.rmtree(child, ignore_errors=True)
                        else:
                            child.unlink(missing_ok=True)
            return stopped

    def _stop_all(self, state: State, *, quiet: bool = False) -> bool:
        """Stop the real nodes first (kubelet, its containers, containerd), then in
        three waves: kwok and the controllers, then the API server and Kafka, then
        etcd. Pid files of processes not in ``state`` are stopped too."""
        stopped = False
        for what in realnode.stop(self.layout, state):
            stopped = True
            if not quiet:
                self.say(f"  stopped {what}")
        names = process_names(state)
        known = {self.layout.pid(n) for n in names}
        extra = [p for p in sorted(self.layout.run.glob("*.pid")) if p not in known]
        waves = [
            [n for n in names if n.startswith("kwok-") or n in controllers.CONTROLLERS],
            ["kube-apiserver", "kafka"],
            ["etcd"],
        ]
        for wave in [*[[self.layout.pid(n) for n in w] for w in waves], extra]:
            for record in process.stop_many(wave, timeout=20):
                stopped = True
                if not quiet:
                    self.say(f"  stopped {record.name} (pid {record.pid})")
        return stopped
