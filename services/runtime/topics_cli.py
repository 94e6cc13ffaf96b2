"""``jobreaper topics``: create the topics of the design (idempotent)."""

from __future__ import annotations

import asyncio

import typer
from aiokafka.errors import KafkaError

from .kafka import ensure_topics, wait_for_kafka
from .settings import KafkaSettings
from .topics import TOPIC_SPECS, TopicNames, partitions_for

app = typer.Typer(help="Kafka topics of jobreaper.", no_args_is_help=True)


@app.command("create")
def create(
    bootstrap: str | None = typer.Option(
        None, help="Kafka bootstrap servers (env: JOBREAPER_KAFKA_BOOTSTRAP)"
    ),
    prefix: str | None = typer.Option(
        None, help="Topic prefix (env: JOBREAPER_KAFKA_TOPIC_PREFIX, default 'jobreaper.')"
    ),
    partitions: int = typer.Option(
        6,
        min=1,
        envvar="JOBREAPER_KAFKA_JOB_PARTITIONS",
        help="Partitions of each Job-keyed topic (all share it; the rest have 1) "
        "(env: JOBREAPER_KAFKA_JOB_PARTITIONS).",
    ),
    replication_factor: int = typer.Option(
        1,
        min=1,
        envvar="JOBREAPER_TOPICS_REPLICATION_FACTOR",
        help="Replicas of every topic (env: JOBREAPER_TOPICS_REPLICATION_FACTOR).",
    ),
    wait: float = typer.Option(60.0, help="Seconds to wait for Kafka to answer."),
) -> None:
    """Create every missing topic with its partitions, retention and compaction.

    Running it again creates nothing and succeeds: existing topics are left as they are.
    """
    overrides = {
        k: v for k, v in {"bootstrap": bootstrap, "topic_prefix": prefix}.items() if v is not None
    }
    settings = KafkaSettings(**overrides)  # type: ignore[arg-type]
    names = TopicNames(settings.topic_prefix)

    async def run() -> list[str]:
        await wait_for_kafka(settings, timeout_s=wait)
        return await ensure_topics(
            settings, job_partitions=partitions, replication_factor=replication_factor
        )

    try:
        created = asyncio.run(run())
    except KafkaError as exc:
        typer.echo(f"jobreaper: {exc}", err=True)
        raise typer.Exit(1) from exc
    for spec in TOPIC_SPECS:
        name = names(spec.name)
        state = "created" if name in created else "exists "
        policy = spec.configs()["cleanup.policy"]
        typer.echo(f"{state} {name:<32} partitions={partitions_for(spec, partitions)} {policy}")
