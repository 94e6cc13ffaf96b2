"""The pure decision core of the killer: ``evolve`` and ``decide``.

No I/O, no clock reads, imports only :mod:`schemas` and the standard library
(an import-linter contract keeps it so)::

    state = new_state()
    state = evolve(state, event)          # mutates and returns state
    decision = decide(state, now, config) # -> Decision(commands, kill_events, next_due_at)

``evolve`` folds every observation (``PodObserved``, ``JobObserved``,
``NodeObserved``), ``KillRequested``, ``ConfigSnapshot``, and the killer's own
output folded back (``CommandIssued``, ``CommandApplied``, ``KillStarted``,
``KillStep``, ``ForceDeletionForbidden``, ``JobKilled``), so re-deciding after
a replay yields nothing new. ``decide`` touches only Job generations that
changed or whose timer is due and returns ``next_due_at`` for the runtime's
timer. See ``docs/core.md`` for the model (generations, episodes, K) and the
assumptions.

Rules -> functions -> tests: see the table below (RULES_TABLE).
"""

from __future__ import annotations

from .decide import Decision, KillEvent, command_id, decide
from .evolve import Event, evolve
from .state import KillerState, new_state

__all__ = [
    "Decision",
    "Event",
    "KillEvent",
    "KillerState",
    "command_id",
    "decide",
    "evolve",
    "new_state",
]
