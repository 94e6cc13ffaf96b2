"""``jobreaper executor``: run the executor."""

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

from .service import Executor
from .settings import ExecutorSettings

app = typer.Typer(
    help="Apply kill commands to the Kubernetes API and record each result.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    kubeconfig: str | None = typer.Option(None, help=KUBECONFIG_HELP),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
    http_port: int | None = typer.Option(None, help=HTTP_PORT_HELP),
    group: str | None = typer.Option(
        None, "--group", help="Kafka consumer group (env: JOBREAPER_EXECUTOR_GROUP_ID)"
    ),
    no_events: bool = typer.Option(
        False,
        "--no-events",
        help="Do not publish Kubernetes Events (env: JOBREAPER_EXECUTOR_EVENTS)",
    ),
) -> None:
    """Consume kill.commands and apply each command exactly once.

    set-active-deadline patches the pod's activeDeadlineSeconds (only ever lowered),
    delete and force-delete delete it; every write carries the pod's UID as a
    precondition. Results go to kill.results in the same Kafka transaction as the
    consumed offset. Run several replicas: the partitions are shared among them.
    """
    kafka, service = load_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kubeconfig=kubeconfig,
        http_port=http_port,
    )
    overrides: dict[str, object] = {}
    if group:
        overrides["group_id"] = group
    if no_events:
        overrides["events"] = False
    settings = ExecutorSettings(**overrides)  # type: ignore[arg-type]

    run_service("executor", service, lambda api: Executor(api, kafka, settings))
