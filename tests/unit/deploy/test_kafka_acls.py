"""The Kafka ACL table (services/acls.py, docs/kafka-acls.md): who may write what,
and the kafka-acls commands grant exactly the table. That the broker enforces them
and that they are enough for the services: tests/integration/kafka_acls/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aiokafka import TopicPartition

from schemas import topics as t
from services.acls import (
    CONFIG,
    EXECUTOR,
    KILLER,
    PRINCIPALS,
    REQUESTER,
    RESUMER,
    WATCHER,
    Grant,
    Principal,
    acl_commands,
    grants,
)
from services.config.service import writer_transactional_id
from services.config.settings import ConfigServiceSettings
from services.executor.service import transactional_id as executor_transactional_id
from services.executor.settings import ExecutorSettings
from services.killer.transport import transactional_id as killer_transactional_id
from services.runtime.topics import TopicNames

ROOT = Path(__file__).resolve().parents[3]
NAMES = TopicNames("jobreaper.")


def writers(table: list[Grant], topic: str) -> set[Principal]:
    return {
        g.principal
        for g in table
        if g.resource == "topic" and g.name == NAMES(topic) and "Write" in g.operations
    }


def test_the_doc_is_current() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.acls", "--check", "docs/kafka-acls.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_each_topic_has_exactly_its_writers() -> None:
    """The trust boundaries: what each topic's readers may believe about its writer."""
    table = grants()
    assert {topic: writers(table, topic) for topic in t.ALL_TOPICS} == {
        t.K8S_OBJECTS: {WATCHER},
        t.K8S_NODES: {WATCHER},
        t.KILL_REQUESTS: {REQUESTER},
        t.CONFIG: {CONFIG},
        t.KILL_COMMANDS: {KILLER},
        t.KILL_RESULTS: {EXECUTOR},
        t.KILL_EVENTS: {KILLER},
        t.KILL_DECISIONS: {KILLER},
        t.DEADLETTER: {KILLER, EXECUTOR},
        t.FORCE_RESUMES: {RESUMER},
    }
    # Only the topics principal may create topics; nobody has cluster-wide rights
    # (Kafka 3.x grants an idempotent producer id to whoever may write a topic).
    assert [g for g in table if "Create" in g.operations] == [
        g for g in table if g.principal.name == "jobreaper-topics"
    ]
    assert [g for g in table if g.resource == "cluster"] == []


def test_groups_and_transactional_ids_belong_to_one_principal_each() -> None:
    table = grants()
    owned = [(g.resource, g.name) for g in table if g.resource != "topic"]
    assert len(owned) == len(set(owned))
    assert {(g.principal, g.resource) for g in table if g.resource != "topic"} == {
        (KILLER, "group"),
        (KILLER, "transactional-id"),
        (EXECUTOR, "group"),
        (EXECUTOR, "transactional-id"),
        (CONFIG, "transactional-id"),
        (next(p for p in PRINCIPALS if p.name == "jobreaper-notify"), "group"),
    }


def test_the_services_transactional_ids_fall_under_their_grants_only() -> None:
    """The ids the services' own code builds, against the (prefixed) grants."""
    table = grants()

    def holders(transactional_id: str) -> set[Principal]:
        return {
            g.principal
            for g in table
            if g.resource == "transactional-id"
            and (
                transactional_id.startswith(g.name)
                if g.pattern == "prefixed"
                else transactional_id == g.name
            )
        }

    executor = ExecutorSettings(identity="unit")
    for partition in (0, 1, 9, 10, 123):
        assert holders(killer_transactional_id("jobreaper-killer", "jobreaper.", partition)) == {
            KILLER
        }
        tp = TopicPartition(NAMES(t.KILL_COMMANDS), partition)
        assert holders(executor_transactional_id(executor, tp)) == {EXECUTOR}
    assert holders(writer_transactional_id(ConfigServiceSettings(), "jobreaper.")) == {CONFIG}
    # Another install's (another prefix or group): nobody's here.
    assert holders(killer_transactional_id("jobreaper-killer", "other.", 0)) == set()
    assert holders(writer_transactional_id(ConfigServiceSettings(), "other.")) == set()


def test_the_commands_grant_exactly_the_table() -> None:
    """kafka-acls grants every operation on every resource of a command: read the
    commands back as (principal, operation, resource, pattern) and compare."""
    option = {"--topic": "topic", "--group": "group", "--transactional-id": "transactional-id"}
    granted = set()
    for args in acl_commands(grants()):
        assert args[:2] == ["--add", "--allow-principal"]
        principal, rest = args[2], args[3:]
        pairs = list(zip(rest[::2], rest[1::2], strict=True))
        operations = [v for k, v in pairs if k == "--operation"]
        pattern = dict(pairs).get("--resource-pattern-type", "literal")
        resources = [(option[k], v) for k, v in pairs if k in option]
        assert len(pairs) == len(operations) + len(resources) + (pattern != "literal")
        granted |= {(principal, op, r, pattern) for op in operations for r in resources}
    expected = {
        (g.principal.acl, op, (g.resource, g.name), g.pattern)
        for g in grants()
        for op in g.operations
    }
    assert granted == expected


def test_other_names_give_other_grants() -> None:
    table = grants(
        "prod.", killer_group="k", executor_group="e", executor_transactional_id_prefix="x"
    )
    names = {g.name for g in table}
    assert "prod.kill.requests" in names
    assert "k.prod.p" in names
    assert "x.e.prod.kill.commands." in names
    assert "jobreaper-config.prod." in names
    assert {g.name for g in table if g.resource == "group"} == {
        "k",
        "e",
        "e.held-events",  # the executor's feed of held force deletions (Events on pods)
        "jobreaper-notify",
    }
    assert not any(g.name.startswith("jobreaper.") for g in table if g.resource == "topic")
