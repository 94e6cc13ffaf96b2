"""``jobreaper watcher``: run the watcher."""

from __future__ import annotations

import typer

from services.runtime.cli_support import (
    BOOTSTRAP_HELP,
    HTTP_PORT_HELP,
    KUBECONFIG_HELP,
    PREFIX_HELP,
    load_settings,
    run_service,
)

from .service import Watcher
from .settings import WatcherSettings

app = typer.Typer(help="Watch Pods, Jobs and Nodes and publish what changes.", no_args_is_help=True)


@app.command("run")
def run(
    kubeconfig: str | None = typer.Option(None, help=KUBECONFIG_HELP),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
    http_port: int | None = typer.Option(None, help=HTTP_PORT_HELP),
    namespace: list[str] | None = typer.Option(
        None,
        "--namespace",
        "-n",
        help="Watch only this namespace (repeatable) (env: JOBREAPER_WATCHER_NAMESPACES)",
    ),
    selector: str | None = typer.Option(
        None, "--selector", "-l", help="Only Jobs and pods with these labels (k=v,...)"
    ),
) -> None:
    """Publish every change of Job pods, Jobs and Nodes to Kafka, in order per Job.

    Lists, then watches; after a restart or a 410 Gone it re-lists and publishes
    what it missed (deletions too), so the topics converge to the cluster. Run two
    replicas for availability: only the holder of the Lease publishes.
    """
    kafka, service = load_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kubeconfig=kubeconfig,
        http_port=http_port,
    )
    overrides: dict[str, object] = {}
    if namespace:
        overrides["namespaces"] = list(namespace)
    if selector:
        overrides["label_selector"] = selector
    settings = WatcherSettings(**overrides)  # type: ignore[arg-type]

    run_service("watcher", service, lambda api: Watcher(api, kafka, settings))
