"""Capped exponential backoff with jitter, bounded by a total time per command."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.retry import Backoff


@dataclass(frozen=True)
class RetryPolicy(Backoff):
    """The runtime's :class:`Backoff` (``delay(retry)``, retries counted from 1) with
    a budget: a command is given up once its next wait would overrun it."""

    initial_s: float = 0.2
    max_s: float = 5.0
    jitter: float = 0.5
    """A delay is drawn from ``[(1 - jitter) * d, d]``, so replicas do not retry in step."""
    budget_s: float = 60.0
    """Total time a command may take, its calls and waits together."""

    def allows(self, elapsed_s: float, delay_s: float) -> bool:
        """Whether waiting ``delay_s`` more still leaves the command within its budget."""
        return elapsed_s + delay_s < self.budget_s
