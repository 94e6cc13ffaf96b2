"""The config service's Prometheus metrics (one registry per instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ConfigMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge(
            "jobreaper_config_version",
            "Version of the configuration in force (newest on the topic)",
            registry=registry,
        )
        self.changes = Counter(
            "jobreaper_config_changes_total",
            "Submitted configurations by outcome (published, unchanged, rejected, stale)",
            ["source", "outcome"],
            registry=registry,
        )
        self.source_valid = Gauge(
            "jobreaper_config_source_valid",
            "1 when the source's current content is valid and in force, 0 when it was rejected",
            registry=registry,
        )
        self.validation_errors = Counter(
            "jobreaper_config_validation_errors_total",
            "Problems found in rejected configurations, by kind",
            ["code"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "jobreaper_config_publish_seconds",
            "From a change read to its snapshot committed on the topic",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.leader = Gauge(
            "jobreaper_config_leader",
            "1 while this replica is the writer (holds the Lease and the transactional id)",
            registry=registry,
        )
        self.fenced = Counter(
            "jobreaper_config_writer_lost_total",
            "Times the writer lost its producer (fenced by another replica, or Kafka failed)",
            registry=registry,
        )
        self.writes_checked = Counter(
            "jobreaper_config_api_writes_total",
            "PUT /config requests by the caller check: allowed, unauthenticated (401), "
            "forbidden (403), error (503: the API server could not review them), "
            "unauthenticated-mode (api_auth=none)",
            ["result"],
            registry=registry,
        )
