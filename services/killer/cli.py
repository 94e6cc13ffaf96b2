"""``jobreaper killer``: run the killer (the decision service)."""

from __future__ import annotations

import asyncio

import typer

from services.runtime.cli_support import (
    BOOTSTRAP_HELP,
    HTTP_PORT_HELP,
    KUBECONFIG_HELP,
    PREFIX_HELP,
    fail,
    load_settings,
)
from services.runtime.clock import version_probe
from services.runtime.kube import KubeConfigError, load_api_client
from services.runtime.service import serve

from .service import Killer
from .settings import KillerServiceSettings

app = typer.Typer(help="Decide kills and escalation steps from the topics.", no_args_is_help=True)


@app.command("run")
def run(
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
    http_port: int | None = typer.Option(None, help=HTTP_PORT_HELP),
    kubeconfig: str | None = typer.Option(
        None,
        help=KUBECONFIG_HELP
        + " Used only to read the API server's clock (JOBREAPER_KILLER_CLOCK=api, the default).",
    ),
) -> None:
    """Fold observations, kill requests and config into state and issue escalation commands.

    Instances in one consumer group split the partitions; each rebuilds its
    partitions' state from the log before deciding, and writes each decision in
    one Kafka transaction. Steps happen at their due time (timers, no resync).
    The killer writes nothing to Kubernetes (the executor applies its commands);
    it reads the API server's clock (GET /version) and decides on it, so that a
    skewed host clock acts neither early nor late. JOBREAPER_KILLER_CLOCK=local
    trusts this host's clock instead and needs no Kubernetes credentials.
    """
    kafka, service = load_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kubeconfig=kubeconfig,
        http_port=http_port,
    )
    settings = KillerServiceSettings()

    async def main() -> None:
        if settings.clock == "local":
            await serve(Killer(kafka, settings), service, "killer")
            return
        api = await load_api_client(service.kubeconfig)
        try:
            killer = Killer(kafka, settings, clock_probe=version_probe(api))
            await serve(killer, service, "killer")
        finally:
            await api.close()

    try:
        asyncio.run(main())
    except KubeConfigError as exc:
        raise fail(
            f"{exc} (the killer reads the API server's clock; JOBREAPER_KILLER_CLOCK=local "
            "decides on this host's clock and needs no credentials)",
            2,
        ) from exc
