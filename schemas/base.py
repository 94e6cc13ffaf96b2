"""The base of every jobreaper message.

Every message on a jobreaper topic is a CloudEvent (Kafka binary mode): the
``ce_*`` headers carry the envelope, the JSON body is one of these models.
A model names its own CloudEvents type (``CE_TYPE``), the topic it travels
on (``TOPIC``, without the configurable prefix) and how it is keyed
(:meth:`Message.kafka_key`), so the codec in :mod:`schemas.cloudevents` needs
no table of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict


def _require_utc(value: datetime) -> datetime:
    """Reject naive datetimes: a time without a zone cannot be replayed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (RFC 3339), e.g. 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
"""A timezone-aware instant, normalised to UTC."""


class Message(BaseModel):
    """A message body. Unknown fields are ignored so that newer producers
    can add optional fields without breaking older consumers."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    CE_TYPE: ClassVar[str]
    TOPIC: ClassVar[str]

    def kafka_key(self) -> str:
        """The record key; Job-scoped messages are keyed ``namespace/job-name``."""
        raise NotImplementedError(f"{type(self).__name__} does not define its key")


def job_key(namespace: str, job_name: str) -> str:
    """The key of everything about one Job, so its history stays in one partition."""
    return f"{namespace}/{job_name}"
