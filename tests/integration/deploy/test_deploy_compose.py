"""docker-compose.yml (issue 9) on the real stack: its topics service creates the
topics as designed on a real Kafka, and its services, run with the file's commands
and environments, become ready.

There is no container engine here, so compose does not start them: they run as
processes. That the file is valid Compose (the Compose Specification's JSON Schema,
what compose checks after it, and the project's own checks) is a unit test:
tests/unit/deploy/test_compose_file.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devtools.stack.api import StackInfo
from services.runtime.kafka import client_kwargs, topic_partitions
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames, partitions_for
from tests.integration.deploy.manifests import (
    ROOT,
    all_ready,
    free_port,
    jobreaper_command,
    local_env,
    run_once,
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
JOBREAPER_SERVICES = ("watcher", "killer", "executor", "config")


async def _topic_configs(settings: KafkaSettings, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for _error, _message, _type, name, entries in response.resources:
            out[name] = {entry[0]: entry[1] for entry in entries}
    return out


@pytest.mark.stack
async def test_the_topics_service_creates_every_topic_as_designed_and_is_idempotent(
    stack: StackInfo, topic_prefix: str
) -> None:
    """The compose file's topics service, run as compose runs it (its command and
    environment), on the local stack's Kafka under a test prefix."""
    topics = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["topics"]
    env = local_env(
        {k: str(v) for k, v in topics["environment"].items()},
        {
            "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
        },
    )
    command = jobreaper_command(topics["command"])
    partitions = int(topics["command"][topics["command"].index("--partitions") + 1])

    code, output = await run_once(command, env)
    assert code == 0, output
    names = TopicNames(topic_prefix)
    assert output.count("created ") == len(TOPIC_SPECS), output

    settings = KafkaSettings(bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix)
    wanted = [names(spec.name) for spec in TOPIC_SPECS]
    counts: dict[str, int] = {}
    for tp in await topic_partitions(settings, wanted):
        counts[tp.topic] = counts.get(tp.topic, 0) + 1
    configs = await _topic_configs(settings, wanted)
    for spec in TOPIC_SPECS:
        name = names(spec.name)
        assert counts[name] == partitions_for(spec, partitions), name
        for key, value in spec.configs().items():
            assert configs[name][key] == value, (name, key)

    code, output = await run_once(command, env)
    assert code == 0, output
    assert output.count("exists ") == len(TOPIC_SPECS), output


@pytest.mark.exclusive(
    "its services watch every namespace, and its killer and executor act on what they see"
)
@pytest.mark.stack
async def test_the_services_with_the_compose_settings_become_ready(
    stack: StackInfo, namespace: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Each compose service's command and environment, its mounts mapped to the
    files they mount (the kubeconfig: the local stack's), on the local Kafka."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    isolation = uuid.uuid4().hex[:8]
    local = {
        "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
        "JOBREAPER_KILLER_GROUP_ID": f"compose-killer-{isolation}",
        "JOBREAPER_EXECUTOR_GROUP_ID": f"compose-executor-{isolation}",
        "JOBREAPER_WATCHER_LEASE_NAMESPACE": namespace,
        "JOBREAPER_CONFIG_API_PORT": "0",
        # This watcher watches the whole shared stack: it must not put Warning Events
        # about invalid annotations on other tests' Jobs (tests/integration/watcher
        # tests the Events).
        "JOBREAPER_WATCHER_EVENTS": "false",
    }

    def declared(service: dict[str, Any]) -> dict[str, str]:
        mounts: dict[str, str] = {}
        for volume in service.get("volumes") or ():
            spec = volume.removesuffix(":ro").removesuffix(":rw")
            source, _, target = spec.rpartition(":")  # the source may hold ":-" defaults
            mounts[target] = (
                str(stack.kubeconfig)
                if source.startswith("${JOBREAPER_KUBECONFIG_FILE")
                else str((ROOT / source).resolve())
            )
        # A path that is not mounted stays as it is: the service must not need it.
        return {k: mounts.get(str(v), str(v)) for k, v in service["environment"].items()}

    code, output = await run_once(
        jobreaper_command(compose["topics"]["command"]),
        local_env(declared(compose["topics"]), local),
    )
    assert code == 0, output
    services = {
        name: (
            jobreaper_command(compose[name]["command"]),
            local_env(declared(compose[name]), {**local, "JOBREAPER_HTTP_PORT": str(free_port())}),
        )
        for name in JOBREAPER_SERVICES
    }
    async with all_ready(services, tmp_path):
        pass
