"""The Kafka ACLs of docs/kafka-acls.md, proved on a real broker.

A broker of this module's own (``broker.py``: Kafka 3.9.1 KRaft from the
stack's jars, SASL/SCRAM-SHA-512, ``StandardAuthorizer``, nothing allowed
without an ACL) gets exactly the ``kafka-acls.sh`` commands the doc shows
(``services.acls``), the topics are created by the ``jobreaper-topics``
principal, and every client below connects with the project's own
``KafkaSettings`` (SASL settings) as one principal:

- enough: the services, each as its own principal, run and kill a Job on the
  local stack's Kubernetes; the kill is requested by ``jobreaper-requester``
  through ``jobreaper kill``'s code, followed by ``jobreaper-events``, audited
  and replayed by ``jobreaper-operator``;
- nothing more: no principal but the requester may write ``kill.requests``;
  the executor may not write ``kill.commands`` nor take the killer's
  transactional ids; every topic refuses a write from every principal the
  table does not let write it, and a read from those it does not let read it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from kubernetes_asyncio import client
from pydantic import SecretStr

from devtools.stack.api import StackInfo
from schemas import topics as t
from schemas.base import Message
from schemas.cloudevents import DecodeError
from schemas.commands import CommandApplied, CommandIssued
from schemas.config import ConfigSnapshot
from schemas.events import JobKilled
from schemas.requests import KillRequested
from services.acls import (
    CONFIG,
    EVENTS,
    EXECUTOR,
    KILLER,
    NOTIFY,
    OPERATOR,
    PRINCIPALS,
    REQUESTER,
    TOPICS,
    WATCHER,
    Principal,
    acl_commands,
    grants,
)
from services.audit.history import load_timeline
from services.config.service import ConfigService, writer_transactional_id
from services.config.settings import ConfigServiceSettings
from services.executor.service import Executor
from services.executor.service import transactional_id as executor_transactional_id
from services.executor.settings import ExecutorSettings
from services.kill.request import request_kill
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.killer.transport import transactional_id as killer_transactional_id
from services.notify.service import Notifier
from services.notify.settings import NotifySettings
from services.replay.history import read_history
from services.replay.report import render_replay, replay
from services.runtime.kafka import (
    DEADLETTER_REASON_HEADER,
    DEADLETTER_SOURCE_HEADER,
    client_kwargs,
    dead_letter_record,
    ensure_topics,
    make_consumer,
    make_producer,
    read_to_end,
    topic_partitions,
)
from services.runtime.kube import load_api_client
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings
from tests.integration.helpers import eventually, job_manifest
from tests.integration.kafka_acls.broker import ADMIN, SecureBroker, start_secure_broker

# One broker of its own for the module (a JVM start): under pytest-xdist, one worker
# runs the whole module (tests/conftest.py, ONE_WORKER_MODULES).
pytestmark = pytest.mark.stack

INTRUDER = Principal("jobreaper-intruder", "an authenticated user with no ACL at all")
ALL = (*PRINCIPALS, INTRUDER)
TABLE = grants()
PREFIX = "jobreaper."
NAMES = TopicNames(PREFIX)
PARTITIONS = 2
TOPIC_NAMES = [NAMES(spec.name) for spec in TOPIC_SPECS]
CONFIG_JSON = Path(__file__).parents[3] / "deploy" / "compose" / "config.json"


def allowed(principal: Principal, operation: str) -> set[str]:
    """The topics the table lets ``principal`` do ``operation`` on, as Kafka reads
    it: literal and prefixed patterns; Read and Write imply Describe."""
    implied = {"Describe": {"Describe", "Read", "Write"}}.get(operation, {operation})
    return {
        topic
        for topic in TOPIC_NAMES
        for g in TABLE
        if g.principal == principal
        and g.resource == "topic"
        and (topic == g.name if g.pattern == "literal" else topic.startswith(g.name))
        and implied & set(g.operations)
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureBroker]:
    started = time.monotonic()
    secure = await start_secure_broker(tmp_path_factory.mktemp("kafka-acls"), [p.name for p in ALL])
    up = time.monotonic()
    try:
        await asyncio.to_thread(secure.apply_acls, acl_commands(TABLE))
        applied = time.monotonic()
        # The topics Job's code, as the topics principal (Create, Describe on the prefix).
        created = await ensure_topics(secure.settings(TOPICS.name), job_partitions=PARTITIONS)
        assert sorted(created) == sorted(TOPIC_NAMES)
        print(
            f"\nACL broker: up in {up - started:.1f} s, {len(acl_commands(TABLE))} kafka-acls "
            f"commands in {applied - up:.1f} s, topics in {time.monotonic() - applied:.1f} s"
        )
        yield secure
    finally:
        secure.stop()


async def read_all(
    settings: KafkaSettings, topic: str
) -> list[tuple[ConsumerRecord[bytes, bytes], Message | DecodeError]]:
    """Every committed record of ``topic``, read as ``settings``' principal."""
    out: list[tuple[ConsumerRecord[bytes, bytes], Message | DecodeError]] = []

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            message: Message | DecodeError = CODEC.decode(
                record.headers, record.value, NAMES.strip(topic)
            ).message
        except DecodeError as exc:
            message = exc
        out.append((record, message))

    consumer = make_consumer(settings, client_id="acl-test-reader", group_id=None)
    await consumer.start()
    try:
        await read_to_end(consumer, await topic_partitions(settings, [topic]), keep)
    finally:
        await consumer.stop()
    return out


async def messages(settings: KafkaSettings, topic: str) -> list[Any]:
    return [message for _, message in await read_all(settings, topic)]


async def send(
    settings: KafkaSettings,
    topic: str,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
) -> str:
    """Write one record as ``settings``' principal; its ``topic/partition@offset``."""
    producer = make_producer(settings, client_id="acl-test")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, headers=headers)
    finally:
        await producer.stop()
    return f"{topic}/{meta.partition}@{meta.offset}"


def fake_result(command_id: str) -> CommandApplied:
    return CommandApplied(
        command_id=command_id,
        step="delete",
        namespace="acl-test",
        job_name="some-job",
        pod_name="some-pod",
        pod_uid="u-1",
        outcome="gone",
        applied_at=datetime.now(UTC),
        http_status=404,
    )


def plain_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    """Any client, not ours: no idempotence, acks=1."""
    return AIOKafkaProducer(
        **client_kwargs(settings), client_id="acl-test", acks=1, enable_idempotence=False
    )


async def assert_read_refused(
    settings: KafkaSettings, topics: list[str], describable: set[str]
) -> None:
    """No record of ``topics`` reaches this principal. Those it may describe: the
    broker refuses the fetch. The others: it refuses even their metadata, so a
    consumer finds no leader to fetch from (aiokafka then only logs it, in a
    loop), and ``topic_partitions`` says so."""
    consumer = make_consumer(settings, client_id="acl-test", group_id=None)
    await consumer.start()
    try:
        for topic in topics:
            if topic not in describable:
                with pytest.raises(TopicAuthorizationFailedError):
                    await topic_partitions(settings, [topic])
                continue
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            with pytest.raises(TopicAuthorizationFailedError):
                await fetch(consumer, tp)
    finally:
        await consumer.stop()


async def fetch(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    await consumer.seek_to_beginning(tp)
    await asyncio.wait_for(consumer.getmany(tp, timeout_ms=5000), 30)


async def assert_write_refused(settings: KafkaSettings, topics: list[str]) -> None:
    producer = plain_producer(settings)
    await producer.start()
    try:
        for topic in topics:
            with pytest.raises(TopicAuthorizationFailedError):
                await asyncio.wait_for(producer.send_and_wait(topic, b"forged"), 30)
    finally:
        await producer.stop()


# -- enough: the whole system runs, each service as its own principal -------------------


async def test_the_services_kill_a_job_each_as_its_own_principal(
    broker: SecureBroker,
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = uuid.uuid4().hex[:6]
    config_file = tmp_path / "config.json"
    # The compose file's config, changed so that it is not the defaults (which the
    # config service would find unchanged, and not publish).
    config = json.loads(CONFIG_JSON.read_text())
    config["deleteKillingTasksTimeoutSeconds"] = 170
    config_file.write_text(json.dumps(config))
    # Poison the services will meet, so that they exercise their dead-letter ACLs: an
    # earlier run's dead letter (the killer reads them at start: a fetch, Read) and
    # a record on kill.commands that is no command (the executor and the killer
    # dead-letter it, in their transactions: Write).
    admin = broker.settings(ADMIN)
    earlier = dead_letter_record(
        NAMES,
        source_topic=NAMES(t.KILL_REQUESTS),
        partition=0,
        offset=10**9,
        key=None,
        value=b"earlier",
        headers=[],
        reason="an earlier run's",
    )
    junk = await send(admin, NAMES(t.KILL_COMMANDS), b"not a command")
    await send(admin, earlier.topic, earlier.value, earlier.headers)
    apis = [await load_api_client(str(stack.kubeconfig)) for _ in range(2)]
    services: list[Any] = [
        ConfigService(
            broker.settings(CONFIG.name, job_partitions=PARTITIONS),
            ConfigServiceSettings(
                source="file",
                file=str(config_file),
                lease=False,
                events=False,
                api_port=0,
                identity=f"config-{run}",
            ),
        ),
        Watcher(
            apis[0],
            broker.settings(WATCHER.name),
            WatcherSettings(
                namespaces=[namespace], lease_namespace=namespace, identity=f"watcher-{run}"
            ),
        ),
        Killer(broker.settings(KILLER.name), KillerServiceSettings(identity=f"killer-{run}")),
        Executor(
            apis[1], broker.settings(EXECUTOR.name), ExecutorSettings(identity=f"executor-{run}")
        ),
        Notifier(
            broker.settings(NOTIFY.name),
            NotifySettings(webhook=SecretStr("http://127.0.0.1:9/never-called")),
        ),
    ]
    tasks = [asyncio.create_task(service.run()) for service in services]
    try:

        async def all_ready() -> bool:
            for service, task in zip(services, tasks, strict=True):
                if task.done():
                    task.result()
                    raise AssertionError(f"{type(service).__name__} stopped by itself")
            published = services[0].head.version == 1  # the config service's first version
            return published and all(service.readiness()[0] for service in services)

        started = time.monotonic()
        await eventually("every service ready", all_ready, timeout=120)
        print(f"services ready in {time.monotonic() - started:.1f} s")

        batch = client.BatchV1Api(kube_api)
        await batch.create_namespaced_job(namespace, job_manifest("victim", run="never"))

        async def pod_running() -> bool:
            pods = await client.CoreV1Api(kube_api).list_namespaced_pod(
                namespace, label_selector="batch.kubernetes.io/job-name=victim"
            )
            return any(p.status.phase == "Running" for p in pods.items)

        await eventually("the victim's pod running", pod_running)
        # What the requester may write, it may forge: a result on kill.requests. The
        # killer does not take it for the executor's (it dead-letters it), and the kill
        # requested next goes ahead.
        forged = outgoing(NAMES, fake_result("forged"), source="/forged", event_id="forged")
        forged_at = await send(
            broker.settings(REQUESTER.name), NAMES(t.KILL_REQUESTS), forged.value, forged.headers
        )
        # `jobreaper kill`'s code, with its default create_topics=True: the requester
        # may describe kill.requests (Write implies it), so nothing is created.
        requested = await request_kill(
            broker.settings(REQUESTER.name, create_topics=True), namespace, "victim"
        )
        assert requested.topic == NAMES(t.KILL_REQUESTS)

        events = broker.settings(EVENTS.name)

        async def job_killed() -> JobKilled | None:
            for message in await messages(events, NAMES(t.KILL_EVENTS)):
                if isinstance(message, JobKilled) and message.job_name == "victim":
                    return message
            return None

        killed = await eventually("JobKilled on kill.events", job_killed, timeout=90)
        assert killed.namespace == namespace
    finally:
        for service in services:
            service.stop()
        _, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        for api in apis:
            await api.close()
    for task in tasks:
        if not task.cancelled():
            task.result()  # none failed, e.g. on an authorization error

    operator = broker.settings(OPERATOR.name)
    commands = [
        m for m in await messages(operator, NAMES(t.KILL_COMMANDS)) if isinstance(m, CommandIssued)
    ]
    results = [
        m for m in await messages(operator, NAMES(t.KILL_RESULTS)) if isinstance(m, CommandApplied)
    ]
    assert commands
    assert {r.command_id for r in results} == {c.command_id for c in commands}
    assert any(r.outcome == "applied" for r in results)
    snapshots = await messages(operator, NAMES(t.CONFIG))
    assert [s.version for s in snapshots if isinstance(s, ConfigSnapshot)] == [1], snapshots
    requests = await messages(operator, NAMES(t.KILL_REQUESTS))
    assert [r for r in requests if isinstance(r, KillRequested)] == [requested.request]
    dead = {
        dict(r.headers)[DEADLETTER_SOURCE_HEADER].decode(): dict(r.headers)[
            DEADLETTER_REASON_HEADER
        ].decode()
        for r, _ in await read_all(admin, NAMES(t.DEADLETTER))
    }
    assert dead[forged_at].startswith("wrong-topic"), dead
    assert junk in dead, dead
    executor_dead = services[3].registry.get_sample_value(
        "jobreaper_executor_deadletters_total", {"reason": dead[junk].split(":", 1)[0]}
    )
    assert executor_dead == 1, dead
    # The operator's tools: the Job's timeline, and a replay that finds no divergence.
    timeline = await load_timeline(operator, namespace, "victim")
    assert timeline.requests == [requested.request]
    assert {c.command_id for c in commands} <= {s.command_id for s in timeline.steps}
    report = replay(await read_history(operator))
    assert report.divergences == [], render_replay(report)
    assert report.total("commands") == len(commands)
    # No password in anything the services, aiokafka or the test printed or logged.
    out, err = capfd.readouterr()
    for password in broker.passwords.values():
        assert password not in out + err + caplog.text


# -- nothing more ----------------------------------------------------------------------


async def test_no_principal_but_the_requester_can_write_kill_requests(broker: SecureBroker) -> None:
    topic = NAMES(t.KILL_REQUESTS)
    admin = broker.settings(ADMIN)
    before = await read_all(admin, topic)
    for principal in ALL:
        if principal == REQUESTER:
            continue
        settings = broker.settings(principal.name)
        # Any client (not idempotent, acks=1): refused at the write.
        await assert_write_refused(settings, [topic])
        # The project's own producer (idempotent). A principal that may write some
        # topic gets a producer id (Kafka 3.x asks Write on any topic, no cluster
        # IdempotentWrite) and is refused at the write; one that may write nothing
        # is refused the producer id already.
        producer = make_producer(settings, client_id="acl-test")
        if allowed(principal, "Write"):
            await producer.start()
            try:
                with pytest.raises(TopicAuthorizationFailedError):
                    await asyncio.wait_for(producer.send_and_wait(topic, b"forged"), 30)
            finally:
                await producer.stop()
        else:
            with pytest.raises(ClusterAuthorizationFailedError):
                await producer.start()
            await producer.stop()
    assert len(await read_all(admin, topic)) == len(before), "a refused write left a record"

    # The requester can, through `jobreaper kill`'s code.
    published = await request_kill(broker.settings(REQUESTER.name), "acl-test", "some-job")
    after = await read_all(admin, topic)
    assert len(after) == len(before) + 1
    [(_, message)] = [
        (r, m)
        for r, m in after
        if (r.partition, r.offset) == (published.partition, published.offset)
    ]
    assert message == published.request


async def test_the_executor_commits_results_but_cannot_write_commands_or_fence_the_killer(
    broker: SecureBroker,
) -> None:
    executor = broker.settings(EXECUTOR.name)
    commands = NAMES(t.KILL_COMMANDS)
    settings = ExecutorSettings(identity="acl-test")
    tp = TopicPartition(commands, 0)
    reader = make_consumer(executor, client_id="acl-test", group_id=settings.group_id)
    await reader.start()
    try:
        end = (await reader.end_offsets([tp]))[tp]
    finally:
        await reader.stop()

    producer = make_producer(
        executor, client_id="acl-test", transactional_id=executor_transactional_id(settings, tp)
    )
    await producer.start()  # InitProducerId: Write on its transactional id (prefixed ACL)
    marker = f"acl-test-{uuid.uuid4().hex[:8]}"
    result = fake_result(marker)
    record = outgoing(NAMES, result, source="/acl-test", event_id=marker)
    try:
        # What its worker commits: a result and the group's offset, in one transaction.
        async with producer.transaction():
            sent = await producer.send(
                record.topic, record.value, key=record.key, headers=record.headers
            )
            await sent
            await producer.send_offsets_to_transaction({tp: end}, settings.group_id)
        # A command, even in its own transaction: refused.
        with pytest.raises(TopicAuthorizationFailedError):
            async with producer.transaction():
                await (await producer.send(commands, b"forged"))
    finally:
        await producer.stop()
    results = await messages(broker.settings(OPERATOR.name), NAMES(t.KILL_RESULTS))
    assert [m for m in results if isinstance(m, CommandApplied) and m.command_id == marker] == [
        result
    ]
    await assert_write_refused(executor, [commands, NAMES(t.KILL_REQUESTS)])

    # Nor may it take the killer's or the config writer's transactional ids: taking
    # one (InitProducerId) would fence that writer and abort its open transaction.
    for taken in (
        killer_transactional_id(KillerServiceSettings().group_id, PREFIX, 0),
        writer_transactional_id(ConfigServiceSettings(), PREFIX),
    ):
        thief = make_producer(executor, client_id="acl-test", transactional_id=taken)
        with pytest.raises(TransactionalIdAuthorizationFailed):
            await thief.start()
        await thief.stop()


async def test_the_killer_commits_under_its_prefixed_transactional_ids_only(
    broker: SecureBroker,
) -> None:
    killer = broker.settings(KILLER.name)
    group = KillerServiceSettings().group_id
    marker = f"acl-test-{uuid.uuid4().hex[:8]}".encode()
    for partition in range(PARTITIONS):
        producer = make_producer(
            killer,
            client_id="acl-test",
            transactional_id=killer_transactional_id(group, PREFIX, partition),
        )
        await producer.start()
        try:
            async with producer.transaction():
                for topic in (t.KILL_EVENTS, t.KILL_DECISIONS):
                    sent = await producer.send(NAMES(topic), marker, partition=partition)
                    await sent
        finally:
            await producer.stop()
    operator = broker.settings(OPERATOR.name)
    for topic in (t.KILL_EVENTS, t.KILL_DECISIONS):
        found = [
            r.partition for r, _ in await read_all(operator, NAMES(topic)) if r.value == marker
        ]
        assert sorted(found) == list(range(PARTITIONS)), topic  # committed, read_committed
    # Another install's ids, the executor's, the config writer's: refused.
    executor = ExecutorSettings(identity="acl-test")
    for taken in (
        killer_transactional_id(group, "other.", 0),
        killer_transactional_id("another-killer", PREFIX, 0),
        executor_transactional_id(executor, TopicPartition(NAMES(t.KILL_COMMANDS), 0)),
        writer_transactional_id(ConfigServiceSettings(), PREFIX),
    ):
        thief = make_producer(killer, client_id="acl-test", transactional_id=taken)
        with pytest.raises(TransactionalIdAuthorizationFailed):
            await thief.start()
        await thief.stop()


async def test_every_topic_refuses_what_the_table_does_not_grant(broker: SecureBroker) -> None:
    """Writes and reads, every principal on every topic the table gives it no such right on."""
    checked = 0
    for principal in ALL:
        settings = broker.settings(principal.name)
        unwritable = [x for x in TOPIC_NAMES if x not in allowed(principal, "Write")]
        await assert_write_refused(settings, unwritable)
        unreadable = [x for x in TOPIC_NAMES if x not in allowed(principal, "Read")]
        await assert_read_refused(settings, unreadable, allowed(principal, "Describe"))
        checked += len(unwritable) + len(unreadable)
    print(f"{checked} refusals checked")


async def test_no_one_else_can_join_the_services_groups(broker: SecureBroker) -> None:
    """Joining the killers' group would take partitions away from them: enforcement of
    those Jobs would stop. The operator reads every topic the killers read, and still
    may not. (Principals that may read no topic at all are refused before the group.)"""
    groups = {g.name: g.principal for g in TABLE if g.resource == "group"}
    checked = []
    for group, owner in groups.items():
        for principal in ALL:
            readable = sorted(allowed(principal, "Read"))
            if principal == owner or not readable:
                continue
            consumer = make_consumer(
                broker.settings(principal.name), client_id="acl-test", group_id=group
            )
            consumer.subscribe(readable)
            try:
                with pytest.raises(GroupAuthorizationFailedError):
                    await join(consumer)
            finally:
                await consumer.stop()
            checked.append((principal.name, group))
    assert ("jobreaper-operator", "jobreaper-killer") in checked
    print(f"{len(checked)} group refusals checked")


async def join(consumer: AIOKafkaConsumer) -> None:
    await consumer.start()
    await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 30)
