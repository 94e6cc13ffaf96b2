"""Build and publish a ``KillRequested`` (or a ``KillCancelRequested``) on
``kill.requests``.

Other code (the demo, scripts) calls :func:`request_kill` and
:func:`request_cancel`; ``jobreaper kill`` is a thin command over them. The
killer does the rest: a request is one more input it folds, like the
``jobreaper.io/kill-timestamp`` annotation. Until the kill starts, the newest
request replaces an earlier one's time and a cancellation clears it; between
the requests and the annotation the earlier time wins (docs/user-guide.md,
"Cancel and postpone").

A request lives only in the log, and ``kill.requests`` deletes records after
its retention (a week by default): a request due later than that would be
forgotten by a killer rebuilt after it expired. So a kill may be asked for at
most half that retention ahead (:func:`max_ahead`, read from the topic's
config); further ahead, annotate the Job, which the watcher keeps in the log for
as long as the Job exists.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError
from pydantic import ValidationError

from schemas.annotations import KILL_TIMESTAMP
from schemas.requests import KillCancelRequested, KillRequested
from schemas.topics import KILL_REQUESTS
from services.runtime.kafka import describe_retention, ensure_topics, publish_one
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames

SOURCE = "/jobreaper/kill"
"""The CloudEvents ``source`` of requests made through this module."""

PAST_TOLERANCE = timedelta(seconds=2)
"""A time this little in the past is "now" (clock skew, typing ``--at`` with the
current second). Anything older is rejected: see :func:`parse_kill_time`."""

MAX_AHEAD_FRACTION = 0.5
"""A kill may be requested at most this fraction of ``kill.requests``' retention
ahead: the request must still be in the log when it comes due, and after, for a
killer that restarts meanwhile (or is down at the kill time) to find it."""

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


def check_ahead(
    kill_at: datetime | None, now: datetime, retention_ms: int, topic: str = KILL_REQUESTS
) -> None:
    """Refuse a kill time further ahead than half the retention of ``kill.requests``
    (``retention_ms`` < 0: kept for ever, no limit)."""
    if kill_at is None or retention_ms < 0:
        return
    limit = timedelta(milliseconds=retention_ms) * MAX_AHEAD_FRACTION
    ahead = kill_at - now
    if ahead <= limit:
        return
    raise BadRequest(
        f"--at {_rfc3339(kill_at)} is {_human(ahead.total_seconds())} ahead, more than half "
        f"the retention of {topic} ({_human(retention_ms / 1000)}): the request could expire "
        "from the log before it is carried out. For a kill that far ahead, annotate the Job "
        f"instead (kubectl annotate job NAME {KILL_TIMESTAMP}={_rfc3339(kill_at)}), which "
        "jobreaper keeps for as long as the Job exists"
    )


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def max_ahead(kafka: KafkaSettings) -> tuple[int, str | None]:
    """The retention of ``kill.requests`` (ms, -1: for ever), and a warning when it
    could not be read (no DescribeConfigs ACL) and the created topic's default was
    assumed instead."""
    topic = TopicNames(kafka.topic_prefix)(KILL_REQUESTS)
    try:
        return (await describe_retention(kafka, [topic]))[topic].retention_ms, None
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
        default = next(s for s in TOPIC_SPECS if s.name == KILL_REQUESTS).retention_ms
        return default, (
            f"could not read the retention of {topic} ({exc}); assuming {_human(default / 1000)}"
        )


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
    """The message, without sending it (pure but for a fresh request id); a field
    over the topic's limits (see :class:`KillRequested`) is a :class:`BadRequest`."""
    try:
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
    except ValidationError as exc:
        raise BadRequest(f"the request would be refused by the killer: {_problems(exc)}") from exc


def build_cancel(
    namespace: str,
    job: str,
    *,
    now: datetime,
    reason: str = "",
    job_uid: str | None = None,
    requested_by: str | None = None,
) -> KillCancelRequested:
    """The cancellation, without sending it; a field over the topic's limits is a
    :class:`BadRequest`, as for a request."""
    try:
        return KillCancelRequested(
            request_id=uuid.uuid4().hex,
            namespace=namespace,
            job_name=job,
            job_uid=job_uid or None,
            reason=reason,
            requested_by=requested_by or default_requester(),
            requested_at=now,
        )
    except ValidationError as exc:
        raise BadRequest(f"the request would be refused by the killer: {_problems(exc)}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


@dataclass(frozen=True)
class Published:
    request: KillRequested | KillCancelRequested
    topic: str
    partition: int
    offset: int


async def publish_request(
    kafka: KafkaSettings,
    request: KillRequested | KillCancelRequested,
    *,
    timeout_s: float = 30.0,
    warn: Callable[[str], None] | None = None,
) -> Published:
    """Send ``request`` (or a cancellation) to ``kill.requests`` (acks=all, idempotent)
    and wait for the ack.

    The topic is created first if missing and the settings allow it, as every
    service does at start. A kill time more than half the topic's retention ahead
    is refused (:class:`BadRequest`, nothing sent; ``warn`` hears it if the
    retention could not be read). Raises ``KafkaError`` or ``TimeoutError``.
    """
    if kafka.create_topics:
        specs = [s for s in TOPIC_SPECS if s.name == KILL_REQUESTS]
        await asyncio.wait_for(
            ensure_topics(kafka, job_partitions=kafka.job_partitions, specs=specs), timeout_s
        )
    if isinstance(request, KillRequested) and request.kill_at is not None:
        retention_ms, warning = await asyncio.wait_for(max_ahead(kafka), timeout_s)
        if warning and warn is not None:
            warn(warning)
        check_ahead(request.kill_at, request.requested_at, retention_ms)
    record = outgoing(
        TopicNames(kafka.topic_prefix), request, source=SOURCE, event_id=request.request_id
    )
    meta = await publish_one(kafka, record, client_id="jobreaper-kill", timeout_s=timeout_s)
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


async def request_cancel(
    kafka: KafkaSettings,
    namespace: str,
    job: str,
    *,
    reason: str = "",
    job_uid: str | None = None,
    requested_by: str | None = None,
) -> Published:
    """Cancel the requested kill of ``namespace/job`` if it has not started."""
    cancel = build_cancel(
        namespace,
        job,
        now=datetime.now(UTC),
        reason=reason,
        job_uid=job_uid,
        requested_by=requested_by,
    )
    return await publish_request(kafka, cancel)
