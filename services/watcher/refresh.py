"""When the watcher publishes an unchanged object again, so the log never forgets it.

``k8s.objects`` and ``k8s.nodes`` delete records older than their retention
(``retention.ms``, a week by default). The killer's state is the fold of those
topics, so a Job or pod that does not change for longer than the retention
would vanish from the log while it still exists, and a killer rebuilding after
that would not know it: its kill timestamp or running timeout silently gone.

So the leader re-publishes every live object whose newest record is older than
the *refresh age* (``JOBREAPER_WATCHER_REFRESH_AFTER_S``; by default half the
shorter retention of the two topics, read with DescribeConfigs), as
``change: refreshed``: the same observation again, same ``resource_version``
and ``observed_at``. A killer that folded the original drops the copy as a
duplicate; one that rebuilds after the original expired learns the object
from it. A sweep every refresh age / 10 (at most every 60 s) finds what is
due, oldest first, and publishes it at no more than
``JOBREAPER_WATCHER_REFRESH_RATE`` per second.

This module only plans (pure); :mod:`services.watcher.service` runs the sweeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.runtime.kafka import TopicRetention
from services.runtime.settings import BadSettings

SWEEPS_PER_REFRESH = 10
"""A sweep every refresh age / 10: an object is refreshed at most 10 % late."""
MAX_SWEEP_S = 60.0
MIN_SWEEP_S = 0.2
SETTING = "JOBREAPER_WATCHER_REFRESH_AFTER_S"


class RefreshSettingError(BadSettings):
    """A refresh age that would let records expire before they are refreshed."""


@dataclass(frozen=True)
class RefreshPlan:
    after_s: float | None
    """Refresh an object whose newest record is this old; None: never (no retention)."""
    sweep_s: float
    """How often to look for objects due."""
    rate: float
    """At most this many refreshes per second."""
    retention_s: float | None
    """The shorter time-based retention of the topics (None: none, or unknown)."""
    topic: str | None
    """The topic with that retention."""
    warnings: tuple[str, ...] = ()

    def describe(self) -> dict[str, object]:
        return {
            "refresh_after_s": self.after_s,
            "sweep_s": self.sweep_s,
            "rate": self.rate,
            "retention_s": self.retention_s,
            "topic": self.topic,
        }


def sweep_interval(after_s: float) -> float:
    return min(MAX_SWEEP_S, max(MIN_SWEEP_S, after_s / SWEEPS_PER_REFRESH))


def plan_refresh(
    retentions: Sequence[TopicRetention] | None, after_s: float | None, rate: float
) -> RefreshPlan:
    """The refresh age for these topics' retentions and the setting (None: default).

    ``retentions`` None means they could not be read: the setting is then used as
    given, unchecked (a warning says so). Raises :class:`RefreshSettingError` when
    the setting is not below the shortest retention, or when neither is known.
    """
    warnings: list[str] = []
    if retentions is None:
        if after_s is None:
            raise RefreshSettingError(
                f"the retention of the observation topics could not be read: set {SETTING} "
                "below their retention.ms (or grant DescribeConfigs on them)"
            )
        warnings.append(
            f"{SETTING}={after_s:g}: not checked against the topics' retention (it could not "
            "be read); it must be below it"
        )
        return RefreshPlan(after_s, sweep_interval(after_s), rate, None, None, tuple(warnings))
    for r in retentions:
        if r.deletes_by_size:
            warnings.append(
                f"topic {r.topic} has retention.bytes={r.retention_bytes}: records of any age "
                "may be deleted to keep it under that size, which refreshing cannot prevent; "
                "set it to -1"
            )
        if "compact" in r.cleanup_policy.split(","):
            warnings.append(
                f"topic {r.topic} has cleanup.policy={r.cleanup_policy}: compaction keeps one "
                "record per Job key, not per object; use delete"
            )
    timed = [r for r in retentions if r.deletes_by_time]
    if not timed:
        # Nothing expires by time: no refresh needed, unless asked for.
        sweep = sweep_interval(after_s) if after_s is not None else MAX_SWEEP_S
        return RefreshPlan(after_s, sweep, rate, None, None, tuple(warnings))
    shortest = min(timed, key=lambda r: r.retention_ms)
    retention_s = shortest.retention_ms / 1000
    if after_s is None:
        after_s = retention_s / 2
    elif after_s >= retention_s:
        raise RefreshSettingError(
            f"{SETTING}={after_s:g} is not below the retention of topic {shortest.topic} "
            f"({retention_s:g} s, retention.ms={shortest.retention_ms}): an object that does "
            "not change would expire from the log before it is published again; set it to "
            f"at most half the retention ({retention_s / 2:g}) or leave it unset"
        )
    elif after_s > retention_s / 2:
        warnings.append(
            f"{SETTING}={after_s:g} is more than half the retention of topic {shortest.topic} "
            f"({retention_s:g} s): only {retention_s - after_s:g} s are left for a watcher "
            "outage or a refresh backlog before records expire"
        )
    return RefreshPlan(
        after_s, sweep_interval(after_s), rate, retention_s, shortest.topic, tuple(warnings)
    )
