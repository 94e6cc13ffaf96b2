"""``jobreaper killer``: run the killer (the decision service)."""

from __future__ import annotations

import asyncio

import typer

from services.runtime.cli_support import (
    BOOTSTRAP_HELP,
    HTTP_PORT_HELP,
    PREFIX_HELP,
    load_settings,
)
from services.runtime.service import serve

from .service import Killer
from .settings import KillerServiceSettings

app = typer.Typer(help="Decide kills and escalation steps from the topics.", no_args_is_help=True)


@app.command("run")
def run(
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
    http_port: int | None = typer.Option(None, help=HTTP_PORT_HELP),
) -> None:
    """Fold observations, kill requests and config into state and issue escalation commands.

    Instances in one consumer group split the partitions; each rebuilds its
    partitions' state from the log before deciding, and writes each decision in
    one Kafka transaction. Steps happen at their due time (timers, no resync).
    The killer needs no Kubernetes credentials: the executor applies its commands.
    """
    kafka, service = load_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kubeconfig=None,
        http_port=http_port,
    )
    asyncio.run(serve(Killer(kafka, KillerServiceSettings()), service, "killer"))
