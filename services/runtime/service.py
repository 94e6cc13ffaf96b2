"""Running a long-lived service: health endpoint, signals, clean shutdown.

A service has ``run()`` (returns when it has stopped), ``stop()`` (asks it
to finish what is in flight and return) and ``readiness()``. SIGTERM and
SIGINT call ``stop()``; a second signal cancels outright.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol

from prometheus_client import CollectorRegistry

from .http import HealthServer
from .logging import get_logger
from .memory import tune_gc
from .settings import ServiceSettings

log = get_logger(__name__)


class Service(Protocol):
    registry: CollectorRegistry

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, str]: ...


async def serve(service: Service, settings: ServiceSettings, name: str) -> None:
    """Run ``service`` with /healthz, /readyz and /metrics until it stops."""
    tune_gc()
    health = HealthServer(
        settings.http_host, settings.http_port, service.readiness, registry=service.registry
    )
    await health.start()
    log.info(f"{name}.started", http=f"{settings.http_host}:{health.bound_port}")
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(service.run())
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        log.info(f"{name}.signal", signal=sig.name, action="stop" if signals == 1 else "cancel")
        if signals == 1:
            service.stop()
        else:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await health.stop()
        log.info(f"{name}.stopped")
