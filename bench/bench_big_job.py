"""One Job of 20,000 pods killed end to end over real Kafka: on time, no record too large.

    eval "$(uv run jobreaper-dev stack env --name NAME)"      # a running local stack
    uv run python bench/bench_big_job.py [--pods 20000] [--name-length 40] [--in-process]

1. Fresh topics (one Job-keyed partition); the killer starts as its own process
   (``python -m services killer run``, as deployed; ``--in-process``: in this one).
2. The watcher's part is played by this script: it publishes the Job and its
   ``--pods`` running pods (``JobObserved`` + ``PodObserved``, as the watcher writes
   them) and waits until the killer has folded them.
3. It then publishes the Job again with a kill timestamp ``--lead`` seconds ahead.
   At that instant the killer decides, in one transaction, a ``set-active-deadline``
   command and a ``KillStep`` per pod, the ``KillStarted`` (in parts) and the
   decision record (in parts). Timed: due -> the last ``KillStarted`` part readable
   by a ``read_committed`` consumer (so: decided, written and committed).
4. The executor's part is not played (no kwok pods at this scale): as soon as the
   ``KillStarted`` is read, this script publishes every pod as exited (``Failed``,
   containers terminated: what kwok shows once the active deadline passes). Timed:
   the last of those published -> the last ``JobKilled`` part readable, and due ->
   ``JobKilled``.
5. Reads every topic back: the largest record written (key + value + headers) per
   topic, how large the event would have been as one record, the parts; the
   killer's peak RSS (``VmHWM``) and its ``killer.decided`` log lines (records per
   transaction, seconds from the first send to the commit).

``--pods 2000`` runs in seconds. Topics are deleted at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.annotations import ENFORCE, KILL_TIMESTAMP
from schemas.base import Message
from schemas.events import JobKilled, KillStarted, PodEnding, PodRef
from schemas.observations import ContainerSummary, JobObserved, PodObserved
from schemas.parts import KAFKA_DEFAULT_MAX_BYTES
from services.runtime.kafka import client_kwargs, ensure_topics, make_consumer, make_producer
from services.runtime.messages import CODEC, outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

NAMESPACE = "bench-big"
JOB = "big-job"
TOPICS_WRITTEN = ("kill.commands", "kill.events", "kill.decisions")


def pod_name(i: int, length: int) -> str:
    """A pod name of ``length`` characters (a Job's pods are ``<job>-<suffix>``)."""
    return f"{JOB}-{i:06d}-".ljust(length, "x")[:length] if length >= 14 else f"p{i}"


def pod_uid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-big-pod-{i}"))


@dataclass
class BigJob:
    """The observations of one Job of ``pods`` pods, with increasing resource versions."""

    pods: int
    name_length: int = 40
    job_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    rv: int = 1

    def _rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def job(self, at: datetime, kill_at: datetime | None = None) -> JobObserved:
        return JobObserved(
            change="added" if kill_at is None else "modified",
            observed_at=at,
            resource_version=self._rv(),
            uid=self.job_uid,
            namespace=NAMESPACE,
            name=JOB,
            labels={ENFORCE: "on"},
            annotations={} if kill_at is None else {KILL_TIMESTAMP: _rfc3339(kill_at)},
            creation_timestamp=at,
            start_time=at,
            active=self.pods,
        )

    def pod(self, i: int, at: datetime, *, exited: bool = False) -> PodObserved:
        started = at - timedelta(seconds=1)
        return PodObserved(
            change="modified",
            observed_at=at,
            resource_version=self._rv(),
            uid=pod_uid(i),
            namespace=NAMESPACE,
            name=pod_name(i, self.name_length),
            job_name=JOB,
            job_uid=self.job_uid,
            creation_timestamp=started,
            phase="Failed" if exited else "Running",
            node_name=f"node-{i % 100}",
            start_time=started,
            containers=(
                ContainerSummary(
                    name="main",
                    state="terminated" if exited else "running",
                    started_at=started,
                    exit_code=137 if exited else None,
                ),
            ),
        )

    def running(self, at: datetime) -> Iterator[Message]:
        yield self.job(at)
        for i in range(self.pods):
            yield self.pod(i, at)

    def exited(self, at: datetime) -> Iterator[Message]:
        for i in range(self.pods):
            yield self.pod(i, at, exited=True)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def publish(kafka: KafkaSettings, messages: Iterator[Message], partition: int = 0) -> float:
    """Write ``messages`` to their topics' ``partition``, encoded and batched first
    (one ``send`` per record costs about as much CPU as the killer's fold); returns
    the seconds the writes took."""
    names = TopicNames(kafka.topic_prefix)
    producer = make_producer(kafka, client_id="bench-big")
    await producer.start()
    try:
        batches: list[tuple[str, Any]] = []
        current: dict[str, Any] = {}
        for message in messages:
            r = outgoing(names, message, source="/bench/watcher")
            batch = current.get(r.topic)
            if (
                batch is None
                or batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is None
            ):
                batch = current[r.topic] = producer.create_batch()
                batches.append((r.topic, batch))
                batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
        for _, batch in batches:
            batch.close()
        start = time.perf_counter()
        sent = [await producer.send_batch(b, topic, partition=partition) for topic, b in batches]
        await asyncio.gather(*sent)
        return time.perf_counter() - start
    finally:
        await producer.stop()


class Tail:
    """``kill.events`` of one partition as a subscriber reads it (read_committed),
    with the wall time each record became readable here."""

    def __init__(self, kafka: KafkaSettings, partition: int = 0) -> None:
        self.kafka = kafka
        self.tp = TopicPartition(TopicNames(kafka.topic_prefix)("kill.events"), partition)
        self.seen: list[tuple[float, Message]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self.kafka, client_id="bench-big-tail", group_id=None)
        await consumer.start()
        consumer.assign([self.tp])
        await consumer.seek_to_beginning(self.tp)

        async def run() -> None:
            try:
                while True:
                    batches = await consumer.getmany(timeout_ms=100)
                    now = time.time()
                    for records in batches.values():
                        for record in records:
                            envelope = CODEC.decode(record.headers, record.value, "kill.events")
                            self.seen.append((now, envelope.message))
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def complete(self, kind: type[KillStarted | JobKilled]) -> tuple[float, list[Any]] | None:
        """When the last part of the first such event was read, and its parts."""
        parts = [(t, m) for t, m in self.seen if isinstance(m, kind)]
        if not parts or len(parts) < parts[0][1].parts:
            return None
        parts = parts[: parts[0][1].parts]
        return max(t for t, _ in parts), [m for _, m in parts]

    async def wait(
        self, kind: type[KillStarted | JobKilled], timeout: float, alive: Any = None
    ) -> tuple[float, list[Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.complete(kind)
            if done is not None:
                return done
            if alive is not None:
                alive()
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no complete {kind.__name__} within {timeout:.0f} s")


@dataclass
class TopicSizes:
    records: int = 0
    largest: int = 0
    largest_what: str = ""
    parts: dict[str, int] = field(default_factory=dict)


async def read_back(kafka: KafkaSettings, partition: int = 0) -> dict[str, TopicSizes]:
    """Every record the killer wrote, sized as the producer sizes it."""
    names = TopicNames(kafka.topic_prefix)
    out: dict[str, TopicSizes] = {}
    consumer = make_consumer(kafka, client_id="bench-big-read", group_id=None)
    await consumer.start()
    try:
        for topic in TOPICS_WRITTEN:
            tp = TopicPartition(names(topic), partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            sizes = out[topic] = TopicSizes()
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    for r in records:
                        size = (
                            len(r.key or b"")
                            + len(r.value or b"")
                            + sum(len(k) + len(v) for k, v in r.headers)
                        )
                        sizes.records += 1
                        message = CODEC.decode(r.headers, r.value, topic).message
                        kind = type(message).__name__
                        if getattr(message, "parts", 1) > 1:
                            sizes.parts[kind] = sizes.parts.get(kind, 0) + 1
                        if size > sizes.largest:
                            sizes.largest, sizes.largest_what = size, kind
    finally:
        await consumer.stop()
    return out


def whole_bytes(parts: Sequence[KillStarted | JobKilled]) -> int:
    """The event's JSON as one record (what the killer wrote before parts existed)."""
    first = parts[0]
    pods: list[PodRef | PodEnding] = [p for part in parts for p in part.pods]
    update: dict[str, Any] = {"pods": tuple(pods), "part": 1, "parts": 1}
    if isinstance(first, KillStarted):
        update["already_done"] = tuple(p for part in parts for p in part.already_done)  # type: ignore[union-attr]
    return len(first.model_copy(update=update).model_dump_json().encode())


async def delete_topics(kafka: KafkaSettings) -> None:
    from services.runtime.topics import TOPIC_SPECS

    names = TopicNames(kafka.topic_prefix)
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="bench-big-cleanup")
    await admin.start()
    try:
        await admin.delete_topics([names(spec.name) for spec in TOPIC_SPECS])
    finally:
        await admin.close()


class KillerProcess:
    """The killer as deployed: its own process, JSON logs to a file."""

    def __init__(self, kafka: KafkaSettings, log_dir: Path) -> None:
        from devtools.demo.processes import ServiceProcess

        env = {
            "JOBREAPER_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "JOBREAPER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "JOBREAPER_KAFKA_JOB_PARTITIONS": str(kafka.job_partitions),
            "JOBREAPER_LOG_FORMAT": "json",
            "JOBREAPER_KILLER_GROUP_ID": f"bench-big-{uuid.uuid4().hex[:8]}",
            "JOBREAPER_KILLER_IDENTITY": "bench-big-killer",
        }
        self.service = ServiceProcess.jobreaper("killer", env, log_dir)

    async def start(self) -> None:
        from devtools.demo.processes import wait_ready

        self.service.start()
        await wait_ready([self.service], timeout_s=120)

    def alive(self) -> None:
        code = self.service.exited()
        if code is not None:
            raise RuntimeError(f"the killer exited ({code}):\n{self.service.tail(20)}")

    def rss(self) -> tuple[float, float]:
        """(peak, current) resident set size in MiB."""
        assert self.service.proc is not None
        status = Path(f"/proc/{self.service.proc.pid}/status").read_text()
        values = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmHWM", "VmRSS"))
        }
        return values["VmHWM"], values["VmRSS"]

    def logs(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.service.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                out.append(entry)
        return out

    async def folded(self) -> int:
        """``jobreaper_killer_events_folded_total`` summed over topics."""
        import aiohttp

        url = f"http://127.0.0.1:{self.service.http_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("jobreaper_killer_events_folded_total{")
            )
        )

    async def stop(self) -> None:
        await self.service.stop()


@dataclass
class Result:
    pods: int
    due: datetime
    started_at: float
    started: list[KillStarted]
    exits_published: float
    killed_at: float
    killed: list[JobKilled]
    sizes: dict[str, TopicSizes]


async def kill_big_job(
    kafka: KafkaSettings,
    pods: int,
    *,
    folded: Any,
    alive: Any = None,
    name_length: int = 40,
    lead_s: float = 3.0,
    timeout_s: float = 600,
    say: Any = print,
) -> Result:
    """Steps 2-5 of the module docstring, against a killer already running on
    ``kafka`` (``folded()``: how many records it folded; ``alive()``: raises if it
    died)."""
    job = BigJob(pods, name_length)
    tail = Tail(kafka)
    await tail.start()
    try:
        t0 = datetime.now(UTC) - timedelta(seconds=5)
        before = await folded()
        took = await publish(kafka, job.running(t0))
        say(f"published the Job and {pods:,} running pods in {took:.2f} s")
        start = time.monotonic()
        while await folded() < before + pods + 1:
            if alive is not None:
                alive()
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"the killer did not fold the pods within {timeout_s:.0f} s")
            await asyncio.sleep(0.1)
        say(f"the killer folded them {time.monotonic() - start:.2f} s later")

        due = (datetime.now(UTC) + timedelta(seconds=lead_s)).replace(microsecond=0)
        due += timedelta(seconds=1)
        await publish(kafka, iter([job.job(datetime.now(UTC), kill_at=due)]))
        say(f"kill timestamp {_rfc3339(due)} published")
        started_at, started = await tail.wait(KillStarted, timeout_s, alive)
        took = await publish(kafka, job.exited(datetime.now(UTC)))
        exits_published = time.time()
        say(f"published {pods:,} exited pods in {took:.2f} s")
        killed_at, killed = await tail.wait(JobKilled, timeout_s, alive)
        sizes = await read_back(kafka)
        return Result(pods, due, started_at, started, exits_published, killed_at, killed, sizes)
    finally:
        await tail.stop()


def report(result: Result, say: Any = print) -> None:
    due = result.due.timestamp()
    first = result.started[0]
    say(
        f"KillStarted: decided {(first.decided_at - result.due).total_seconds() * 1000:,.0f} ms "
        f"after due; its last part readable {(result.started_at - due) * 1000:,.0f} ms after due "
        f"({len(result.started)} parts, {sum(len(p.pods) for p in result.started):,} pods)"
    )
    say(
        f"JobKilled: readable {(result.killed_at - result.exits_published) * 1000:,.0f} ms after "
        f"the last exited pod was published, {result.killed_at - due:,.2f} s after due "
        f"({len(result.killed)} parts, {sum(len(p.pods) for p in result.killed):,} pods)"
    )
    say(
        f"as one record (before parts): KillStarted {whole_bytes(result.started):,} bytes, "
        f"JobKilled {whole_bytes(result.killed):,} bytes (Kafka's default limit "
        f"{KAFKA_DEFAULT_MAX_BYTES:,})"
    )
    for topic, sizes in result.sizes.items():
        parts = ", ".join(f"{n} {kind} parts" for kind, n in sorted(sizes.parts.items()))
        say(
            f"{topic:15} {sizes.records:7,} records, largest {sizes.largest:9,} bytes "
            f"({sizes.largest_what})" + (f"; {parts}" if parts else "")
        )
    largest = max(s.largest for s in result.sizes.values())
    share = largest / KAFKA_DEFAULT_MAX_BYTES
    say(f"largest record written: {largest:,} bytes ({share:.0%} of 1 MiB)")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20_000)
    parser.add_argument("--name-length", type=int, default=40, help="pod name length (<= 253)")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds to the kill time")
    parser.add_argument("--in-process", action="store_true", help="run the killer in this process")
    parser.add_argument("--keep", action="store_true", help="keep the topics")
    args = parser.parse_args()
    bootstrap = os.environ.get("JOBREAPER_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit('no stack: run eval "$(uv run jobreaper-dev stack env)" first')
    kafka = KafkaSettings(
        bootstrap=bootstrap, topic_prefix=f"bench-big-{uuid.uuid4().hex[:6]}.", job_partitions=1
    )
    await ensure_topics(kafka, job_partitions=1)
    print(f"topics {kafka.topic_prefix}*; {load()}")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-big-"))
    killer: Any = InProcessKiller(kafka) if args.in_process else KillerProcess(kafka, log_dir)
    await killer.start()
    print("killer ready" + ("" if args.in_process else f" (log {killer.service.log_path})"))
    try:
        result = await kill_big_job(
            kafka,
            args.pods,
            folded=killer.folded,
            alive=killer.alive,
            name_length=args.name_length,
            lead_s=args.lead,
        )
        report(result)
        peak, now = killer.rss()
        print(f"killer RSS: peak {peak:,.0f} MiB, at the end {now:,.0f} MiB")
        for entry in killer.logs("killer.decided"):
            print(
                f"  transaction: {entry.get('records', '?'):,} records "
                f"({entry.get('commands_total', '?'):,} commands, events {entry.get('events')}) "
                f"in {entry.get('seconds', '?')} s"
            )
        failed = killer.logs("killer.transaction_failed")
        print(f"failed transactions: {len(failed)}" + (f" ({failed[0]})" if failed else ""))
        print(f"end: {load()}")
    finally:
        await killer.stop()
        if not args.keep:
            await delete_topics(kafka)


class InProcessKiller:
    """The killer in this process (``--in-process``): RSS is this process's."""

    def __init__(self, kafka: KafkaSettings) -> None:
        import structlog

        from services.killer.service import Killer
        from services.killer.settings import KillerServiceSettings

        self.killer = Killer(
            kafka,
            KillerServiceSettings(group_id=f"bench-big-{uuid.uuid4().hex[:8]}", identity="bench"),
        )
        self.task: asyncio.Task[None] | None = None
        self.entries: list[dict[str, Any]] = []
        entries = self.entries

        def keep(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
            entries.append(dict(event))
            raise structlog.DropEvent

        structlog.configure(processors=[keep])

    async def start(self) -> None:
        self.task = asyncio.create_task(self.killer.run())
        while not self.killer.readiness()[0]:
            self.alive()
            await asyncio.sleep(0.05)

    def alive(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()
            raise RuntimeError("the killer stopped")

    async def folded(self) -> int:
        return int(
            sum(
                sample.value
                for metric in self.killer.metrics.folded.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )

    def rss(self) -> tuple[float, float]:
        status = Path("/proc/self/status").read_text()
        values = {
            line.split(":")[0]: int(line.split()[1]) / 1024
            for line in status.splitlines()
            if line.startswith(("VmHWM", "VmRSS"))
        }
        return values["VmHWM"], values["VmRSS"]

    def logs(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("event") == event]

    async def stop(self) -> None:
        self.killer.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 60)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
