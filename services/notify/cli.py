"""``jobreaper notify``: forward kill alerts to a webhook."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.runtime.cli_support import (
    BOOTSTRAP_HELP,
    HTTP_PORT_HELP,
    PREFIX_HELP,
    fail,
    load_settings,
)
from services.runtime.service import serve

from .service import Notifier
from .settings import WHERE, NotifySettings


def notify(
    webhook_file: str | None = typer.Option(
        None,
        "--webhook-file",
        help="File holding the webhook URL, e.g. a mounted Secret (env: "
        "JOBREAPER_NOTIFY_WEBHOOK_FILE); or set JOBREAPER_NOTIFY_WEBHOOK. Never on the "
        "command line: the URL is a secret.",
    ),
    webhook: str | None = typer.Option(None, "--webhook", hidden=True),
    group_id: str | None = typer.Option(
        None,
        "--group-id",
        help="Consumer group (env: JOBREAPER_NOTIFY_GROUP_ID, "
        "default jobreaper-notify); its offsets remember what was delivered",
    ),
    failing_after: int | None = typer.Option(
        None, "--failing-after", help="Alert when a step's attempt N failed, N >= this (3)"
    ),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
    http_port: int | None = typer.Option(None, help=HTTP_PORT_HELP),
) -> None:
    """POST kill alerts as JSON to a webhook (Slack-compatible `text` + fields).

    The webhook URL is a secret (Slack's carries its token): give it in a file
    (--webhook-file, e.g. a mounted Secret) or in JOBREAPER_NOTIFY_WEBHOOK; logs
    show only its scheme and host.

    Alerts: ForceDeletionForbidden kill events, commands refused with 403
    (forbidden), and steps whose command attempt >= --failing-after failed.
    Retries 5xx and timeouts with capped exponential backoff and honours a 429's
    Retry-After; another 4xx is logged and skipped. An offset is committed only
    after the webhook accepted the alert: at least once, duplicates carry the
    same alert_id.
    """
    if webhook is not None:
        raise fail(
            "--webhook is no longer accepted: a webhook URL is a secret (Slack's carries its "
            "token) and a command line is visible to every user of the machine (ps, /proc) "
            f"and kept in shell history; {WHERE}",
            2,
        )
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "webhook_file": webhook_file,
            "group_id": group_id,
            "failing_after": failing_after,
        }.items()
        if v is not None
    }
    try:
        settings = NotifySettings(**overrides)
    except ValidationError as exc:
        # Never the input: it may hold the URL.
        problem = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise fail(f"invalid settings: {where + ': ' if where else ''}{message}", 2) from None
    # After the check above: a usage error configures nothing (logging included).
    kafka, service = load_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kubeconfig=None,
        http_port=http_port,
    )
    try:
        asyncio.run(serve(Notifier(kafka, settings), service, "notify"))
    except KafkaError as exc:
        raise fail(f"Kafka: {exc}", 1) from exc
