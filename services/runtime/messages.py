"""The codec of every jobreaper message, and record <-> message helpers."""

from __future__ import annotations

from datetime import datetime

from schemas import ALL_MESSAGES
from schemas.base import Message
from schemas.cloudevents import Codec, EncodedRecord

from .kafka import OutgoingRecord
from .topics import TopicNames

CODEC = Codec(ALL_MESSAGES)


def outgoing(
    names: TopicNames,
    message: Message,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
) -> OutgoingRecord:
    """A message as a record on its (prefixed) topic."""
    encoded: EncodedRecord = CODEC.encode(message, source=source, event_id=event_id, time=time)
    return OutgoingRecord(
        topic=names(encoded.topic), key=encoded.key, value=encoded.value, headers=encoded.headers
    )
