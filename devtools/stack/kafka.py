"""Kafka: one KRaft node (broker and controller) on loopback, from the cached jars.

Kafka starts early (its JVM takes longest) and is waited for last: ``prepare``
picks its ports and formats its storage, ``start`` spawns the broker, and
``wait_ready`` waits for it once the Kubernetes side is up. The building blocks
(``kafka_properties``, ``format_kafka_storage``, ``spawn_kafka``) also start the
ACL tests' broker of their own.
"""

from __future__ import annotations

import base64
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from devtools.stack import kafkaprobe, process
from devtools.stack.build import Build
from devtools.stack.errors import StackError
from devtools.stack.launch import PORT_IN_USE, Launcher, wait_for
from devtools.stack.layout import Layout, State, save_state
from devtools.stack.util import elapsed, free_port, log_mentions, require_tool, run_logged

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


def ready_check(ports: Mapping[str, int]) -> Callable[[], bool]:
    """The broker answers a metadata request and lists itself."""
    return lambda: kafkaprobe.ready("127.0.0.1", ports["kafka"])


def prepare(
    launcher: Launcher,
    state: State,
    kafka: Build,
    taken: set[int],
    overrides: Mapping[str, str] | None = None,
) -> None:
    """Pick the broker's ports, write its config and format its storage (a JVM run of
    ~2 s). ``overrides``: broker settings added to (or overriding) ``kafka_properties``."""
    state.ports["kafka"] = free_port(taken)
    state.ports["kafka-controller"] = free_port(taken)
    format_kafka_storage(
        launcher.layout,
        kafka,
        kafka_properties(
            launcher.layout,
            state.ports["kafka"],
            state.ports["kafka-controller"],
            overrides=overrides,
        ),
    )


def start(launcher: Launcher, kafka: Build) -> float:
    """Spawn the prepared broker; returns when (``time.monotonic``) it was started."""
    started = time.monotonic()
    spawn_kafka(launcher.layout, kafka)
    return started


def wait_ready(
    launcher: Launcher,
    state: State,
    kafka: Build,
    taken: set[int],
    started: float,
    overrides: Mapping[str, str] | None = None,
) -> None:
    """Wait for the broker; if a port was grabbed before it bound, try other ports."""
    layout = launcher.layout
    for attempt in range(3):
        try:
            wait_for("start kafka", ready_check(state.ports), timeout=120, proc=("kafka", layout))
            break
        except StackError:
            process.stop(layout.pid("kafka"))
            if attempt < 2 and log_mentions(layout.log("kafka"), *PORT_IN_USE):
                launcher.say("  a port of kafka was taken meanwhile; picking others")
                layout.log("kafka").rename(layout.log(f"kafka.port-clash-{attempt}"))
                prepare(launcher, state, kafka, taken, overrides)
                save_state(layout, state)
                started = start(launcher, kafka)
                continue
            raise
    launcher.say(
        f"  Kafka {state.versions.get('kafka', '')} ready on 127.0.0.1:{state.ports['kafka']} "
        f"({elapsed(started)} since start)"
    )
