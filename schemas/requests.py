"""Kill requests: "kill this Job (now, or at a time)", from the CLI or another system."""

from __future__ import annotations

from typing import ClassVar

from .base import Message, UtcDatetime, job_key
from .topics import KILL_REQUESTS


class KillRequested(Message):
    """Someone asked for a Job to be killed.

    Like Furiko's ``spec.killTimestamp``: a time in the future waits and the
    kill becomes due exactly then; of several requests the earliest wins (a
    kill time is never postponed). Without ``job_uid`` the request targets
    the Job that had this name when it was made (``requested_at``), never a
    later Job re-created under the same name.
    """

    CE_TYPE: ClassVar[str] = "io.jobreaper.kill.requested.v1"
    TOPIC: ClassVar[str] = KILL_REQUESTS

    request_id: str
    namespace: str
    job_name: str
    job_uid: str | None = None
    """Pin the request to one Job object; ``None``: the Job of that name at ``requested_at``."""
    kill_at: UtcDatetime | None = None
    """When to kill; ``None`` means at ``requested_at``."""
    reason: str = ""
    """Free text, recorded in the kill events."""
    requested_by: str
    """Who asked (user, system)."""
    requested_at: UtcDatetime

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


REQUESTS: tuple[type[Message], ...] = (KillRequested,)
