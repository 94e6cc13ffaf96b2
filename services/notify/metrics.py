"""The notifier's Prometheus metrics (one registry per instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Counter(
            "jobreaper_notify_alerts_total",
            "Alerts handled, by kind and verdict (delivered, rejected: a final 4xx, skipped)",
            ["kind", "verdict"],
            registry=registry,
        )
        self.retries = Counter(
            "jobreaper_notify_retries_total",
            "Webhook answers retried, by reason (status code or error)",
            ["reason"],
            registry=registry,
        )
        self.undecodable = Counter(
            "jobreaper_notify_undecodable_total",
            "Records skipped because they are not a message this build understands",
            registry=registry,
        )
