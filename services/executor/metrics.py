"""The executor's Prometheus metrics (one registry per instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

KILL_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter(
            "jobreaper_executor_commands_total",
            "Commands recorded on kill.results, by step and outcome",
            ["step", "outcome"],
            registry=registry,
        )
        self.writes = Counter(
            "jobreaper_executor_writes_total",
            "Commands whose write the API server accepted (the rest were found done or refused)",
            ["step"],
            registry=registry,
        )
        self.refused = Counter(
            "jobreaper_executor_refused_total",
            "Commands refused with nothing written: invalid-namespace, invalid-pod-name, "
            "invalid-job-name, invalid-command (no API call), not-owned (the pod read is "
            "not the command's Job's), managed-elsewhere (fail-job: the Job's spec.managedBy "
            "names another controller)",
            ["reason"],
            registry=registry,
        )
        self.kill_latency = Histogram(
            "jobreaper_executor_kill_latency_seconds",
            "applied_at - due_at of each command: the kill latency",
            ["step"],
            buckets=KILL_LATENCY_BUCKETS,
            registry=registry,
        )
        # Where kill latency goes (docs/executor.md "Kill latency"): delivery, then
        # waiting for the partition's previous batch, then the API calls.
        self.delivery = Histogram(
            "jobreaper_executor_command_delivery_seconds",
            "From the killer's decision (decided_at) to this executor receiving the command: "
            "the killer's transaction and the Kafka fetch (redeliveries after a restart too)",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "jobreaper_executor_apply_seconds",
            "From starting a command to its deciding answer: its API calls and retries",
            ["step"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "jobreaper_executor_commit_seconds",
            "One batch's Kafka transaction: results, dead letters and the offset",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.api_retries = Counter(
            "jobreaper_executor_api_retries_total",
            "API answers retried (status 0: timeout or connection error)",
            ["step", "status"],
            registry=registry,
        )
        self.duplicates = Counter(
            "jobreaper_executor_duplicates_total",
            "Commands dropped because their id already has a result",
            registry=registry,
        )
        self.deadletters = Counter(
            "jobreaper_executor_deadletters_total",
            "Records of kill.commands sent to the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.transactions = Counter(
            "jobreaper_executor_transactions_total",
            "Kafka transactions (results + offsets), by result",
            ["result"],
            registry=registry,
        )
        self.events = Counter(
            "jobreaper_executor_k8s_events_total",
            "Kubernetes Events: created, exists (redelivered), failed, dropped",
            ["result"],
            registry=registry,
        )
        self.assigned = Gauge(
            "jobreaper_executor_assigned_partitions",
            "Partitions of kill.commands this instance owns",
            registry=registry,
        )
