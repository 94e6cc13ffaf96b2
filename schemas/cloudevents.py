"""CloudEvents 1.0 in Kafka binary mode: one place maps model <-> record.

Binary mode puts the envelope in headers (``ce_specversion``, ``ce_id``,
``ce_type``, ``ce_source``, ``ce_time``, ``content-type``) and the data, a
JSON object validated by a :class:`~schemas.base.Message` model, in the
value. Decoding never raises anything but :class:`DecodeError`, whose
``reason`` a consumer copies into the dead-letter record.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from pydantic import ValidationError

from .base import Message

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time")
_READ_HEADERS = (*REQUIRED_HEADERS, "content-type")
_SPEC_VERSION_BYTES = SPEC_VERSION.encode()
_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()
_VERSIONED_TYPE = re.compile(r"^(?P<base>.+)\.v(?P<version>\d+)$")


class DecodeError(Exception):
    """A record that is not a message we understand; ``reason`` says why."""

    kind = "undecodable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = f"{self.kind}: {reason}"


class MissingHeader(DecodeError):
    kind = "missing-header"


class UnsupportedSpecVersion(DecodeError):
    kind = "unsupported-specversion"


class UnknownType(DecodeError):
    kind = "unknown-type"


class NewerVersion(DecodeError):
    """A known message in a version newer than this build understands."""

    kind = "newer-version"


class BadJson(DecodeError):
    kind = "bad-json"


class InvalidPayload(DecodeError):
    kind = "invalid-payload"


class WrongTopic(DecodeError):
    """A valid message on a topic that is not its own (``Message.TOPIC``): a
    ``CommandApplied`` written to ``kill.requests`` must not pass for the executor's."""

    kind = "wrong-topic"


@dataclass(frozen=True)
class EncodedRecord:
    """A message as Kafka sees it; ``topic`` is the design name, unprefixed."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class Envelope(NamedTuple):
    """A decoded CloudEvent: its attributes and its validated data (a tuple:
    built once per record, on the hot path of every consumer)."""

    id: str
    type: str
    source: str
    time: datetime
    message: Message


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as CloudEvents requires."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Codec:
    """Encodes and decodes the messages it is given (by their ``CE_TYPE``)."""

    def __init__(self, models: Iterable[type[Message]]) -> None:
        self._by_type: dict[str, type[Message]] = {}
        self._newest: dict[str, int] = {}
        for model in models:
            if model.CE_TYPE in self._by_type:
                raise ValueError(f"two models claim ce_type {model.CE_TYPE}")
            self._by_type[model.CE_TYPE] = model
            match = _VERSIONED_TYPE.match(model.CE_TYPE)
            if match is None:
                raise ValueError(f"ce_type {model.CE_TYPE} does not end in .v<N>")
            base, version = match["base"], int(match["version"])
            self._newest[base] = max(self._newest.get(base, 0), version)

    @property
    def types(self) -> Mapping[str, type[Message]]:
        return self._by_type

    def encode(
        self,
        message: Message,
        *,
        source: str,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> EncodedRecord:
        """The record for ``message``. Pass ``event_id`` and ``time`` when the
        record must be reproducible (the killer derives both); otherwise a
        random id and the current time are used."""
        if type(message).CE_TYPE not in self._by_type:
            raise ValueError(f"{type(message).__name__} is not registered with this codec")
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", (event_id or str(uuid.uuid4())).encode()),
            ("ce_type", message.CE_TYPE.encode()),
            ("ce_source", source.encode()),
            ("ce_time", format_time(time or datetime.now(UTC)).encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        return EncodedRecord(
            topic=message.TOPIC,
            key=message.kafka_key().encode(),
            value=message.model_dump_json(by_alias=True).encode(),
            headers=headers,
        )

    def decode(
        self, headers: Sequence[tuple[str, bytes]], value: bytes | None, topic: str | None = None
    ) -> Envelope:
        """The envelope of a record, or a :class:`DecodeError` saying why not.

        ``topic``: the design name (without prefix) of the topic the record was read
        from; a message of a type that belongs elsewhere is a :class:`WrongTopic`.
        Every consumer passes it: each topic is a trust boundary (who may write it
        is a Kafka ACL), and a type read from the wrong one is a forgery or a bug."""
        raw = dict(headers)  # the last of a repeated header wins
        try:
            # The fast path: every record a jobreaper producer writes.
            spec, ce_id, ce_type = raw["ce_specversion"], raw["ce_id"], raw["ce_type"]
            source, ce_time = raw["ce_source"], raw["ce_time"]
            content_type = raw.get("content-type", _CONTENT_TYPE_BYTES)
            usual = spec == _SPEC_VERSION_BYTES and content_type == _CONTENT_TYPE_BYTES
            attrs = {
                "ce_id": ce_id.decode(),
                "ce_type": ce_type.decode(),
                "ce_source": source.decode(),
                "ce_time": ce_time.decode(),
            }
        except (KeyError, UnicodeDecodeError):
            usual = False
        if not usual or not all(attrs.values()):
            attrs = self._checked_headers(raw)
        model = self._model_for(attrs["ce_type"])
        if topic is not None and topic != model.TOPIC:
            raise WrongTopic(f"{attrs['ce_type']} belongs on {model.TOPIC}, not on {topic}")
        try:
            time = datetime.fromisoformat(attrs["ce_time"])
            if time.tzinfo is None:
                raise MissingHeader(f"ce_time {attrs['ce_time']!r} has no timezone")
            time = time.astimezone(UTC)  # 9999-12-31T23:59:59-14:00 overflows here
        except (ValueError, OverflowError) as exc:
            raise MissingHeader(f"ce_time {attrs['ce_time']!r} is not an RFC 3339 instant") from exc
        if value is None:
            raise BadJson("the record has no value")
        try:
            # pydantic-core parses and validates in one pass (no dict in between).
            message = model.model_validate_json(value)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if errors and errors[0]["type"] == "json_invalid":
                raise BadJson(str(errors[0]["msg"])) from exc
            if errors and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
                kind = type(json.loads(value)).__name__
                raise BadJson(f"the value is a JSON {kind}, not an object") from exc
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in errors
            )
            raise InvalidPayload(f"{attrs['ce_type']}: {problems}") from exc
        except UnicodeDecodeError as exc:
            raise BadJson(str(exc)) from exc
        return Envelope(
            id=attrs["ce_id"],
            type=attrs["ce_type"],
            source=attrs["ce_source"],
            time=time,
            message=message,
        )

    @staticmethod
    def _checked_headers(raw: Mapping[str, bytes]) -> dict[str, str]:
        """The headers of an unusual record, each problem named as a typed error."""
        attrs: dict[str, str] = {}
        for name in _READ_HEADERS:
            value = raw.get(name)
            if value:
                try:
                    attrs[name] = value.decode()
                except UnicodeDecodeError as exc:
                    raise MissingHeader(f"header {name} is not UTF-8") from exc
            elif name in REQUIRED_HEADERS:
                raise MissingHeader(f"header {name} is missing")
        if attrs["ce_specversion"] != SPEC_VERSION:
            raise UnsupportedSpecVersion(f"ce_specversion {attrs['ce_specversion']!r}")
        content_type = attrs.get("content-type", CONTENT_TYPE)
        if content_type != CONTENT_TYPE and content_type.split(";")[0].strip() != CONTENT_TYPE:
            raise BadJson(f"content-type {content_type!r} is not {CONTENT_TYPE}")
        return attrs

    def _model_for(self, ce_type: str) -> type[Message]:
        model = self._by_type.get(ce_type)
        if model is not None:
            return model
        match = _VERSIONED_TYPE.match(ce_type)
        if match and match["base"] in self._newest:
            newest = self._newest[match["base"]]
            if int(match["version"]) > newest:
                raise NewerVersion(f"{ce_type}: this build reads up to v{newest}")
        raise UnknownType(f"ce_type {ce_type!r} is not a jobreaper message")
