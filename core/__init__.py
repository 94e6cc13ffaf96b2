"""The pure decision core of the killer: ``evolve`` and ``decide``.

No I/O, no clock reads, imports only :mod:`schemas` and the standard library
(an import-linter contract keeps it so)::

    state = new_state()                   # or GlobalInputs.seed(new_state())
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

Rules -> functions -> tests (the full table, with the assumptions, is in
``docs/core.md``; test ids are ``tests/unit/core/test_rules.py`` cases named
after the rule unless a file is given)::

    kill timestamp / KillRequested  triggers.kill_timestamp       kill-timestamp-*, kill-request-*
    Job activeDeadlineSeconds       triggers.job_deadline         job-deadline-*
    pending timeout (0 disables)    triggers.pending_timeout      pending-timeout-*
    running timeout                 triggers.running_timeout      running-timeout-*
    Job finished/failed, pods left  triggers.job_finished         job-finished-*
    Job suspended, pods left        triggers.job_suspended        suspended-*
    Job deleted (orphans)           triggers.job_deleted          job-deleted-*, orphan-by-label-*
    stuck deletion                  ladder.force_delete           stuck-terminating-*
    trigger selection / latch       decide._fire                  trigger-*
    done check                      ladder.is_done                done-*
    unscheduled -> delete now       ladder.api_delete             ladder-unscheduled-delete-at-once
    activeDeadline, never raised    ladder.active_deadline        ladder-active-deadline-*,
                                                                  test_properties (never raises)
    delete at K + timeout / at once ladder.api_delete             ladder-delete-*, node-lost-*
    force delete, forbidden, 0      ladder.force_delete,          force-*, forbid-*,
                                    ladder.force_forbidden_by     test_properties (never forces)
    config resolution               settings.Resolver.for_gen     config-*, test_api.py
    retry with backoff              ladder.retry_backoff_us       retry-*
    stale / re-created / unknown    evolve._on_pod, _on_job       stale-*, recreated-*, tombstone-*
    JobKilled endings               decide.pod_end                endings-*
    determinism, replay             decide, evolve (own output)   test_properties (pure, replay)
    rebuilt state = continuous one  seed.GlobalInputs             test_seed.py
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
