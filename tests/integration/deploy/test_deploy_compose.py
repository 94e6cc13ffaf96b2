"""docker-compose.yml (issue 9): the compose CLI accepts it, and its topics service
creates the topics as designed on a real Kafka.

There is no container engine here, so the services are not started by compose;
the compose plugin (built by ``jobreaper stack tool compose``) validates and
normalises the file through the real docker client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.runtime.kafka import client_kwargs, topic_partitions
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames, partitions_for
from services.stack import build
from services.stack.api import StackInfo
from services.stack.errors import StackError
from services.stack.util import say_stderr
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


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCKER_CONFIG whose cli-plugins/ holds the compose plugin built here."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine: `docker compose config` cannot run")
    try:
        built = build.ensure_tool("compose", say_stderr)
    except StackError as e:
        pytest.skip(f"the compose plugin cannot be built here: {e}")
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(built.bin(build.tool_binary("compose")))
    return config


def _compose_config(docker_config: Path, compose_file: Path, tmp: Path) -> Any:
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text("{}")
    env = {
        **os.environ,
        "DOCKER_CONFIG": str(docker_config),
        "JOBREAPER_KUBECONFIG_FILE": str(kubeconfig),
    }
    return subprocess.run(
        ["docker", "compose", "-f", str(compose_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=compose_file.parent,
        check=False,
        timeout=120,
    )


def test_docker_compose_config_accepts_the_file(docker_config: Path, tmp_path: Path) -> None:
    out = _compose_config(docker_config, COMPOSE_FILE, tmp_path)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert set(services) == {"kafka", "topics", *JOBREAPER_SERVICES}

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert kafka["healthcheck"]["test"]

    topics = services["topics"]
    assert topics["command"][:2] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["restart"] == "no"

    for name in JOBREAPER_SERVICES:
        service = services[name]
        assert service["command"] == [name, "run"]
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert not service["user"].startswith("0")
        assert service["environment"]["JOBREAPER_KAFKA_CREATE_TOPICS"] == "false"
        mounts = {v["target"]: v for v in service.get("volumes", [])}
        if name in ("watcher", "executor", "killer"):  # the killer: the API server's clock
            assert mounts["/etc/jobreaper/kubeconfig"]["read_only"] is True
        else:  # the config service reads a file here
            assert "/etc/jobreaper/kubeconfig" not in mounts


def test_docker_compose_config_rejects_a_broken_file(docker_config: Path, tmp_path: Path) -> None:
    """The check above can fail: a condition compose does not know is refused."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text().replace(
        "condition: service_completed_successfully", "condition: service_finished"
    )
    broken.write_text(text)
    (tmp_path / "deploy" / "compose").mkdir(parents=True)
    out = _compose_config(docker_config, broken, tmp_path)
    assert out.returncode != 0
    assert "service_finished" in out.stderr or "condition" in out.stderr, out.stderr


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
