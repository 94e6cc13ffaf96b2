"""``jobreaper force resume``: let force deletion go on although the mass-disruption
guard is tripped (docs/user-guide.md, "The mass-disruption guard").

Publishes one ``ForceResumeRequested`` on ``force.resumes``, a topic every killer
partition folds whole (as ``k8s.nodes``), so every partition (and every rebuild and
replay) lifts the guard alike. The message is the
audit record: who (``requested_by``), when (``requested_at``), why (``reason``).

Exit codes: 0 published; 1 Kafka could not be reached; 2 bad usage.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.requests import ForceResumeRequested
from schemas.topics import FORCE_RESUMES
from services.runtime.cli_support import BOOTSTRAP_HELP, PREFIX_HELP, fail
from services.runtime.kafka import ensure_topics, publish_one
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames

from .request import SOURCE, default_requester

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2

app = typer.Typer(
    help="Force deletion: the mass-disruption guard (docs/user-guide.md).",
    no_args_is_help=True,
    add_completion=False,
)


def build_resume(
    *, now: datetime, zone: str | None, reason: str, requested_by: str | None
) -> ForceResumeRequested:
    """The resume, without sending it (``ValueError`` if a field is over its limit)."""
    try:
        return ForceResumeRequested(
            request_id=uuid.uuid4().hex,
            zone=zone,
            reason=reason,
            requested_by=requested_by or default_requester(),
            requested_at=now,
        )
    except ValidationError as exc:
        raise ValueError(str(exc)) from exc


async def publish_resume(
    kafka: KafkaSettings, resume: ForceResumeRequested, *, timeout_s: float = 30.0
) -> tuple[str, int, int]:
    """Send ``resume`` to ``force.resumes`` (acks=all, idempotent); (topic, partition,
    offset)."""
    if kafka.create_topics:
        specs = [s for s in TOPIC_SPECS if s.name == FORCE_RESUMES]
        await asyncio.wait_for(
            ensure_topics(kafka, job_partitions=kafka.job_partitions, specs=specs), timeout_s
        )
    record = outgoing(
        TopicNames(kafka.topic_prefix), resume, source=SOURCE, event_id=resume.request_id
    )
    meta = await publish_one(kafka, record, client_id="jobreaper-force", timeout_s=timeout_s)
    return record.topic, meta.partition, meta.offset


@app.command("resume")
def resume(
    zone: str | None = typer.Option(
        None,
        "--zone",
        help='Only this topology.kubernetes.io/zone ("" for nodes without one); '
        "default: every zone",
    ),
    reason: str = typer.Option("", "--reason", help="Why (kept in the record and the event)"),
    by: str | None = typer.Option(
        None, "--by", metavar="WHO", help="Who asks (default: user@host)"
    ),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """Resume force deletion where the mass-disruption guard paused it.

    The nodes silent now stop counting towards the guard: the pods held on them
    (ForceDeletionHeld, waits_for: guard) are force-deleted, within the rate limit.
    Nodes lost after this command count again: a new mass event trips the guard
    again. Use it once you know the silent nodes are down (powered off, gone), not
    merely cut off: their pods' processes may still run.

    Examples:

      jobreaper force resume --reason "rack r12 powered off, confirmed by DC ops"

      jobreaper force resume --zone eu-west-1a --by oncall
    """
    now = datetime.now(UTC)
    try:
        message = build_resume(now=now, zone=zone, reason=reason, requested_by=by)
    except ValueError as exc:
        raise fail(f"the resume would be refused by the killer: {exc}", EXIT_USAGE) from exc
    overrides = {
        k: v for k, v in {"bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix}.items() if v
    }
    kafka = KafkaSettings(**overrides)  # type: ignore[arg-type]
    try:
        topic, partition, offset = asyncio.run(publish_resume(kafka, message))
    except (KafkaError, TimeoutError, OSError) as exc:
        raise fail(
            f"could not publish to Kafka at {kafka.bootstrap}: {exc or type(exc).__name__} "
            "(set --kafka or JOBREAPER_KAFKA_BOOTSTRAP)",
            EXIT_UNREACHABLE,
        ) from exc
    where = "every zone" if zone is None else f"zone {zone!r}"
    typer.echo(
        f"force deletion resumed in {where} by {message.requested_by} at "
        f"{now.isoformat(timespec='seconds')} ({topic}/{partition}@{offset}): nodes silent "
        "now no longer hold it back"
    )
