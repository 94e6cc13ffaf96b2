"""Build and publish a ``KillRequested`` on ``kill.requests``.

Other code (the demo, scripts) calls :func:`request_kill`; ``jobreaper kill`` is
a thin command over it. The killer does the rest: a request is one more input
it folds, like the ``jobreaper.io/kill-timestamp`` annotation (the earliest
kill time wins, a kill time is never postponed).
"""

from __future__ import annotations

import asyncio
import getpass
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.requests import KillRequested
from schemas.topics import KILL_REQUESTS
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames

SOURCE = "/jobreaper/kill"
"""The CloudEvents ``source`` of requests made through this module."""

PAST_TOLERANCE = timedelta(seconds=2)
"""A time this little in the past is "now" (clock skew, typing ``--at`` with the
current second). Anything older is rejected: see :func:`parse_kill_time`."""

_RELATIVE = re.compile(r"^\+(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s?)?$")


class BadRequest(ValueError):
    """A kill request that cannot be made (bad Job reference, bad time); one line."""


def parse_job_ref(text: str) -> tuple[str, str]:
    """``NAMESPACE/JOB`` -> (namespace, job)."""
    namespace, slash, job = text.partition("/")
    if not slash or not namespace or not job or "/" in job:
        raise BadRequest(f"{text!r}: give the Job as NAMESPACE/NAME")
    return namespace, job


def parse_kill_time(text: str | None, now: datetime) -> datetime | None:
    """When to kill: ``None`` (absent or ``now``) means now.

    Accepted: ``now``; relative ``+30s``, ``+5m``, ``+1h30m``, ``+90`` (seconds);
    RFC 3339 with a zone (``2026-11-23T17:00:00Z``, ``...+01:00``).

    A time in the past is an error, not "now": a kill time that is already
    behind us is most often a mistake (a wrong zone, a stale script) and
    killing at once would be the one irreversible reading of it. Up to
    :data:`PAST_TOLERANCE` in the past counts as now.
    """
    if text is None or text.strip().lower() == "now":
        return None
    text = text.strip()
    if text.startswith("+"):
        match = _RELATIVE.match(text)
        if match is None or text == "+":
            raise BadRequest(f"--at {text!r}: a relative time looks like +30s, +5m or +1h30m")
        parts = {k: int(v) for k, v in match.groupdict().items() if v}
        delta = timedelta(
            hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0)
        )
        return now + delta if delta else None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"--at {text!r}: not a time; give RFC 3339 (2026-11-23T17:00:00Z), +30s, +5m or now"
        ) from None
    if at.tzinfo is None:
        raise BadRequest(f"--at {text!r}: give a time zone (e.g. a trailing Z for UTC)")
    at = at.astimezone(UTC)
    if at < now - PAST_TOLERANCE:
        ago = (now - at).total_seconds()
        raise BadRequest(
            f"--at {text!r} is {_human(ago)} in the past; leave --at out (or say now) to kill now"
        )
    return max(at, now)


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def default_requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def build_request(
    namespace: str,
    job: str,
    *,
    now: datetime,
    kill_at: datetime | None = None,
    reason: str = "",
    job_uid: str | None = None,
    requested_by: str | None = None,
) -> KillRequested:
    """The message, without sending it (pure but for a fresh request id)."""
    return KillRequested(
        request_id=uuid.uuid4().hex,
        namespace=namespace,
        job_name=job,
        job_uid=job_uid or None,
        kill_at=kill_at,
        reason=reason,
        requested_by=requested_by or default_requester(),
        requested_at=now,
    )


@dataclass(frozen=True)
class Published:
    request: KillRequested
    topic: str
    partition: int
    offset: int


async def publish_request(
    kafka: KafkaSettings, request: KillRequested, *, timeout_s: float = 30.0
) -> Published:
    """Send ``request`` to ``kill.requests`` (acks=all, idempotent) and wait for the ack.

    The topic is created first if missing and the settings allow it, as every
    service does at start. Raises ``KafkaError`` or ``TimeoutError``.
    """
    if kafka.create_topics:
        specs = [s for s in TOPIC_SPECS if s.name == KILL_REQUESTS]
        await asyncio.wait_for(
            ensure_topics(kafka, job_partitions=kafka.job_partitions, specs=specs), timeout_s
        )
    record = outgoing(
        TopicNames(kafka.topic_prefix), request, source=SOURCE, event_id=request.request_id
    )
    producer = make_producer(kafka, client_id="jobreaper-kill")
    await asyncio.wait_for(producer.start(), timeout_s)
    try:
        meta = await asyncio.wait_for(
            producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=record.headers
            ),
            timeout_s,
        )
    finally:
        await producer.stop()
    return Published(request, record.topic, meta.partition, meta.offset)


async def request_kill(
    kafka: KafkaSettings,
    namespace: str,
    job: str,
    *,
    kill_at: datetime | None = None,
    reason: str = "",
    job_uid: str | None = None,
    requested_by: str | None = None,
) -> Published:
    """Ask the killer to kill ``namespace/job`` at ``kill_at`` (``None``: now)."""
    request = build_request(
        namespace,
        job,
        now=datetime.now(UTC),
        kill_at=kill_at,
        reason=reason,
        job_uid=job_uid,
        requested_by=requested_by,
    )
    return await publish_request(kafka, request)
