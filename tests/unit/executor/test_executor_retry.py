"""Capped exponential backoff with a total budget."""

from __future__ import annotations

import random

import pytest

from services.executor.retry import RetryPolicy


def test_delays_double_then_stay_at_the_cap() -> None:
    policy = RetryPolicy(initial_s=0.2, max_s=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert policy.base_delay(10_000) == 5.0


def test_jitter_stays_within_its_band() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=8.0, jitter=0.5)
    rand = random.Random(7)
    for n in range(1, 10):
        base = policy.base_delay(n)
        for _ in range(50):
            assert base * 0.5 <= policy.delay(n, rand) <= base


def test_the_budget_bounds_the_total_wait() -> None:
    policy = RetryPolicy(budget_s=10.0)
    assert policy.allows(4.0, 5.0)
    assert not policy.allows(6.0, 5.0)
    assert not policy.allows(10.0, 0.0)


def test_retries_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().base_delay(0)
