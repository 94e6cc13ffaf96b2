"""What every service's ``run`` command shares: settings from the
environment with command-line overrides, logging, one-line fatal errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import typer
from kubernetes_asyncio import client

from .kube import KubeConfigError, PermissionDenied, load_api_client
from .logging import configure_logging
from .service import Service, serve
from .settings import BadSettings, KafkaSettings, ServiceSettings


def load_settings(
    *,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    kubeconfig: str | None,
    http_port: int | None,
) -> tuple[KafkaSettings, ServiceSettings]:
    kafka_overrides = {
        k: v
        for k, v in {"bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix}.items()
        if v is not None
    }
    service_overrides = {
        k: v for k, v in {"kubeconfig": kubeconfig, "http_port": http_port}.items() if v is not None
    }
    kafka = KafkaSettings(**kafka_overrides)  # type: ignore[arg-type]
    service = ServiceSettings(**service_overrides)  # type: ignore[arg-type]
    configure_logging(service.log_level, service.log_format)
    return kafka, service


def run_service(
    name: str,
    service_settings: ServiceSettings,
    make: Callable[[client.ApiClient], Service],
) -> None:
    """Run a service that talks to Kubernetes until it stops; bad credentials or
    settings and missing permissions end the process with a one-line reason (exit 2
    and 3)."""

    async def main() -> None:
        api = await load_api_client(service_settings.kubeconfig)
        try:
            await serve(make(api), service_settings, name)
        finally:
            await api.close()

    try:
        asyncio.run(main())
    except KubeConfigError as exc:
        raise fail(str(exc), 2) from exc
    except PermissionDenied as exc:
        raise fail(str(exc), 3) from exc
    except BadSettings as exc:
        raise fail(str(exc), 2) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"jobreaper: {message}", err=True)
    return typer.Exit(code)


KUBECONFIG_HELP = "Kubeconfig path (env: JOBREAPER_KUBECONFIG; unset: in-cluster)"
BOOTSTRAP_HELP = "Kafka bootstrap servers (env: JOBREAPER_KAFKA_BOOTSTRAP)"
PREFIX_HELP = "Topic prefix (env: JOBREAPER_KAFKA_TOPIC_PREFIX, default 'jobreaper.')"
HTTP_PORT_HELP = "Port of /healthz, /readyz, /metrics (env: JOBREAPER_HTTP_PORT, default 8080)"

__all__ = ["KubeConfigError", "fail", "load_settings"]
