"""Every metric the shipped alerts and dashboard use (deploy/kubernetes/monitoring/)
is exported by the services: read from the live ``/metrics`` of the watcher, killer
and executor running on the real stack (Kafka, kube-apiserver, kwok), after a Job
was killed down its ladder, so that the kill's own series are there too."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest
from kubernetes_asyncio import client

from services.runtime.http import HealthServer
from tests.e2e.harness import System, rfc3339
from tests.e2e.test_cancel import annotate, create
from tests.e2e.test_ladder import FAST
from tests.monitoring_sources import (
    SCRAPE_LABELS,
    all_uses,
    exposition_families,
    exposition_label_names,
    family,
)

pytestmark = pytest.mark.stack


async def scrape(system: System) -> dict[str, str]:
    """Each running service's /metrics page, served as ``jobreaper <service> run`` does."""
    pages: dict[str, str] = {}
    for service, _ in system._running:
        server = HealthServer("127.0.0.1", 0, service.readiness, registry=service.registry)
        await server.start()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{server.bound_port}/metrics") as answer,
            ):
                assert answer.status == 200
                pages[type(service).__name__] = await answer.text()
        finally:
            await server.stop()
    return pages


async def test_every_metric_an_alert_or_panel_uses_is_on_a_live_metrics_page(
    system: System, kube_api: client.ApiClient, namespace: str
) -> None:
    await system.start(**FAST)
    await create(kube_api, namespace, "doomed")
    await annotate(kube_api, namespace, "doomed", rfc3339(datetime.now(UTC)))
    await system.job_killed("doomed", timeout=60)

    pages = await scrape(system)
    assert set(pages) == {"Watcher", "Killer", "Executor"}
    text = "\n".join(pages.values())
    families = exposition_families(text)
    label_names = exposition_label_names(text)
    uses = all_uses()
    missing = sorted(
        {f"{u.series} ({u.where})" for u in uses if family(u.series, set(families)) is None}
    )
    assert missing == [], "used but on no service's /metrics"

    # Where a series has samples, they carry every label the expressions match on.
    checked = 0
    for use in uses:
        carried = label_names.get(use.series)
        if carried is None:
            continue  # a labelled family with no sample yet (no failure happened)
        wanted = {label for label, _, _ in use.matchers} - SCRAPE_LABELS
        assert wanted <= carried, f"{use.where}: {use.series} carries {carried}, not {wanted}"
        checked += 1
    assert checked >= 20, "the kill left samples of most series"
    # The kill itself is on the pages the panels read.
    assert 'jobreaper_executor_commands_total{outcome="applied",step="fail-job"}' in text
    assert "jobreaper_executor_kill_latency_seconds_bucket{" in text
    assert 'jobreaper_killer_partitions{state="ready"}' in text
    assert "jobreaper_watcher_leader 1.0" in pages["Watcher"]
    assert "jobreaper_killer_decision_overdue_seconds 0.0" in pages["Killer"]
