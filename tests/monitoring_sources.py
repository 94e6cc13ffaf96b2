"""What the shipped monitoring asks of the services: the metric names and label
names every alert (deploy/kubernetes/monitoring/prometheusrule.yaml) and every
dashboard panel (grafana-dashboard.json) uses, read from their PromQL.

Every series they select is named ``jobreaper_...``, so a small reader of our own
PromQL does: a selector is a ``jobreaper_`` name with an optional ``{...}`` of
matchers; ``by (...)``/``without (...)`` name labels too. A histogram's ``_bucket``,
``_count`` and ``_sum`` series belong to its family (the name /metrics declares in
``# TYPE``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "kubernetes" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE_TESTS = MONITORING / "tests" / "alerts.test.yaml"

_SELECTOR = re.compile(r"\b(jobreaper_[a-z0-9_]+)\b(\s*\{([^}]*)\})?")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"\s*,?")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
#: Labels that Prometheus, not the service, puts on a series (the scrape target's),
#: and ``le``, which a histogram's buckets carry.
SCRAPE_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "container", "le"})


@dataclass(frozen=True)
class Use:
    """One selector in one expression: where it is, the series name, the matchers."""

    where: str
    series: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)
    grouping: tuple[str, ...]  # labels named by by/without in the whole expression


def load_rule(path: Path = RULES) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    """The PrometheusRule's spec.groups: a Prometheus rule file's ``groups``."""
    groups: list[dict[str, Any]] = load_rule(path)["spec"]["groups"]
    return groups


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for group in rule_groups(path) for rule in group["rules"] if "alert" in rule]


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and every dashboard query and variable."""
    exprs = [(f"alert {rule['alert']}", str(rule["expr"])) for rule in alerts()]
    dash = dashboard()
    for panel in panels(dash):
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dash["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append((f"variable {variable['name']}", query["query"]))
    return exprs


def uses(where: str, expr: str) -> list[Use]:
    grouping = tuple(
        label.strip()
        for labels in _GROUPING.findall(expr)
        for label in labels.split(",")
        if label.strip()
    )
    found = []
    for match in _SELECTOR.finditer(expr):
        body = match.group(3) or ""
        matchers = tuple((m.group(1), m.group(2), m.group(3)) for m in _MATCHER.finditer(body))
        leftover = _MATCHER.sub("", body).strip()
        if leftover:
            raise ValueError(f"{where}: cannot read the matchers {body!r}")
        found.append(Use(where, match.group(1), matchers, grouping))
    # label_values(metric, label) names a label outside by/without.
    for metric, label in re.findall(r"label_values\(\s*(jobreaper_\w+)\s*,\s*(\w+)\s*\)", expr):
        found.append(Use(where, metric, (), (label,)))
    return found


def all_uses() -> list[Use]:
    return [use for where, expr in expressions() for use in uses(where, expr)]


def family(series: str, families: set[str]) -> str | None:
    """The metric family ``series`` belongs to among ``families`` (None: unknown)."""
    if series in families:
        return series
    for suffix in _HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in families:
            return series.removesuffix(suffix)
    if series.endswith("_total") and series.removesuffix("_total") in families:
        return series.removesuffix("_total")  # prometheus_client names counters so
    return None


def exposition_families(text: str) -> dict[str, str]:
    """``# TYPE name type`` lines of a /metrics page: name -> type."""
    return {
        parts[2]: parts[3]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and len(parts := line.split()) == 4
    }


def exposition_label_names(text: str) -> dict[str, set[str]]:
    """Series name -> the label names its samples carry, on a /metrics page."""
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, rest = line.partition("{")
        labels = set(re.findall(r"([a-zA-Z_]\w*)=\"", rest.partition("}")[0])) if rest else set()
        names.setdefault(series.split()[0], set()).update(labels)
    return names
