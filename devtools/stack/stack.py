"""Bring a named local stack up and down: Kafka, etcd, the Kubernetes control plane, kwok.

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
that the pid still belongs to the process that was started.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import json
import shutil
import signal
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.stack import build as buildmod
from devtools.stack import config, kafkaprobe, process
from devtools.stack.build import Build
from devtools.stack.certs import Pki, ensure_pki
from devtools.stack.errors import StackError
from devtools.stack.kuberest import KubeRest, KubeRestError
from devtools.stack.util import (
    Say,
    elapsed,
    free_port,
    last_line,
    log_mentions,
    require_tool,
    run_logged,
)

KWOK_NODE_LABEL = "jobreaper.test/kwok-node"
# How long a restart waits after SIGTERM before SIGKILL. The API server's
# graceful shutdown waits 60 s for open watch connections to end
# ("Failed to shutdown server: context deadline exceeded"): not worth waiting for.
STOP_GRACE_S = {"kube-apiserver": 5.0}
PORT_IN_USE = ("address already in use", "BindException", "bind: address already in use")


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
        return env


@dataclass
class State:
    name: str
    ports: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    builds: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    up: bool = False
    lost: list[str] = field(default_factory=list)  # nodes made lost on purpose


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
    return f"kwok-{node}"


# --- state ------------------------------------------------------------------


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
    )


def process_names(state: State) -> list[str]:
    """Every process of the stack, in start order."""
    fixed = ["kafka", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    return fixed + [kwok_proc(n) for n in state.nodes]


# --- waiting ----------------------------------------------------------------


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


def _http_ok(url_host: str, port: int, path: str, *, tls: bool) -> bool:
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


# --- configuration files ------------------------------------------------------


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, pki: Pki, who: str, port: int, cluster: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": _b64(pki.ca_crt),
                },
            }
        ],
        "users": [
            {
                "name": who,
                "user": {
                    "client-certificate-data": _b64(pki.client_crt(who)),
                    "client-key-data": _b64(pki.client_key(who)),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": who}}],
        "current-context": cluster,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    tmp.chmod(0o600)
    tmp.replace(path)


AUDIT_POLICY = """\
# Audit policy of the jobreaper local stack.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
# Noise: node leases (renewed every 2 s per node) and health probes.
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi/*", "/metrics"]
# Pods in full detail: delete options (grace period, preconditions) and patch
# bodies (activeDeadlineSeconds) are what jobreaper's tests check; the response
# (the pod as written: uid, resourceVersion) lets bench_watcher match each write
# to the watcher's observation of it.
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods", "pods/status", "pods/binding", "pods/eviction"]
- level: Metadata
"""

KAFKA_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log=WARN
"""


def kafka_properties(
    layout: Layout,
    port: int,
    controller_port: int,
    *,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """The broker's ``server.properties``: one KRaft node (broker and controller),
    loopback only, data in ``<layout.data>/kafka``. ``overrides`` replaces or adds
    properties (another listener's security, an authorizer: the ACL tests)."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(layout.data / "kafka"),
        "num.partitions": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.dedupe.buffer.size": "1048577",
        "log.cleaner.threads": "1",
        "log.segment.bytes": "67108864",
    }
    props.update(overrides or {})
    lines = [f"{key}={value}" for key, value in props.items()]
    return "\n".join(
        ["# Kafka of the jobreaper local stack: one KRaft node, loopback only.", *lines, ""]
    )


def kafka_java(layout: Layout, kafka: Build, *, heap: bool = False) -> list[str]:
    """``java ... -cp <jars>``: a Kafka class runs after it (the broker with ``heap``)."""
    java = require_tool("java", "Kafka runs on a Java 17+ JRE")
    argv = [java]
    if heap:
        argv += [
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
        ]
    else:
        argv += ["-Xmx256m", "-XX:TieredStopAtLevel=1"]
    return [
        *argv,
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{layout.conf / 'kafka-log4j.properties'}",
        f"-Dkafka.logs.dir={layout.logs}",
        "-cp",
        f"{kafka.lib}/*",
    ]


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka's ``Uuid.randomUuid`` makes them: url-safe
    base64 of 16 random bytes, never starting with ``-`` (one id in 64 does; the
    storage tool then reads it as an option, and CI failed on one)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def format_kafka_storage(
    layout: Layout, kafka: Build, properties: str, *, extra_args: Sequence[str] = ()
) -> None:
    """Write ``conf/kafka.properties`` and the log4j config, and format a fresh data
    folder (a JVM run of ~2 s). ``extra_args`` go to ``StorageTool format``
    (``--add-scram``: SCRAM credentials that exist from the first start)."""
    layout.conf.mkdir(parents=True, exist_ok=True)
    (layout.conf / "kafka-log4j.properties").write_text(KAFKA_LOG4J)
    props = layout.conf / "kafka.properties"
    props.write_text(properties)
    cluster_id = kafka_cluster_id()
    shutil.rmtree(layout.data / "kafka", ignore_errors=True)
    run_logged(
        [
            *kafka_java(layout, kafka),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(props),
            *extra_args,
        ],
        step="format Kafka storage (kafka.tools.StorageTool)",
        log=layout.log("kafka-format"),
        timeout=120,
    )


def spawn_kafka(layout: Layout, kafka: Build) -> process.ProcessRecord:
    """Start the broker of ``conf/kafka.properties`` (pid file ``run/kafka.pid``)."""
    return process.spawn(
        "kafka",
        [
            *kafka_java(layout, kafka, heap=True),
            "kafka.Kafka",
            str(layout.conf / "kafka.properties"),
        ],
        pid_file=layout.pid("kafka"),
        log=layout.log("kafka"),
    )


# --- the stack ------------------------------------------------------------------


class Stack:
    def __init__(self, name: str, say: Say, *, root: Path | None = None) -> None:
        self.layout = Layout(name, root)
        self.say = say
        self._kafka_t0 = 0.0
        self.kafka_extra: dict[str, str] = {}
        """Broker settings added to (or overriding) ``kafka_properties``."""

    @property
    def name(self) -> str:
        return self.layout.name

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

    # -- up -------------------------------------------------------------------

    def up(self, *, nodes: int = config.DEFAULT_NODE_COUNT) -> StackInfo:
        with locked(self.layout):
            state = self.state()
            if state is not None and self._healthy_within(state, timeout=30):
                self.say(f"stack '{self.name}' is already up")
                return info_from(self.layout, state)
            if state is not None:
                self._stop_all(state, quiet=True)  # half-started or crashed: start afresh
            require_tool("java", "Kafka runs on a Java 17+ JRE (apt-get install openjdk-17-jre)")
            builds = buildmod.ensure_builds(self.say)
            start = time.monotonic()
            state = State(
                name=self.name,
                nodes=[f"kwok-node-{i}" for i in range(nodes)],
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

    def up_kafka_only(self, properties: dict[str, str]) -> str:
        """Start a Kafka broker alone in this stack's folder (no etcd, no Kubernetes),
        with ``properties`` added to its server.properties; return its bootstrap.

        For a test that needs broker settings the stack's broker does not have and
        cannot change at run time (``log.retention.check.interval.ms`` is read-only
        in Kafka 3.9). Fresh data every time; ``down(purge=True)`` stops it."""
        with locked(self.layout):
            require_tool("java", "Kafka runs on a Java 17+ JRE (apt-get install openjdk-17-jre)")
            (kafka,) = buildmod.ensure_builds(self.say, ("kafka",)).values()
            state = State(
                name=self.name,
                builds={"kafka": kafka.key},
                versions={"kafka": kafka.version},
                started_at=time.time(),
            )
            self.kafka_extra = dict(properties)
            try:
                self._fresh_dirs()
                save_state(self.layout, state)
                taken: set[int] = set()
                self._prepare_kafka(state, kafka, taken)
                self._start_kafka(state, kafka)
                self._wait_kafka(state, kafka, taken)
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
        layout = self.layout
        self._fresh_dirs()
        save_state(self.layout, state)  # so `down` finds a half-started stack
        pki = ensure_pki(layout.pki_dir, layout.log("pki"))
        taken: set[int] = set()

        self._prepare_kafka(state, builds["kafka"], taken)
        self._start_etcd(state, builds["etcd"], taken)
        self._start_kafka(state, builds["kafka"])
        self._start_apiserver(state, builds["kube"], pki, taken)
        self._start_controllers(state, builds["kube"], pki, taken)
        self._start_nodes(state, builds["kwok"], pki)
        self._wait_kafka(state, builds["kafka"], taken)

    def _start_with_port_retry(
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

    def _spawn(self, proc: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        process.spawn(
            proc, argv, pid_file=self.layout.pid(proc), log=self.layout.log(proc), env=env
        )

    # etcd

    def _start_etcd(self, state: State, etcd: Build, taken: set[int]) -> None:
        layout = self.layout
        t0 = time.monotonic()

        def start() -> None:
            client, peer = state.ports["etcd"], state.ports["etcd-peer"]
            shutil.rmtree(layout.data / "etcd", ignore_errors=True)
            self._spawn(
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

        self._start_with_port_retry(
            "etcd",
            state,
            ("etcd", "etcd-peer"),
            taken,
            start,
            lambda: _http_ok("127.0.0.1", state.ports["etcd"], "/health", tls=False),
            timeout=60,
        )
        self.say(f"  etcd {etcd.version} ready on 127.0.0.1:{state.ports['etcd']} ({elapsed(t0)})")

    # Kubernetes

    def _start_apiserver(self, state: State, kube: Build, pki: Pki, taken: set[int]) -> None:
        layout = self.layout
        policy = layout.conf / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        t0 = time.monotonic()

        def start() -> None:
            self._spawn(
                "kube-apiserver",
                [
                    str(kube.bin("kube-apiserver")),
                    f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={state.ports['apiserver']}",
                    f"--cert-dir={layout.root / 'pki-runtime'}",
                    f"--tls-cert-file={pki.serving_crt}",
                    f"--tls-private-key-file={pki.serving_key}",
                    f"--client-ca-file={pki.ca_crt}",
                    "--authorization-mode=Node,RBAC",
                    f"--service-cluster-ip-range={config.SERVICE_CLUSTER_IP_RANGE}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={layout.audit_log}",
                    "--audit-log-format=json",
                    "--audit-log-mode=blocking",
                    "--audit-log-maxsize=200",
                    "--audit-log-maxbackup=3",
                    # The kubernetes Service's endpoints cannot point at loopback.
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true",
                    "--profiling=false",
                    "--event-ttl=1h",
                ],
            )

        rest = KubeRest(0, pki, timeout=3)

        def ready() -> bool:
            rest.port = state.ports["apiserver"]
            return rest.readyz()

        self._start_with_port_retry(
            "kube-apiserver", state, ("apiserver",), taken, start, ready, timeout=120
        )
        port = state.ports["apiserver"]
        cluster = f"jobreaper-{self.name}"
        write_kubeconfig(layout.kubeconfig, pki, "admin", port, cluster)
        for who in ("kube-controller-manager", "kube-scheduler", "kwok"):
            write_kubeconfig(layout.component_kubeconfig(who), pki, who, port, cluster)
        self.say(
            f"  kube-apiserver {kube.version} ready on https://127.0.0.1:{port} ({elapsed(t0)})"
        )

    def _start_controllers(self, state: State, kube: Build, pki: Pki, taken: set[int]) -> None:
        layout = self.layout
        t0 = time.monotonic()
        kcm_conf = str(layout.component_kubeconfig("kube-controller-manager"))
        sched_conf = str(layout.component_kubeconfig("kube-scheduler"))

        def start_kcm() -> None:
            self._spawn(
                "kube-controller-manager",
                [
                    str(kube.bin("kube-controller-manager")),
                    f"--kubeconfig={kcm_conf}",
                    f"--authentication-kubeconfig={kcm_conf}",
                    f"--authorization-kubeconfig={kcm_conf}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={state.ports['kube-controller-manager']}",
                    f"--cert-dir={layout.root / 'pki-runtime'}",
                    "--controllers=*",
                    "--leader-elect=false",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki.sa_key}",
                    f"--root-ca-file={pki.ca_crt}",
                    f"--cluster-signing-cert-file={pki.ca_crt}",
                    f"--cluster-signing-key-file={pki.ca_key}",
                    f"--cluster-name=jobreaper-{self.name}",
                    f"--service-cluster-ip-range={config.SERVICE_CLUSTER_IP_RANGE}",
                    f"--node-monitor-period={config.NODE_MONITOR_PERIOD}",
                    f"--node-monitor-grace-period={config.NODE_MONITOR_GRACE_PERIOD}",
                    "--profiling=false",
                ],
            )

        def start_scheduler() -> None:
            self._spawn(
                "kube-scheduler",
                [
                    str(kube.bin("kube-scheduler")),
                    f"--kubeconfig={sched_conf}",
                    f"--authentication-kubeconfig={sched_conf}",
                    f"--authorization-kubeconfig={sched_conf}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={state.ports['kube-scheduler']}",
                    f"--cert-dir={layout.root / 'pki-runtime'}",
                    "--leader-elect=false",
                    "--profiling=false",
                ],
            )

        for proc, starter in (
            ("kube-controller-manager", start_kcm),
            ("kube-scheduler", start_scheduler),
        ):

            def healthy(proc: str = proc) -> bool:
                return _http_ok("127.0.0.1", state.ports[proc], "/healthz", tls=True)

            self._start_with_port_retry(proc, state, (proc,), taken, starter, healthy, timeout=90)
        self.say(f"  kube-controller-manager and kube-scheduler ready ({elapsed(t0)})")

    # kwok

    def _kwok_config(self) -> Path:
        src = config.stack_sources() / "kwok" / "stages.yaml"
        dest = self.layout.conf / "kwok.yaml"
        if not dest.exists() or dest.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dest)
        return dest

    def _create_node(self, rest: KubeRest, node: str, index: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    KWOK_NODE_LABEL: "true",
                },
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {
                "podCIDR": f"10.244.{index}.0/24",
                "podCIDRs": [f"10.244.{index}.0/24"],
            },
        }
        try:
            rest.json("POST", "/api/v1/nodes", body)
        except KubeRestError as e:
            if e.status != 409:
                raise StackError(str(e), step=f"create node {node}") from None

    def start_kwok(self, state: State, kwok: Build, node: str) -> None:
        index = state.nodes.index(node)
        proc = kwok_proc(node)
        self._spawn(
            proc,
            [
                str(kwok.bin("kwok")),
                f"--kubeconfig={self.layout.component_kubeconfig('kwok')}",
                f"--config={self._kwok_config()}",
                f"--manage-single-node={node}",
                f"--node-lease-duration-seconds={config.NODE_LEASE_SECONDS}",
                f"--node-ip=10.10.0.{index + 1}",
                f"--cidr=10.244.{index}.0/24",
            ],
        )

    def _start_nodes(self, state: State, kwok: Build, pki: Pki) -> None:
        t0 = time.monotonic()
        rest = KubeRest(state.ports["apiserver"], pki)
        for index, node in enumerate(state.nodes):
            self._create_node(rest, node, index)
            self.start_kwok(state, kwok, node)
        for node in state.nodes:

            def is_ready(node: str = node) -> bool:
                return node_ready(rest, node) is True

            wait_for(
                f"node {node} Ready",
                is_ready,
                timeout=60,
                proc=(kwok_proc(node), self.layout),
            )
        names = ", ".join(state.nodes)
        self.say(f"  kwok {kwok.version}: nodes {names} Ready ({elapsed(t0)})")

    # Kafka

    def _prepare_kafka(self, state: State, kafka: Build, taken: set[int]) -> None:
        """Write the broker config and format its storage (a JVM run of ~2 s)."""
        state.ports["kafka"] = free_port(taken)
        state.ports["kafka-controller"] = free_port(taken)
        format_kafka_storage(
            self.layout,
            kafka,
            kafka_properties(
                self.layout,
                state.ports["kafka"],
                state.ports["kafka-controller"],
                overrides=self.kafka_extra,
            ),
        )

    def _start_kafka(self, state: State, kafka: Build) -> None:
        self._kafka_t0 = time.monotonic()
        spawn_kafka(self.layout, kafka)

    def _wait_kafka(self, state: State, kafka: Build, taken: set[int]) -> None:
        """Wait for the broker; if a port was grabbed before it bound, try other ports."""
        for attempt in range(3):
            port = state.ports["kafka"]

            def ready(port: int = port) -> bool:
                return kafkaprobe.ready("127.0.0.1", port)

            try:
                wait_for(
                    "start kafka",
                    ready,
                    timeout=120,
                    proc=("kafka", self.layout),
                )
                break
            except StackError:
                process.stop(self.layout.pid("kafka"))
                if attempt < 2 and log_mentions(self.layout.log("kafka"), *PORT_IN_USE):
                    self.say("  a port of kafka was taken meanwhile; picking others")
                    self.layout.log("kafka").rename(self.layout.log(f"kafka.port-clash-{attempt}"))
                    self._prepare_kafka(state, kafka, taken)
                    save_state(self.layout, state)
                    self._start_kafka(state, kafka)
                    continue
                raise
        self.say(
            f"  Kafka {state.versions.get('kafka', '')} ready on 127.0.0.1:{state.ports['kafka']} "
            f"({elapsed(self._kafka_t0)} since start)"
        )

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
        """Stop in three waves: kwok and the controllers, then the API server and
        Kafka, then etcd. Pid files of processes not in ``state`` are stopped too."""
        names = process_names(state)
        known = {self.layout.pid(n) for n in names}
        extra = [p for p in sorted(self.layout.run.glob("*.pid")) if p not in known]
        waves = [
            [
                n
                for n in names
                if n.startswith("kwok-") or n in ("kube-controller-manager", "kube-scheduler")
            ],
            ["kube-apiserver", "kafka"],
            ["etcd"],
        ]
        stopped = False
        for wave in [*[[self.layout.pid(n) for n in w] for w in waves], extra]:
            for record in process.stop_many(wave, timeout=20):
                stopped = True
                if not quiet:
                    self.say(f"  stopped {record.name} (pid {record.pid})")
        return stopped

    # -- nodes -------------------------------------------------------------------

    def _rest(self, state: State) -> KubeRest:
        return KubeRest(state.ports["apiserver"], Pki(self.layout.pki_dir))

    def _running_state(self) -> State:
        state = self.state()
        if state is None or not state.up:
            raise StackError(f"stack '{self.name}' is not up (run: jobreaper-dev stack up)")
        return state

    def lose_node(self, node: str, *, wait_not_ready: bool = False, timeout: float = 60) -> None:
        """Make ``node`` lost: its kwok stops (no heartbeat, no pod updates, no deletions)."""
        with locked(self.layout):
            state = self._running_state()
            if node not in state.nodes:
                raise StackError(f"no such node {node!r} (nodes: {', '.join(state.nodes)})")
            process.stop(self.layout.pid(kwok_proc(node)), sig=signal.SIGKILL)
            if node not in state.lost:
                state.lost.append(node)
                save_state(self.layout, state)
        if wait_not_ready:
            rest = self._rest(state)
            wait_for(
                f"node {node} NotReady",
                lambda: node_ready(rest, node) is False,
                timeout=timeout,
                interval=0.5,
            )

    def restore_node(self, node: str, *, wait_ready: bool = True, timeout: float = 60) -> None:
        """Bring a lost node back: its kwok starts again and takes the node over."""
        with locked(self.layout):
            state = self._running_state()
            if node not in state.nodes:
                raise StackError(f"no such node {node!r} (nodes: {', '.join(state.nodes)})")
            if process.running(self.layout.pid(kwok_proc(node))) is None:
                kwok = buildmod.build_for("kwok")
                if not kwok.complete:
                    raise StackError("kwok is not built (run: jobreaper-dev stack build)")
                self.start_kwok(state, kwok, node)
            if node in state.lost:
                state.lost.remove(node)
                save_state(self.layout, state)
        if wait_ready:
            rest = self._rest(state)
            wait_for(
                f"node {node} Ready",
                lambda: node_ready(rest, node) is True,
                timeout=timeout,
                proc=(kwok_proc(node), self.layout),
                interval=0.5,
            )

    # -- restarts ------------------------------------------------------------------

    def restart(
        self,
        component: str,
        *,
        kill: bool = False,
        down_s: float = 0.0,
        timeout: float = 120,
    ) -> float:
        """Stop one process of the stack and start it again, same command line.

        Same ports, same data folder, same certificates: clients reconnect to
        the same address and find what they left (Kafka keeps its topics,
        offsets and transactions; etcd its keys and revision). The command line
        is the one recorded in the process's pid file, so nothing is re-derived.
        ``kill`` stops it with SIGKILL (a crash) instead of SIGTERM (a clean
        shutdown); ``down_s`` keeps it stopped that long. Waits until the
        component is ready again; returns how long it was unavailable (s).
        """
        with locked(self.layout):
            state = self._running_state()
            names = process_names(state)
            if component not in names:
                raise StackError(
                    f"no such component {component!r} (components: {', '.join(names)})"
                )
            if component.startswith("kwok-") and component[len("kwok-") :] in state.lost:
                raise StackError(f"{component} is stopped on purpose (node lost): use restore-node")
            pid_file = self.layout.pid(component)
            record = process.running(pid_file)
            if record is None:
                raise StackError(f"{component} is not running (run: jobreaper-dev stack up)")
            t0 = time.monotonic()
            grace = STOP_GRACE_S.get(component, 30.0)
            process.stop(pid_file, sig=signal.SIGKILL if kill else signal.SIGTERM, timeout=grace)
            if down_s > 0:
                time.sleep(down_s)
            self._spawn(component, record.argv)
            wait_for(
                f"restart {component}",
                self._ready_check(component, state),
                timeout=timeout,
                proc=(component, self.layout),
                interval=0.1,
            )
            took = time.monotonic() - t0
        self.say(f"  {component} restarted: unavailable for {took:.1f}s")
        return took

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (physically); returns it.

        Through etcd's gRPC gateway on the client port (``/v3/kv/range`` for the
        revision, ``/v3/kv/compaction``), as the API server's own compactor does
        every 5 minutes. A watch from an older resourceVersion that reaches
        etcd then gets ``410 Gone``.
        """
        state = self._running_state()
        port = state.ports["etcd"]
        # Any key: the response header carries the store's current revision.
        header = _etcd_post(port, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        revision = int(header["header"]["revision"])
        _etcd_post(port, "/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _ready_check(self, component: str, state: State) -> Callable[[], bool]:
        """How to tell that ``component`` serves again (the same checks as ``up``)."""
        ports = state.ports
        if component == "kafka":
            return lambda: kafkaprobe.ready("127.0.0.1", ports["kafka"])
        if component == "etcd":
            return lambda: _http_ok("127.0.0.1", ports["etcd"], "/health", tls=False)
        if component == "kube-apiserver":
            rest = KubeRest(ports["apiserver"], Pki(self.layout.pki_dir), timeout=3)
            return rest.readyz
        if component in ("kube-controller-manager", "kube-scheduler"):
            return lambda: _http_ok("127.0.0.1", ports[component], "/healthz", tls=True)
        node = component[len("kwok-") :]
        rest = self._rest(state)
        return lambda: node_ready(rest, node) is True

    def node_lost(self, node: str) -> bool:
        self._running_state()
        return process.running(self.layout.pid(kwok_proc(node))) is None

    def rss(self) -> dict[str, int]:
        state = self.state()
        if state is None:
            return {}
        return {name: process.rss_bytes(rec) for name, rec in self.processes(state).items() if rec}


def _etcd_post(port: int, path: str, body: dict[str, Any]) -> Any:
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


def node_ready(rest: KubeRest, node: str) -> bool | None:
    """True/False from the node's Ready condition; None if unknown or unreachable."""
    try:
        obj: Any = rest.json("GET", f"/api/v1/nodes/{node}")
    except (KubeRestError, OSError, http.client.HTTPException, ValueError):
        return None
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return None


def stack_names() -> list[str]:
    root = config.stacks_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
