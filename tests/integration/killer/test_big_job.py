"""A Job whose kill events do not fit in one Kafka record, killed over the real broker.

12,000 pods with 40-character names (published straight to ``k8s.objects``, as the
watcher would: no kwok pods at this scale): as one record, the ``KillStarted`` would
be about 1.16 MB, which this broker refuses (checked below), and the killer would
abort, rebuild and retry that transaction for ever. In parts, it is decided once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from bench.bench_big_job import kill_big_job, pod_name, whole_bytes
from devtools.stack.api import StackInfo
from schemas.commands import CommandIssued
from schemas.events import JobKilled, KillStarted
from schemas.parts import KAFKA_DEFAULT_MAX_BYTES, MAX_PODS_PER_PART, PART_TARGET_BYTES
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.replay.history import read_history
from services.replay.report import replay
from services.runtime.kafka import client_kwargs, ensure_topics
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames
from tests.integration.helpers import messages

pytestmark = pytest.mark.stack

PODS = 12_000


async def test_a_job_of_12000_pods_is_killed_once_in_parts_no_record_too_large(
    stack: StackInfo, topic_prefix: str
) -> None:
    began = time.monotonic()
    kafka = KafkaSettings(
        bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix, job_partitions=1
    )
    await ensure_topics(kafka, job_partitions=1)
    killer = Killer(
        kafka,
        KillerServiceSettings(
            group_id=f"big-{uuid.uuid4().hex[:8]}",
            identity="big",
            # Publishing 12,000 pods from this event loop starves the killer's heartbeats
            # on a loaded machine (other tests run beside this one): a session lost that
            # way rebuilds the partition too, which is not what the check below is for.
            session_timeout_ms=60_000,
        ),
    )
    task = asyncio.create_task(killer.run())

    def alive() -> None:
        if task.done():
            task.result()
            raise AssertionError("the killer stopped")

    async def folded() -> int:
        return int(
            sum(
                s.value
                for metric in killer.metrics.folded.collect()
                for s in metric.samples
                if s.name.endswith("_total")
            )
        )

    try:
        while not killer.readiness()[0]:
            alive()
            await asyncio.sleep(0.05)
        state = killer.partitions[0].state_id
        result = await kill_big_job(
            kafka, PODS, folded=folded, alive=alive, timeout_s=90, say=print
        )
        # Decided once: a failed transaction would have rebuilt the partition (new state).
        assert killer.partitions[0].state_id == state
    finally:
        killer.stop()
        await asyncio.wait_for(task, 60)

    names = [pod_name(i, 40) for i in range(PODS)]
    for parts, kind in ((result.started, KillStarted), (result.killed, JobKilled)):
        assert [type(p) for p in parts] == [kind] * 12
        assert [(p.part, p.parts) for p in parts] == [(n, 12) for n in range(1, 13)]
        assert [len(p.pods) for p in parts] == [MAX_PODS_PER_PART] * 12
        assert [p.name for part in parts for p in part.pods] == names
    # As one record, the KillStarted was larger than Kafka's default limit ...
    assert whole_bytes(result.started) > KAFKA_DEFAULT_MAX_BYTES
    # ... and no record the killer wrote is near it.
    for topic, sizes in result.sizes.items():
        assert 0 < sizes.largest < PART_TARGET_BYTES, topic
    assert result.sizes["kill.decisions"].parts == {"DecisionRecorded": 3}
    # and the Job's fail-job, and its annotate-job: shown due, then killed
    assert result.sizes["kill.commands"].records == PODS + 3
    commands = [
        m
        for m in await messages(stack.kafka_bootstrap, f"{topic_prefix}kill.commands")
        if isinstance(m, CommandIssued) and m.step not in ("fail-job", "annotate-job")
    ]
    assert len({c.command_id for c in commands}) == PODS, "each pod's first step, once"
    ids = await _event_ids(kafka)
    assert len(ids) == len(set(ids)), "every part has its own id"

    # The replay re-makes every decision, its parts merged, byte for byte.
    report = replay(await read_history(kafka))
    assert report.divergences == []
    assert report.total("commands") == PODS + 3  # fail-job, the Job shown due, then killed
    assert report.total("events") == PODS + 24  # a KillStep per pod, 12 + 12 parts

    # The broker does refuse the single record a killer wrote before parts.
    await _refused_as_one_record(kafka, result.started)
    print(f"{PODS:,} pods killed, read back and replayed in {time.monotonic() - began:.1f} s")


async def _event_ids(kafka: KafkaSettings) -> list[str]:
    from tests.integration.helpers import read_topic

    records = await read_topic(kafka.bootstrap, TopicNames(kafka.topic_prefix)("kill.events"))
    return [dict(r.headers)["ce_id"].decode() for r, _ in records]


async def _refused_as_one_record(kafka: KafkaSettings, parts: list[Any]) -> None:
    whole = parts[0].model_copy(
        update={"pods": tuple(p for part in parts for p in part.pods), "part": 1, "parts": 1}
    )
    record = outgoing(TopicNames(kafka.topic_prefix), whole, source="/test", event_id="whole")
    assert CODEC.decode(record.headers, record.value, "kill.events").message == whole
    # A producer that would send it (its own check raised to 4 MiB): the broker refuses.
    producer = AIOKafkaProducer(**client_kwargs(kafka), max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await (
                await producer.send(
                    record.topic, record.value, key=record.key, headers=record.headers, partition=0
                )
            )
    finally:
        await producer.stop()


async def test_a_poison_record_at_the_size_limit_is_dead_lettered_and_deciding_goes_on(
    stack: StackInfo, topic_prefix: str
) -> None:
    """A record the broker took, just under its limit, that is no message: its dead
    letter (the record plus two headers) would be over the limit. The killer writes
    the dead letter without the value (saying so, and where the original is) and
    goes on deciding; before, the dead letter's send raised out of the loop and
    stopped the killer, and every restarted one, for the topic's retention."""
    kafka = KafkaSettings(
        bootstrap=stack.kafka_bootstrap, topic_prefix=topic_prefix, job_partitions=1
    )
    await ensure_topics(kafka, job_partitions=1)
    names = TopicNames(topic_prefix)
    value = b"{" + b"x" * 1_048_400  # broker: message.max.bytes 1,048,588 per batch
    producer = AIOKafkaProducer(**client_kwargs(kafka), max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(
            names("k8s.objects"), value, key=b"ns/big", headers=[("ce_type", b"?")], partition=0
        )
    finally:
        await producer.stop()

    killer = Killer(
        kafka, KillerServiceSettings(group_id=f"poison-{uuid.uuid4().hex[:8]}", identity="p")
    )
    task = asyncio.create_task(killer.run())
    try:
        deadline = time.monotonic() + 60
        dead: list[Any] = []
        while not dead:
            assert not task.done() or task.result(), "the killer stopped"
            assert time.monotonic() < deadline, "no dead letter within 60 s"
            await asyncio.sleep(0.5)
            from tests.integration.helpers import read_topic

            dead = await read_topic(kafka.bootstrap, names("deadletter"))
        ((record, _),) = dead
        headers = dict(record.headers)
        assert headers["jr_deadletter_source"] == f"{names('k8s.objects')}/0@0".encode()
        assert headers["jr_deadletter_reason"].startswith(b"missing-header")
        assert record.value == b""
        assert headers["jr_deadletter_value_omitted"].startswith(b"1048401 bytes")
        # and it goes on: a Job of 3 pods killed now
        result = await kill_big_job(
            kafka,
            3,
            folded=lambda: _folded(killer),
            alive=lambda: None if not task.done() else task.result(),
            lead_s=0,
            timeout_s=60,
            say=print,
        )
        assert [len(p.pods) for p in result.started] == [3]
    finally:
        killer.stop()
        await asyncio.wait_for(task, 60)


async def _folded(killer: Killer) -> int:
    return int(
        sum(
            s.value
            for metric in killer.metrics.folded.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        )
    )
