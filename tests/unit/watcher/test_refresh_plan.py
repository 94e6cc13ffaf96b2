"""The refresh age: half the shorter retention by default; a setting must be below it."""

from __future__ import annotations

import pytest

from services.runtime.kafka import TopicRetention
from services.watcher.refresh import RefreshSettingError, plan_refresh

WEEK_MS = 7 * 24 * 3600 * 1000


def topic(name: str, ms: int, *, size: int = -1, policy: str = "delete") -> TopicRetention:
    return TopicRetention(name, retention_ms=ms, retention_bytes=size, cleanup_policy=policy)


def test_the_default_is_half_the_shorter_retention_with_ten_sweeps_per_refresh() -> None:
    plan = plan_refresh([topic("o", WEEK_MS), topic("n", 20_000)], None, 200)
    assert (plan.after_s, plan.retention_s, plan.topic) == (10.0, 20.0, "n")
    assert plan.sweep_s == 1.0
    assert plan.warnings == ()
    week = plan_refresh([topic("o", WEEK_MS), topic("n", WEEK_MS)], None, 200)
    assert week.after_s == 3.5 * 24 * 3600
    assert week.sweep_s == 60.0, "a sweep at least every minute"


def test_a_setting_is_used_below_the_retention_and_refused_at_or_above_it() -> None:
    assert plan_refresh([topic("o", 20_000)], 5, 200).after_s == 5
    (warning,) = plan_refresh([topic("o", 20_000)], 15, 200).warnings
    assert "more than half the retention" in warning
    for bad in (20, 25):
        with pytest.raises(RefreshSettingError, match="is not below the retention of topic o"):
            plan_refresh([topic("o", 20_000), topic("n", WEEK_MS)], bad, 200)


def test_no_refresh_when_nothing_expires_by_time_unless_asked() -> None:
    forever = [topic("o", -1), topic("n", WEEK_MS, policy="compact")]
    assert plan_refresh(forever, None, 200).after_s is None
    assert plan_refresh(forever, 30, 200).after_s == 30


def test_size_retention_and_compaction_are_warned_about() -> None:
    plan = plan_refresh(
        [topic("o", WEEK_MS, size=1 << 30), topic("n", WEEK_MS, policy="compact,delete")],
        None,
        200,
    )
    assert plan.after_s == 3.5 * 24 * 3600
    assert any("retention.bytes=1073741824" in w for w in plan.warnings)
    assert any("cleanup.policy=compact,delete" in w for w in plan.warnings)


def test_an_unknown_retention_needs_the_setting() -> None:
    with pytest.raises(RefreshSettingError, match="JOBREAPER_WATCHER_REFRESH_AFTER_S"):
        plan_refresh(None, None, 200)
    plan = plan_refresh(None, 3600, 200)
    assert plan.after_s == 3600
    assert "not checked" in plan.warnings[0]
