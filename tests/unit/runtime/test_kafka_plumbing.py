"""Reading partitions to their end and sending in one transaction, over fakes of the
aiokafka consumer and producer (the stack tests of the watcher, executor and config
service run the same code on real Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

import services.runtime.kafka as kafka
from services.runtime.kafka import (
    OutgoingRecord,
    read_partitions_to_end,
    read_to_end,
    send_in_transaction,
)
from services.runtime.settings import KafkaSettings

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int


class FakeConsumer:
    """Partitions of offsets; ``markers``: offsets that are transaction markers (the
    position moves past them, no record is handed out)."""

    def __init__(self, logs: dict[TopicPartition, int], markers: set[tuple[str, int]]) -> None:
        self.logs = logs
        self.markers = markers
        self.positions: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.logs[tp] for tp in partitions}

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int) -> dict[Any, list[Rec]]:
        out: dict[TopicPartition, list[Rec]] = {}
        for tp in partitions:
            offset = self.positions[tp]
            if offset < self.logs[tp]:  # one at a time: the loop must come back
                self.positions[tp] = offset + 1
                if (tp.topic, offset) not in self.markers:
                    out[tp] = [Rec(tp.topic, tp.partition, offset)]
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def test_read_to_end_hands_out_every_record_up_to_the_end_offsets() -> None:
    consumer = FakeConsumer({A0: 3, A1: 0, B0: 2}, markers={("b", 1)})
    seen: list[Rec] = []
    ends = await read_to_end(consumer, [A0, A1, B0], seen.append)  # type: ignore[arg-type]
    assert ends == {A0: 3, A1: 0, B0: 2}
    assert sorted((r.topic, r.offset) for r in seen) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert consumer.assigned == [A0, A1, B0]
    assert consumer.positions == {A0: 3, A1: 0, B0: 2}, "left at the end"


async def test_read_partitions_to_end_closes_its_consumer_even_when_handling_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[FakeConsumer] = []

    def make_consumer(settings: KafkaSettings, **kwargs: Any) -> FakeConsumer:
        assert kwargs == {"client_id": "reader", "group_id": None}
        made.append(FakeConsumer({A0: 2}, markers=set()))
        return made[-1]

    monkeypatch.setattr(kafka, "make_consumer", make_consumer)

    def handle(record: Any) -> None:
        raise ValueError("a bug in the fold")

    with pytest.raises(ValueError, match="a bug"):
        await read_partitions_to_end(KafkaSettings(), [A0], handle, client_id="reader")
    assert made[0].started and made[0].stopped

    assert await read_partitions_to_end(KafkaSettings(), [], handle, client_id="reader") == {}
    assert len(made) == 1, "no partitions: no consumer"


@dataclass
class FakeProducer:
    """A transactional producer: ``acks`` decides each send's outcome (None: acked)."""

    fail: set[int] = field(default_factory=set)
    """Which sends (0, 1, ...) fail, as a fenced producer fails its batches."""
    refuse: set[int] = field(default_factory=set)
    """Which sends raise at once (a record too large), after queueing the earlier ones."""
    sent: list[tuple[str, bytes, int | None]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.log.append("begin")
        try:
            yield
        except BaseException:
            self.log.append("abort")
            raise
        self.log.append("commit")

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> asyncio.Future[Any]:
        if len(self.sent) in self.refuse:
            raise ValueError(f"send {len(self.sent) + 1} refused")
        self.sent.append((topic, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        if len(self.sent) - 1 in self.fail:
            loop.call_soon(future.set_exception, RuntimeError(f"fenced at send {len(self.sent)}"))
        else:
            loop.call_soon(future.set_result, f"{topic}@{len(self.sent)}")
        self.futures.append(future)
        return future

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        assert all(f.done() for f in self.futures), "offsets only after every ack"
        self.log.append(f"offsets {group_id} {sorted(offsets.items())}")


def records(n: int) -> Sequence[OutgoingRecord]:
    return [OutgoingRecord("out", b"k", str(i).encode(), []) for i in range(n)]


async def test_a_transaction_sends_waits_for_every_ack_then_commits_the_offsets() -> None:
    producer = FakeProducer()
    await send_in_transaction(
        producer,  # type: ignore[arg-type]
        records(3),
        partition=4,
        offsets={A0: 17},
        group_id="executor",
        before_commit=lambda: producer.log.append("before-commit"),
    )
    assert producer.sent == [("out", b"0", 4), ("out", b"1", 4), ("out", b"2", 4)]
    assert producer.log == [
        "begin",
        f"offsets executor {[(A0, 17)]}",
        "before-commit",
        "commit",
    ]


async def test_a_failed_ack_aborts_and_no_failure_is_left_unread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer(fail={1, 2})
    with pytest.raises(RuntimeError, match="fenced at send 2"):
        await send_in_transaction(producer, records(3), offsets={A0: 3}, group_id="g")  # type: ignore[arg-type]
    assert producer.log == ["begin", "abort"]


async def test_a_refused_send_aborts_and_the_queued_sends_failures_are_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first two are queued (and will fail with the aborted batch); the third is
    # refused at once, before anything awaits the first two's futures.
    producer = FakeProducer(fail={0, 1}, refuse={2})
    with pytest.raises(ValueError, match="send 3 refused"):
        await send_in_transaction(producer, records(3))  # type: ignore[arg-type]
    assert producer.log == ["begin", "abort"]
    assert all(f.done() for f in producer.futures)
    # Unread, asyncio would log "exception was never retrieved" once they are collected.
    producer.futures.clear()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
        await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
