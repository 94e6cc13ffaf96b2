"""Dead letters stay under Kafka's limit: a record the broker took just under it is
over it with the dead letter's two headers."""

from __future__ import annotations

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.parts import KAFKA_DEFAULT_MAX_BYTES
from services.runtime.kafka import (
    DEADLETTER_MAX_BYTES,
    DEADLETTER_OMITTED_HEADER,
    OutgoingRecord,
    dead_letter_record,
)
from services.runtime.topics import TopicNames


def letter(
    value: bytes, headers: list[tuple[str, bytes]], reason: str = "undecodable: x"
) -> object:
    return dead_letter_record(
        TopicNames(),
        source_topic="jobreaper.k8s.objects",
        partition=3,
        offset=17,
        key=b"ns/job",
        value=value,
        headers=headers,
        reason=reason,
    )


def producer_size(record: OutgoingRecord) -> int:
    """What aiokafka's producer checks against ``max_request_size``."""
    return int(
        DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
    )


def test_a_small_record_is_kept_byte_for_byte() -> None:
    dead = letter(b"{not json", [("ce_type", b"??")])
    assert dead.value == b"{not json"
    assert dead.headers == [
        ("ce_type", b"??"),
        ("jr_deadletter_reason", b"undecodable: x"),
        ("jr_deadletter_source", b"jobreaper.k8s.objects/3@17"),
    ]


def test_a_record_at_the_limit_is_dead_lettered_without_its_value() -> None:
    value = b"{" + b"x" * 1_048_400
    assert producer_size(letter(b"", [("ce_type", b"?")])) + len(value) > KAFKA_DEFAULT_MAX_BYTES
    dead = letter(value, [("ce_type", b"?")], reason="r" * 50_000)
    assert dead.value == b""
    headers = dict(dead.headers)
    assert headers["ce_type"] == b"?"
    assert headers[DEADLETTER_OMITTED_HEADER] == (
        b"1048401 bytes; the original is at jobreaper.k8s.objects/3@17"
    )
    assert len(headers["jr_deadletter_reason"]) == 2_000
    assert producer_size(dead) < DEADLETTER_MAX_BYTES


def test_headers_as_large_as_the_limit_are_left_out_too() -> None:
    headers = [(f"h{i}", b"y" * 100_000) for i in range(11)]
    dead = letter(b"z" * 100, headers)
    names = [k for k, _ in dead.headers]
    assert names == ["jr_deadletter_reason", "jr_deadletter_source", DEADLETTER_OMITTED_HEADER]
    assert dict(dead.headers)[DEADLETTER_OMITTED_HEADER].endswith(b"(its 11 headers too)")
    assert producer_size(dead) < DEADLETTER_MAX_BYTES
