"""Rule *job.show-kill*: what a Job shows of its kill, on the Job itself.

``kubectl get job -o yaml`` and ``kubectl describe job`` should say that a kill is
due, running or done without access to Kafka. The Job carries it in annotations
(docs/user-guide.md, "Where to look"): ``jobreaper.io/kill-state`` (``due``,
``killing``, ``killed``, ``cancelled``), ``jobreaper.io/kill-trigger``,
``jobreaper.io/kill-due-at`` and, once killed, ``jobreaper.io/killed-at``.

Which writes, and why so few:

- ``killing`` costs nothing: the ``fail-job`` status write carries the annotations
  (the Job's status subresource keeps metadata changes; checked on the real API
  server by tests/e2e/test_job_kill.py). Only a kill that fails its Job shows
  anything: the ``ENDS_JOB`` triggers (``triggers.ENDS_JOB``).
- ``due`` only for a kill time a user set (rule *kill-timestamp*: the annotation or
  ``jobreaper kill``) that is still in the future: one write when it is set or
  moved. Timeouts are not announced: every Job has a pending timeout by default,
  and announcing it would double the API writes of every Job created.
- ``cancelled`` when a kill shown ``due`` no longer will happen (cancelled, the
  annotation removed, the Job out of scope, finished by itself).
- ``killed`` once every pod of the kill ended (the ``JobKilled`` event): one write.

The step is ``annotate-job``, Job-level like ``fail-job``. It is not retried: a
failed write is reported (result, metric, Event) and the next state writes the
whole set again. Never backwards: ``killed`` is final.

Pure: :func:`wanted` is a function of the generation, its key and the instant;
``decide`` issues the command, ``evolve`` folds it back (``JobGen.shown``).
"""

from __future__ import annotations

from typing import Final

from schemas.commands import KillState, Rule, Step, Trigger

from .state import JobGen, KeyState, Latch, Shown
from .triggers import kill_timestamp

RULE_SHOW: Final[Rule] = "job.show-kill"
SHOW_JOB: Final[Step] = "annotate-job"

KILLING: Final[KillState] = "killing"
KILL_TIMESTAMP: Final[Trigger] = "Killed"
"""The trigger of a user's kill time (rule *kill-timestamp*): the only one shown ``due``."""


def wanted(
    gen: JobGen, key: KeyState, latch: Latch | None, enforcing: bool, now_us: int
) -> Shown | None:
    """What the Job should show now, or None when it should show nothing new.

    ``latch``: the kill latched for the generation (None: none, or out of scope).
    A kill that fails its Job (``gen.fail_cmd`` issued) shows ``killing`` until its
    episode ends (``killed``); a user's kill time in the future shows ``due``; a
    ``due`` that no longer holds turns ``cancelled``."""
    shown = gen.shown
    if shown is not None and shown.state == "killed":
        return None  # final
    if gen.fail_cmd is not None and latch is not None:
        ep = gen.episode
        if ep is not None and not ep.open:
            return Shown("killed", latch.due_us)
        return Shown(KILLING, latch.due_us)
    if enforcing and latch is None and gen.finished_us is None:
        due = kill_timestamp(gen, key)
        if due is not None and due > now_us:
            return Shown("due", due)
    if shown is not None and shown.state == "due":
        return Shown("cancelled", shown.due_us)
    return None
