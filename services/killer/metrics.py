"""The killer's Prometheus metrics (one registry per instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class KillerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.folded = Counter(
            "jobreaper_killer_events_folded_total",
            "Records folded into state",
            ["topic"],
            registry=registry,
        )
        self.commands = Counter(
            "jobreaper_killer_commands_total",
            "Commands issued",
            ["step", "trigger"],
            registry=registry,
        )
        self.kill_events = Counter(
            "jobreaper_killer_kill_events_total",
            "Public kill events published",
            ["type"],
            registry=registry,
        )
        self.force_held = Counter(
            "jobreaper_killer_force_deletions_held_total",
            "Force deletions held back (ForceDeletionHeld kill events), by what they wait"
            " for: fence (forceDeletePolicy whenFenced, node not fenced), rate-limit,"
            " guard (the mass-disruption guard of the node's zone is tripped), or"
            " volume (a ReadWriteOnce claim on a node not fenced)",
            ["waits_for"],
            registry=registry,
        )
        for waits_for in ("fence", "rate-limit", "guard", "volume"):
            self.force_held.labels(waits_for)  # shown at 0 before the first
        self.guard_tripped = Gauge(
            "jobreaper_killer_force_guard_tripped",
            "1 while the mass-disruption guard of a zone pauses force deletion there"
            " (ForceDeletionPaused, until ForceDeletionResumed; set by the instance that"
            " owns partition 0, which raises them)",
            ["zone"],
            registry=registry,
        )
        self.guard_trips = Counter(
            "jobreaper_killer_force_guard_trips_total",
            "Trippings of the mass-disruption guard (ForceDeletionPaused events)",
            registry=registry,
        )
        self.undecodable = Counter(
            "jobreaper_killer_undecodable_total",
            "Records that are not a message we understand (dead-lettered when live)",
            ["topic"],
            registry=registry,
        )
        self.core_errors = Counter(
            "jobreaper_killer_core_errors_total",
            "Times the pure core raised (evolve: the record is dead-lettered and the "
            "partition rebuilt without it; decide: the partition is rebuilt and held). "
            "The core is total by design: anything here is a bug to report",
            ["function"],
            registry=registry,
        )
        self.clock_offset = Gauge(
            "jobreaper_killer_clock_offset_seconds",
            "The API server's clock minus this host's, as measured (a lower bound: "
            "decisions use this host's clock plus it; 0 when not measured)",
            registry=registry,
        )
        self.decide_lateness = Histogram(
            "jobreaper_killer_decide_lateness_seconds",
            "How late a command was decided after it became due (decided_at - due_at)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 300),
            registry=registry,
        )
        self.decision_overdue = Gauge(
            "jobreaper_killer_decision_overdue_seconds",
            "How long the earliest due decision of the owned partitions has waited "
            "(now - its due instant; 0 when none is due): grows while a partition is "
            "held, stale or rebuilding, or the loop does not decide. Read at scrape time",
            registry=registry,
        )
        self.rebuild_seconds = Histogram(
            "jobreaper_killer_rebuild_seconds",
            "Time from a partition's assignment to its state being caught up, by where it "
            "started (snapshot: loaded one and folded the tail; log: replayed everything)",
            ["start"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "jobreaper_killer_consumer_lag_records",
            "Records between what a partition folded and the high watermark, summed over "
            "its five Job-keyed topic-partitions (sampled at most once a second)",
            ["partition"],
            registry=registry,
        )
        self.snapshots_written = Counter(
            "jobreaper_killer_snapshots_written_total",
            "Partition snapshots written",
            registry=registry,
        )
        self.snapshots_loaded = Counter(
            "jobreaper_killer_snapshots_loaded_total",
            "Partition snapshots loaded at assignment (only the tail replayed)",
            registry=registry,
        )
        self.snapshots_skipped = Counter(
            "jobreaper_killer_snapshots_skipped_total",
            "Snapshot files not used (the partition replayed from the log), by reason: "
            "truncated, checksum, unreadable, incompatible, mismatch, outside-log",
            ["reason"],
            registry=registry,
        )
        self.snapshot_failures = Counter(
            "jobreaper_killer_snapshot_failures_total",
            "Snapshot writes that failed (disk full, permissions...)",
            registry=registry,
        )
        self.snapshot_write_seconds = Histogram(
            "jobreaper_killer_snapshot_write_seconds",
            "Time to pickle, checksum, write and fsync one partition's snapshot",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.snapshot_freeze_seconds = Histogram(
            "jobreaper_killer_snapshot_freeze_seconds",
            "Time a partition waited (records buffered, no decision) while its state was pickled",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.snapshot_bytes = Gauge(
            "jobreaper_killer_snapshot_bytes",
            "Size of the newest snapshot written, per partition",
            ["partition"],
            registry=registry,
        )
        self.partitions = Gauge(
            "jobreaper_killer_partitions", "Partitions owned", ["state"], registry=registry
        )
        self.lag = Gauge(
            "jobreaper_killer_rebuild_records_left",
            "Records left to fold before the owned partitions are caught up",
            registry=registry,
        )
