"""The watcher's Prometheus metrics (one registry per instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.observed = Counter(
            "jobreaper_watcher_observed_total",
            "Watch events and listed objects seen",
            ["kind"],
            registry=registry,
        )
        self.published = Counter(
            "jobreaper_watcher_published_total",
            "Observations acknowledged by Kafka",
            ["kind", "change"],
            registry=registry,
        )
        self.dropped = Counter(
            "jobreaper_watcher_dropped_total",
            "Changes not published: unchanged content (noise) or malformed",
            ["kind", "reason"],
            registry=registry,
        )
        self.relists = Counter(
            "jobreaper_watcher_relists_total",
            "Full lists (start, 410 Gone)",
            ["kind"],
            registry=registry,
        )
        self.expired = Counter(
            "jobreaper_watcher_watch_expired_total",
            "Watches ended by 410 Gone (their resourceVersion is no longer served); "
            "a re-list with synthetic changes follows",
            ["kind"],
            registry=registry,
        )
        self.watch_restarts = Counter(
            "jobreaper_watcher_watch_restarts_total",
            "Watch connections re-opened after a drop",
            ["kind"],
            registry=registry,
        )
        self.publish_retries = Counter(
            "jobreaper_watcher_publish_retries_total",
            "Batches sent again after Kafka refused or timed out",
            registry=registry,
        )
        self.publish_latency = Histogram(
            "jobreaper_watcher_publish_latency_seconds",
            "From receiving a change to Kafka acknowledging its record",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "jobreaper_watcher_queue_depth", "Observations waiting to be sent", registry=registry
        )
        self.invalid_annotations = Counter(
            "jobreaper_watcher_invalid_annotations_total",
            "Invalid jobreaper annotation (or label) values told to their users: Warning "
            "Events created, one per object and value (a value found told already, 409, "
            "is not counted again)",
            ["annotation"],
            registry=registry,
        )
        self.k8s_events = Counter(
            "jobreaper_watcher_k8s_events_total",
            "Kubernetes Events about invalid annotations: created, exists (told before: "
            "a restart, the other replica), failed (logged), dropped (queue full)",
            ["result"],
            registry=registry,
        )
        self.refresh_after = Gauge(
            "jobreaper_watcher_refresh_after_seconds",
            "An object whose newest record is this old is published again (refreshed) "
            "before the topics' retention deletes it; 0: never (no time-based retention)",
            registry=registry,
        )
        self.oldest_record_age = Gauge(
            "jobreaper_watcher_oldest_record_age_seconds",
            "Age of the oldest newest-record of a live object at the last sweep: must stay "
            "well below the topics' retention (alert above ~80 %: objects may expire)",
            registry=registry,
        )
        self.refresh_due = Gauge(
            "jobreaper_watcher_refresh_due",
            "Objects due for a refresh at the last sweep (a backlog that does not shrink: "
            "raise JOBREAPER_WATCHER_REFRESH_RATE)",
            registry=registry,
        )
        self.leader = Gauge(
            "jobreaper_watcher_leader", "1 while this replica holds the Lease", registry=registry
        )
