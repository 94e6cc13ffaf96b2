"""The base of every jobreaper message.

Every message on a jobreaper topic is a CloudEvent (Kafka binary mode): the
``ce_*`` headers carry the envelope, the JSON body is one of these models.
A model names its own CloudEvents type (``CE_TYPE``), the topic it travels
on (``TOPIC``, without the configurable prefix) and how it is keyed
(:meth:`Message.kafka_key`), so the codec in :mod:`schemas.cloudevents` needs
no table of its own.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict

UtcDatetime = AwareDatetime
"""A timezone-aware instant (RFC 3339 with ``Z`` or an offset; a naive time is
rejected: it cannot be replayed). jobreaper itself always writes UTC (``Z``).
Another offset is kept as given: every comparison and every duration is by
instant, and the core's own outputs are built in UTC. (Validated in pydantic's
Rust core: normalising in a Python validator cost about 1.3 us per field on
the hottest path of every consumer.)"""


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
