"""Reading one Job's records back from Kafka.

Every Job-scoped record is keyed ``namespace/job-name``. The watcher, the
executor and ``kill-request`` writers use aiokafka's default partitioner
(murmur2 of the key, like Kafka's Java client); the killer writes its
commands, kill events and decision records explicitly to the partition
number of the Job's ``k8s.objects`` partition (``DecisionRecorded`` is keyed
``partition/N``, so only the number ties it to the Job). So one partition per
topic holds everything about the Job: we compute it and read only that one,
1/N of the data, instead of scanning all partitions (which would also work,
since we filter by key, but costs N times the reading on a busy install).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from schemas import topics as t
from schemas.base import job_key
from schemas.cloudevents import DecodeError, Envelope
from services.runtime.kafka import read_partitions_to_end, topic_partitions
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

from .timeline import Timeline, build_timeline

KEYED_BY_JOB = (t.K8S_OBJECTS, t.KILL_REQUESTS, t.KILL_RESULTS)
"""Topics written with the default partitioner on the ``namespace/job-name`` key."""
WRITTEN_BY_KILLER = (t.KILL_COMMANDS, t.KILL_EVENTS, t.KILL_DECISIONS)
"""Topics the killer writes to the Job's ``k8s.objects`` partition number."""


class JobNotFound(LookupError):
    """The Job never appears in the log (or no Job of it has the uid asked for)."""


@dataclass(frozen=True)
class Read:
    """One decoded record and where it is in the log (``topic`` is the design name)."""

    topic: str
    partition: int
    offset: int
    key: str
    envelope: Envelope

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def partition_for(key: str, partitions: int) -> int:
    """The partition aiokafka's (and Kafka's) default partitioner picks for ``key``."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


async def job_partitions(
    kafka: KafkaSettings, namespace: str, job: str
) -> dict[str, TopicPartition]:
    """Per design topic name, the one partition holding the Job's records."""
    names = TopicNames(kafka.topic_prefix)
    everything = await topic_partitions(
        kafka, [names(x) for x in (*KEYED_BY_JOB, *WRITTEN_BY_KILLER)]
    )
    counts: dict[str, int] = {}
    for tp in everything:
        counts[tp.topic] = counts.get(tp.topic, 0) + 1
    key = job_key(namespace, job)
    chosen: dict[str, TopicPartition] = {}
    objects = counts.get(names(t.K8S_OBJECTS), 0)
    for topic in KEYED_BY_JOB:
        if counts.get(names(topic)):
            chosen[topic] = TopicPartition(names(topic), partition_for(key, counts[names(topic)]))
    if objects:
        number = partition_for(key, objects)
        for topic in WRITTEN_BY_KILLER:
            if counts.get(names(topic), 0) > number:
                chosen[topic] = TopicPartition(names(topic), number)
    return chosen


async def read_job_records(kafka: KafkaSettings, namespace: str, job: str) -> list[Read]:
    """The Job's records in its partitions (other Jobs share them), and every decision
    record of its killer partition (keyed by partition, told apart later by command id)."""
    chosen = await job_partitions(kafka, namespace, job)
    if t.K8S_OBJECTS not in chosen:
        raise JobNotFound(
            f"no topic {TopicNames(kafka.topic_prefix)(t.K8S_OBJECTS)} at {kafka.bootstrap} "
            "(wrong --topic-prefix or --kafka?)"
        )
    by_full = {tp.topic: topic for topic, tp in chosen.items()}
    decisions = TopicNames(kafka.topic_prefix)(t.KILL_DECISIONS)
    wanted = job_key(namespace, job).encode()
    out: list[Read] = []

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key != wanted and record.topic != decisions:
            return  # another Job's: skipped before decoding, which is most of the cost
        try:
            envelope = CODEC.decode(record.headers, record.value, by_full[record.topic])
        except DecodeError:
            return  # poison records are the dead-letter topic's business, not history
        out.append(
            Read(
                topic=by_full[record.topic],
                partition=record.partition,
                offset=record.offset,
                key=(record.key or b"").decode(errors="replace"),
                envelope=envelope,
            )
        )

    await read_partitions_to_end(kafka, list(chosen.values()), keep, client_id="jobreaper-audit")
    return out


async def load_timeline(
    kafka: KafkaSettings, namespace: str, job: str, uid: str | None = None
) -> Timeline:
    """The kill timeline of ``namespace/job`` from the log alone (its pods may be long
    gone). Of several Jobs of that name, the latest unless ``uid`` picks one; raises
    :class:`JobNotFound` when the log has nothing of it."""
    records = await read_job_records(kafka, namespace, job)
    return select(records, namespace, job, uid)


def select(records: Sequence[Read], namespace: str, job: str, uid: str | None) -> Timeline:
    timeline = build_timeline(records, namespace, job, uid)
    if timeline is None:
        if uid is not None:
            raise JobNotFound(f"no Job {namespace}/{job} with uid {uid} in the log")
        raise JobNotFound(f"Job {namespace}/{job} never appears in the log")
    return timeline
