"""Rule *job.failure-target*: the Job-level step ``fail-job``.

When a Job must die by jobreaper's own decision, the pods are not enough: the
Job controller replaces every pod we kill (``backoffLimit`` > 0) and the Job
ends, if ever, ``Failed/BackoffLimitExceeded``. So the kill also issues ONE
``fail-job`` command per Job generation: the executor writes a ``FailureTarget``
condition on the Job, and the Job controller stops creating pods, deletes the
active ones and writes ``Failed`` with our reason (docs/design/job-level-kill.md).
The per-pod ladder still runs: it is what removes a pod that does not die.

Pure: a function of the generation, its latched trigger and the command
record. ``decide`` turns a due step into a command; ``evolve`` folds the
command and its result back into ``JobGen.fail_cmd``.
"""

from __future__ import annotations

from typing import Final

from schemas.commands import Rule, Step

from .state import FAILED_RETRY, JobGen, Latch

RULE_FAILURE_TARGET: Final[Rule] = "job.failure-target"
FAIL_JOB: Final[Step] = "fail-job"


def fail_job_due(gen: JobGen, latch: Latch, ends_job: bool) -> tuple[int, int] | None:
    """``(attempt, due_us)`` of the ``fail-job`` step to issue for ``gen``, or None.

    Only for a trigger that ends the Job (``ends_job``: its row in
    ``triggers.TRIGGERS`` says so), on a Job seen live with a uid (the step's
    precondition), whose end is not decided yet: a ``FailureTarget``, ``Failed``,
    ``SuccessCriteriaMet`` or ``Complete`` condition already there is the Job's own
    end, and writing over it would replace the controller's reason. Once (attempt
    1, at the trigger's due time); after a ``failed``/``forbidden`` result again
    (attempt + 1) after its backoff; never after ``applied``, ``gone``,
    ``uid-mismatch`` or ``refused``."""
    if not ends_job or not gen.uid or not gen.observed or gen.deleted_us is not None:
        return None
    if gen.finished_us is not None:
        return None
    rec = gen.fail_cmd
    if rec is None:
        return (1, latch.due_us)
    if rec.status == FAILED_RETRY:
        return (rec.attempt + 1, max(latch.due_us, rec.retry_us))
    return None
