"""The shipped alerts and dashboard against the services' own metric definitions:
every series they select is a metric a service defines, every label they match or
group by is one of its labels, every matched value is one the service writes; every
alert has a runbook section and a promtool unit test. (promtool checks the rules and
runs those tests in tests/integration/deploy/test_promtool.py; tests/e2e reads the
same metrics from the services' live /metrics.)"""

from __future__ import annotations

import re
import typing
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from schemas.commands import Outcome, Step
from schemas.events import KILL_EVENT_TYPES, ForceDeletionHeld
from services.config.metrics import ConfigMetrics
from services.executor.metrics import ExecutorMetrics
from services.killer.metrics import KillerMetrics
from services.notify.metrics import NotifyMetrics
from services.watcher.metrics import WatcherMetrics
from tests.monitoring_sources import (
    ROOT,
    RULE_TESTS,
    SCRAPE_LABELS,
    Use,
    alerts,
    all_uses,
    dashboard,
    expressions,
    family,
    panels,
    uses,
)

MONITORING_DOC = ROOT / "docs" / "monitoring.md"


def defined() -> dict[str, MetricWrapperBase]:
    """Every metric the services define, by the name /metrics declares (counters with
    ``_total``)."""
    found: dict[str, MetricWrapperBase] = {}
    for metrics in (WatcherMetrics, KillerMetrics, ExecutorMetrics, ConfigMetrics, NotifyMetrics):
        for value in vars(metrics(CollectorRegistry())).values():
            if isinstance(value, MetricWrapperBase):
                name = value._name + ("_total" if value._type == "counter" else "")
                found[name] = value
    return found


#: The values a service writes into a label an alert or panel matches on.
WRITTEN_VALUES: dict[tuple[str, str], set[str]] = {
    ("jobreaper_executor_commands_total", "outcome"): set(typing.get_args(Outcome)),
    ("jobreaper_executor_commands_total", "step"): set(typing.get_args(Step)),
    ("jobreaper_killer_kill_events_total", "type"): {t.__name__ for t in KILL_EVENT_TYPES},
    ("jobreaper_killer_force_deletions_held_total", "waits_for"): set(
        typing.get_args(ForceDeletionHeld.model_fields["waits_for"].annotation)
    ),
    ("jobreaper_killer_partitions", "state"): {"ready", "rebuilding"},  # service._update_gauges
}


def _metric(use: Use) -> MetricWrapperBase:
    metrics = defined()
    name = family(use.series, set(metrics))
    assert name is not None, f"{use.where}: {use.series} is no metric a service defines"
    return metrics[name]


def test_the_sources_are_read_whole() -> None:
    """The reader finds a selector in every expression, and every matcher in it."""
    for where, expr in expressions():
        assert uses(where, expr), f"{where}: no jobreaper_ series in {expr!r}"
    (use,) = uses("x", 'rate(jobreaper_a_total{outcome="failed", step=~"a|b"}[5m])')
    assert use.matchers == (("outcome", "=", "failed"), ("step", "=~", "a|b"))
    with pytest.raises(ValueError, match="cannot read"):
        uses("x", "jobreaper_a{outcome}")


def test_every_series_is_a_metric_a_service_defines() -> None:
    missing = sorted({u.series for u in all_uses() if family(u.series, set(defined())) is None})
    assert missing == []


def test_a_histograms_parts_are_only_used_of_histograms() -> None:
    for use in all_uses():
        metric = _metric(use)
        if use.series.endswith(("_bucket", "_count")) and use.series not in defined():
            assert metric._type == "histogram", use


def test_every_label_matched_or_grouped_by_is_one_the_metric_has() -> None:
    by_expression: dict[str, list[Use]] = {}
    for use in all_uses():
        by_expression.setdefault(use.where, []).append(use)
        labels = set(_metric(use)._labelnames) | SCRAPE_LABELS
        for label, _, _ in use.matchers:
            assert label in labels, f"{use.where}: {use.series} has no label {label!r}"
    for where, found in by_expression.items():
        labels = SCRAPE_LABELS.union(*(_metric(u)._labelnames for u in found))
        grouped = {label for u in found for label in u.grouping}
        assert grouped <= labels, f"{where}: grouped by {grouped - labels}, which no series has"


def test_every_value_matched_is_one_the_service_writes() -> None:
    checked = 0
    for use in all_uses():
        metric = family(use.series, set(defined()))
        for label, op, value in use.matchers:
            if label == "namespace":
                continue
            written = WRITTEN_VALUES.get((str(metric), label))
            assert written is not None, f"{use.where}: add the values of {metric}{{{label}}}"
            wanted = set(value.split("|")) if op in ("=~", "!~") else {value}
            assert wanted <= written, f"{use.where}: {label} {op} {value!r} never matches"
            checked += 1
    assert checked >= 5


def test_every_dashboard_query_is_scoped_to_the_namespace_variable() -> None:
    dash = dashboard()
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(dash):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["description"], f"{panel['title']}: say what it shows"
        for target in panel["targets"]:
            for use in uses(panel["title"], target["expr"]):
                assert ("namespace", "=~", "$namespace") in use.matchers, (panel["title"], use)


def test_the_dashboard_shows_what_the_issue_asks() -> None:
    """Kill latency, steps by outcome, lag, rebuilds."""
    shown = {
        u.series
        for p in panels(dashboard())
        for t in p.get("targets", [])
        for u in uses("", t["expr"])
    }
    assert {
        "jobreaper_executor_kill_latency_seconds_bucket",
        "jobreaper_executor_commands_total",
        "jobreaper_killer_consumer_lag_records",
        "jobreaper_killer_rebuild_seconds_count",
    } <= shown


def _headings() -> set[str]:
    return {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in MONITORING_DOC.read_text().splitlines()
        if line.startswith("#")
    }


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    headings = _headings()
    for rule in alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        path, _, anchor = annotations["runbook"].partition("#")
        assert path == "docs/monitoring.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in headings, f"docs/monitoring.md has no section {rule['alert']}"


def test_every_alert_has_a_promtool_test_that_fires_it() -> None:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
