"""A Kafka broker of its own for the ACL tests: SASL/SCRAM and ACLs enforced.

Started from the local stack's cached Kafka jars with the stack's own functions
(``devtools.stack.kafka``: ``kafka_properties``, ``format_kafka_storage``,
``spawn_kafka``), in a folder of the test's, on free loopback ports. The
shared stack's broker is never touched.

- One listener for clients and the broker itself, ``SASL_PLAINTEXT`` with
  ``SCRAM-SHA-512``; the KRaft controller listener stays ``PLAINTEXT`` on
  another loopback port (KRaft controllers cannot authenticate SCRAM: the
  credentials live in the metadata they serve).
- ``StandardAuthorizer`` (KRaft's), ``allow.everyone.if.no.acl.found=false``.
- Super users: ``admin`` (the inter-broker principal, and the test's admin
  client) and ``ANONYMOUS``, which is what the broker part of this node is on
  the ``PLAINTEXT`` controller listener (it registers with the controller,
  which wants ``ClusterAction``). No client of the tests ever connects
  there: they all authenticate on the SASL listener.
- SCRAM credentials of every user are created at format time
  (``StorageTool format --add-scram``), so they exist from the first start.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from devtools.stack import process
from devtools.stack.build import Build, ensure_builds
from devtools.stack.errors import StackError
from devtools.stack.kafka import (
    format_kafka_storage,
    kafka_java,
    kafka_properties,
    spawn_kafka,
)
from devtools.stack.layout import Layout
from devtools.stack.util import free_port, last_line, say_nothing
from services.runtime.kafka import wait_for_kafka
from services.runtime.settings import KafkaSettings

HERE = Path(__file__).parent
MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"


@dataclass
class SecureBroker:
    layout: Layout
    kafka: Build
    bootstrap: str
    passwords: dict[str, str]

    def settings(self, user: str, *, prefix: str = "jobreaper.", **extra: object) -> KafkaSettings:
        """The project's own Kafka settings for ``user`` (what its services read
        from ``JOBREAPER_KAFKA_*``)."""
        values: dict[str, object] = {
            "bootstrap": self.bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISM,
            "sasl_username": user,
            "sasl_password": SecretStr(self.passwords[user]),
            "topic_prefix": prefix,
            # As the manifests set it: only the topics principal creates topics.
            "create_topics": False,
            **extra,
        }
        return KafkaSettings.model_validate(values)

    def apply_acls(self, commands: list[list[str]]) -> None:
        """Run these ``kafka-acls.sh`` commands (arguments after the connection
        options) as ``admin``: ``kafka.admin.AclCommand``, the script's class, all
        in one JVM (``AclBatch.java``). Output in ``logs/kafka-acls.log``."""
        admin = self.layout.conf / "admin.properties"
        admin.write_text(
            "security.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism={MECHANISM}\n"
            f"sasl.jaas.config={_jaas(ADMIN, self.passwords[ADMIN])}\n"
        )
        connection = ["--bootstrap-server", self.bootstrap, "--command-config", str(admin)]
        lines = ["\t".join([*connection, *args]) for args in commands]
        log = self.layout.log("kafka-acls")
        with log.open("ab") as out:
            done = subprocess.run(
                [*kafka_java(self.layout, self.kafka), str(HERE / "AclBatch.java")],
                input="\n".join(lines).encode(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        if done.returncode != 0:
            raise StackError(
                f"exit status {done.returncode}: {last_line(log)}", step="kafka-acls", log=log
            )

    def stop(self) -> None:
        """Stop the broker (only the process this helper started) and delete its folder."""
        process.stop(self.layout.pid("kafka"), timeout=15)
        shutil.rmtree(self.layout.root, ignore_errors=True)


def _jaas(user: str, password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )


def _scram(user: str, password: str) -> str:
    return f"{MECHANISM}=[name={user},password={password}]"


async def start_secure_broker(
    root: Path, users: list[str], *, timeout: float = 120
) -> SecureBroker:
    """Format and start the broker in ``root``; return once ``admin`` can list topics."""
    kafka = ensure_builds(say_nothing, ("kafka",))["kafka"]
    layout = Layout("kafka-acls", root)
    for folder in (layout.conf, layout.data, layout.logs, layout.run):
        folder.mkdir(parents=True, exist_ok=True)
    passwords = {user: secrets.token_urlsafe(18) for user in [ADMIN, *users]}
    taken: set[int] = set()
    port, controller_port = free_port(taken), free_port(taken)
    jaas = _jaas(ADMIN, passwords[ADMIN])
    properties = kafka_properties(
        layout,
        port,
        controller_port,
        overrides={
            "listeners": (
                f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
            ),
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
            "auto.create.topics.enable": "false",
        },
    )
    scram = [arg for user, pw in passwords.items() for arg in ("--add-scram", _scram(user, pw))]
    format_kafka_storage(layout, kafka, properties, extra_args=scram)
    spawn_kafka(layout, kafka)
    broker = SecureBroker(layout, kafka, f"127.0.0.1:{port}", passwords)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.running(layout.pid("kafka")) is None:
                raise StackError(
                    f"the broker exited: {last_line(layout.log('kafka'))}",
                    step="start the ACL test broker",
                    log=layout.log("kafka"),
                )
            try:
                await wait_for_kafka(broker.settings(ADMIN), timeout_s=2)
                return broker
            except Exception:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)
    except BaseException:
        process.stop(layout.pid("kafka"), timeout=15)
        raise
