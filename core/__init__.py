"""The pure decision core of the killer: ``evolve`` and ``decide``.

No I/O, no clock reads, imports only :mod:`schemas` and the standard library
(an import-linter contract keeps it so)::

    state = new_state()                   # or GlobalInputs.seed(new_state())
    state = evolve(state, event)          # mutates and returns state
    decision = decide(state, now, config) # -> Decision(commands, kill_events, next_due_at)

``evolve`` folds every observation (``PodObserved``, ``JobObserved``,
``NodeObserved``), ``KillRequested``, ``KillCancelRequested``, ``ConfigSnapshot``,
and the killer's own output folded back (``CommandIssued``, ``CommandApplied``,
``KillStarted``, ``KillStep``, ``ForceDeletionForbidden``, ``ForceDeletionHeld``,
``JobKilled``, ``ForceDeletionPaused``, ``ForceDeletionResumed``), and the
guard's ``ForceResumeRequested``, so re-deciding after
a replay yields nothing new. ``decide`` touches only Job generations that
changed or whose timer is due and returns ``next_due_at`` for the runtime's
timer. See ``docs/core.md`` for the model (generations, episodes, K) and the
assumptions.

Modules: ``triggers`` (when a Job must be killed: the one table of triggers,
``TRIGGERS``, that ``decide`` and ``evolve`` read), ``ladder`` (how a pod is
killed, step by step; fences, ``forceDeletePolicy`` and the force-deletion rate
limit), ``guard`` (the mass-disruption guard), ``fail_job`` (the Job-level
step of a kill), ``decide``, ``evolve``, ``settings`` (configuration and
scope per Job), ``state`` and ``seed``. The rule -> function -> test table,
and the places a new trigger goes, are in ``docs/core.md``.
"""

from __future__ import annotations

from .decide import Decision, KillEvent, command_id, decide, event_id
from .evolve import Event, evolve
from .seed import GlobalInputs
from .state import KillerState, new_state

__all__ = [
    "Decision",
    "Event",
    "GlobalInputs",
    "KillEvent",
    "KillerState",
    "command_id",
    "decide",
    "event_id",
    "evolve",
    "new_state",
]
