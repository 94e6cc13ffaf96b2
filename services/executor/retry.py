"""Capped exponential backoff with jitter, bounded by a total time per command."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.2
    max_s: float = 5.0
    budget_s: float = 60.0
    """Total time a command may take, its calls and waits together."""
    jitter: float = 0.5
    """A delay is drawn from ``[(1 - jitter) * d, d]``, so replicas do not retry in step."""

    def base_delay(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1, 2, ...), without jitter."""
        if retry < 1:
            raise ValueError("retries are counted from 1")
        # 2 ** 60 is already far past any cap; avoid float overflow for silly counts.
        return min(self.max_s, self.initial_s * 2.0 ** min(retry - 1, 60))

    def delay(self, retry: int, rand: random.Random | None = None) -> float:
        base = self.base_delay(retry)
        draw: float = (rand or random).random()
        return base * (1 - self.jitter * draw)

    def allows(self, elapsed_s: float, delay_s: float) -> bool:
        """Whether waiting ``delay_s`` more still leaves the command within its budget."""
        return elapsed_s + delay_s < self.budget_s
