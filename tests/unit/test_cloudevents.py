"""The CloudEvents binary-mode codec: round trips and every way a record can be bad."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from schemas.base import Message, UtcDatetime, job_key
from schemas.cloudevents import (
    BadJson,
    Codec,
    DecodeError,
    InvalidPayload,
    MissingHeader,
    NewerVersion,
    UnknownType,
    UnsupportedSpecVersion,
    WrongTopic,
)


class Sample(Message):
    CE_TYPE: ClassVar[str] = "io.jobreaper.sample.observed.v1"
    TOPIC: ClassVar[str] = "k8s.objects"

    namespace: str
    job_name: str
    at: UtcDatetime
    count: int = 0

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


CODEC = Codec([Sample])
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _record() -> tuple[list[tuple[str, bytes]], bytes]:
    msg = Sample(namespace="ns", job_name="job", at=AT, count=3)
    rec = CODEC.encode(msg, source="/test", event_id="id-1", time=AT)
    return rec.headers, rec.value


def test_round_trip_keeps_message_and_attributes() -> None:
    msg = Sample(namespace="ns", job_name="job", at=AT, count=3)
    rec = CODEC.encode(msg, source="/test", event_id="id-1", time=AT)
    assert rec.topic == "k8s.objects"
    assert rec.key == b"ns/job"
    env = CODEC.decode(rec.headers, rec.value)
    assert env.message == msg
    assert (env.id, env.type, env.source, env.time) == ("id-1", Sample.CE_TYPE, "/test", AT)
    assert dict(rec.headers)["ce_time"] == b"2026-01-02T03:04:05Z"


def test_encoding_is_reproducible_when_id_and_time_are_given() -> None:
    msg = Sample(namespace="ns", job_name="job", at=AT)
    first = CODEC.encode(msg, source="/s", event_id="x", time=AT)
    assert CODEC.encode(msg, source="/s", event_id="x", time=AT) == first


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    headers, value = _record()
    data = json.loads(value)
    data["added_in_a_later_release"] = {"x": 1}
    env = CODEC.decode(headers, json.dumps(data).encode())
    assert isinstance(env.message, Sample)


def _replace(
    headers: list[tuple[str, bytes]], name: str, value: bytes | None
) -> list[tuple[str, bytes]]:
    out = [(k, v) for k, v in headers if k != name]
    return out if value is None else [*out, (name, value)]


@pytest.mark.parametrize(
    ("mutate", "error", "reason_part"),
    [
        (lambda h, v: (_replace(h, "ce_type", None), v), MissingHeader, "ce_type is missing"),
        (lambda h, v: (_replace(h, "ce_id", b""), v), MissingHeader, "ce_id is missing"),
        (lambda h, v: (_replace(h, "ce_specversion", b"0.3"), v), UnsupportedSpecVersion, "0.3"),
        (
            lambda h, v: (_replace(h, "ce_type", b"io.other.thing.v1"), v),
            UnknownType,
            "io.other.thing.v1",
        ),
        (
            lambda h, v: (_replace(h, "ce_type", b"io.jobreaper.sample.observed.v2"), v),
            NewerVersion,
            "up to v1",
        ),
        (lambda h, v: (h, b"{not json"), BadJson, "bad-json"),
        (lambda h, v: (h, b"[1, 2]"), BadJson, "list"),
        (lambda h, v: (h, None), BadJson, "no value"),
        (lambda h, v: (h, b'{"namespace": "ns"}'), InvalidPayload, "job_name"),
        (
            lambda h, v: (h, v.replace(b"Z", b"")),
            InvalidPayload,
            "timezone",
        ),
        (lambda h, v: (_replace(h, "ce_time", b"yesterday"), v), MissingHeader, "RFC 3339"),
        (
            lambda h, v: (_replace(h, "ce_time", b"9999-12-31T23:59:59-14:00"), v),
            MissingHeader,
            "RFC 3339",
        ),
        (lambda h, v: (_replace(h, "ce_time", b"2026-01-02T03:04:05"), v), MissingHeader, "zone"),
        (
            lambda h, v: (_replace(h, "content-type", b"application/avro"), v),
            BadJson,
            "content-type",
        ),
    ],
)
def test_bad_records_raise_a_typed_error_with_a_reason(mutate, error, reason_part) -> None:  # type: ignore[no-untyped-def]
    headers, value = mutate(*_record())
    with pytest.raises(error) as info:
        CODEC.decode(headers, value)
    assert isinstance(info.value, DecodeError)
    assert reason_part in info.value.reason


def test_a_type_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="two models"):
        Codec([Sample, Sample])


def test_an_instant_with_another_offset_is_the_same_instant() -> None:
    headers, value = _record()
    body = json.loads(value)
    body["at"] = "2026-11-23T14:00:00+02:00"
    decoded = CODEC.decode(headers, json.dumps(body).encode()).message
    assert isinstance(decoded, Sample)
    assert decoded.at == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_a_header_that_is_not_utf8_is_named() -> None:
    headers, value = _record()
    with pytest.raises(MissingHeader, match="ce_source is not UTF-8"):
        CODEC.decode(_replace(headers, "ce_source", b"\xff\xfe"), value)


def test_a_message_read_from_a_topic_not_its_own_is_refused() -> None:
    headers, value = _record()
    assert CODEC.decode(headers, value, "k8s.objects").message.count == 3
    with pytest.raises(WrongTopic) as info:
        CODEC.decode(headers, value, "kill.requests")
    assert info.value.reason == (
        "wrong-topic: io.jobreaper.sample.observed.v1 belongs on k8s.objects, not on kill.requests"
    )
