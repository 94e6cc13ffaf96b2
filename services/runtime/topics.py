"""The topics of the design with their Kafka settings, and prefixing.

All Job-keyed topics have the same partition count, so that with the default
(murmur2) partitioner one Job's observations, requests, commands and results
land on the same partition number everywhere: a killer that owns partition
*p* of ``k8s.objects`` also owns partition *p* of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import topics as t

WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    job_keyed: bool
    compacted: bool = False
    retention_ms: int = WEEK_MS
    extra: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        configs = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(-1 if self.compacted else self.retention_ms),
        }
        configs.update(self.extra)
        return configs


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(t.K8S_OBJECTS, job_keyed=True),
    TopicSpec(t.K8S_NODES, job_keyed=False),
    TopicSpec(t.KILL_REQUESTS, job_keyed=True),
    TopicSpec(t.CONFIG, job_keyed=False, compacted=True),
    TopicSpec(t.KILL_COMMANDS, job_keyed=True),
    TopicSpec(t.KILL_RESULTS, job_keyed=True),
    TopicSpec(t.KILL_EVENTS, job_keyed=True),
    TopicSpec(t.KILL_DECISIONS, job_keyed=True),
    TopicSpec(t.DEADLETTER, job_keyed=False, retention_ms=4 * WEEK_MS),
    TopicSpec(t.FORCE_RESUMES, job_keyed=False, compacted=True),
)


@dataclass(frozen=True)
class TopicNames:
    """Maps a design topic name to its full name under a prefix."""

    prefix: str = "jobreaper."

    def __call__(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def strip(self, full_name: str) -> str:
        """The design name of a full topic name (inverse of calling)."""
        if not full_name.startswith(self.prefix):
            raise ValueError(f"topic {full_name!r} does not start with prefix {self.prefix!r}")
        return full_name[len(self.prefix) :]


def partitions_for(spec: TopicSpec, job_partitions: int) -> int:
    """Job-keyed topics share one partition count; the rest are read whole."""
    return job_partitions if spec.job_keyed else 1
