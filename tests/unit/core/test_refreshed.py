"""``refreshed`` observations (the watcher publishing an unchanged object again before
the topics' retention deletes its record): a duplicate for a state that folded the
original, and enough for a state rebuilt after the original expired."""

from __future__ import annotations

from core.evolve import fold_node
from core.state import NodeState
from schemas.observations import JobObserved, NodeObserved, PodObserved

from .harness import Harness, at, cmd_tuple, iso

Observation = JobObserved | PodObserved | NodeObserved


def refreshed(obs: Observation) -> Observation:
    return obs.model_copy(update={"change": "refreshed"})


def history(h: Harness) -> list[Observation]:
    """Two Jobs whose objects never change: one with a kill timestamp at 300 s, one
    whose pod gets a running timeout of 200 s from its container start (5 s)."""
    b = h.b
    return [
        b.node(0, "n1"),
        b.job(0, "timed", "job-t", annotations={"jobreaper.io/kill-timestamp": iso(300)}),
        b.pod(1, "timed-a", job="timed", job_uid="job-t"),
        b.job(0, "slow", "job-s", annotations={"jobreaper.io/running-timeout-seconds": "200"}),
        b.pod(1, "slow-a", job="slow", job_uid="job-s", start=5),
    ]


def test_a_refreshed_copy_changes_nothing_in_a_state_that_folded_the_original() -> None:
    h = Harness()
    originals = history(h)
    h.feed(*originals)
    first = h.decide(10)
    # The future kill is shown on its Job (rule job.show-kill), once.
    assert [(c.step, c.kill_state) for c in first.commands] == [("annotate-job", "due")]
    assert first.next_due_at == at(205)
    h.feed(*(refreshed(o) for o in originals))
    assert not h.state.dirty, "a duplicate marks nothing for decide"
    again = h.decide(150)
    assert again.commands == () and again.kill_events == ()
    assert again.next_due_at == at(205)
    for o in originals:
        if isinstance(o, NodeObserved):
            node = NodeState()
            assert fold_node(node, o) is not None
            assert fold_node(node, refreshed(o)) is None, "the same resource version is stale"


def test_a_state_rebuilt_from_refreshed_copies_only_decides_what_the_continuous_one_did() -> None:
    continuous = Harness()
    originals = history(continuous)
    continuous.feed(*originals)
    (shown,) = continuous.decide(10).commands  # the kill shown due on its Job
    # Refreshed at 100 s (the originals' records getting old), then the originals expire.
    copies = [refreshed(o) for o in originals]
    continuous.feed(*copies)
    rebuilt = Harness()
    rebuilt.feed(*copies)
    assert continuous.decide(120).commands == ()
    # Its own commands expired too: the rebuilt state tells the Job again what it
    # shows, under the same id (the executor writes the same values), and no more.
    (again,) = rebuilt.decide(120).commands
    assert (again.command_id, again.kill_state, again.kill_due_at) == (
        shown.command_id,
        shown.kill_state,
        shown.kill_due_at,
    )
    assert continuous.decide(204.9).commands == ()
    assert rebuilt.decide(204.9).commands == (), "nothing early after a rebuild"
    for t in (205, 299.9, 300, 301):
        a, b = continuous.decide(t), rebuilt.decide(t)
        assert [c.model_dump() for c in a.commands] == [c.model_dump() for c in b.commands]
        assert [e.model_dump() for e in a.kill_events] == [e.model_dump() for e in b.kill_events]
    steps = [cmd_tuple(c) for c in rebuilt.commands]
    assert ("set-active-deadline", "slow-a", "ladder.active-deadline", 205.0) in steps
    assert ("set-active-deadline", "timed-a", "ladder.active-deadline", 300.0) in steps


def test_after_its_own_output_expired_a_rebuilt_state_redoes_only_what_is_left() -> None:
    """The killer's commands, results and kill events expire too. A state rebuilt
    from refreshed observations alone re-decides a kill whose pods are still there,
    with the same command ids (the executor finds the effect already there), and
    says nothing about a kill whose pods are done."""
    continuous = Harness()
    b = continuous.b
    kill = {"jobreaper.io/kill-timestamp": iso(100)}
    done_job = b.job(0, "done", "job-d", annotations=kill)
    stuck_job = b.job(0, "stuck", "job-s", annotations=kill)
    continuous.feed(
        b.node(0, "n1"),
        done_job,
        b.pod(1, "done-a", job="done", job_uid="job-d"),
        stuck_job,
        b.pod(1, "stuck-a", job="stuck", job_uid="job-s", annotations=None),
    )
    killing = continuous.decide(100)
    assert [(c.job_name, c.step) for c in killing.commands if c.step == "fail-job"] == [
        ("done", "fail-job"),
        ("stuck", "fail-job"),
    ]
    continuous.result(101, "done-a", "set-active-deadline")
    continuous.result(101, "stuck-a", "set-active-deadline")
    # fail-job wrote FailureTarget on both Jobs: the watcher sees it.
    failure = [("FailureTarget", "True", "JobReaperKilled", 100.5)]
    done_job = b.job(100.5, "done", "job-d", annotations=kill, conditions=failure, active=0)
    stuck_job = b.job(100.5, "stuck", "job-s", annotations=kill, conditions=failure)
    continuous.feed(done_job, stuck_job)
    # done-a stops; stuck-a ignores its deadline, is deleted later and hangs.
    done_pod = b.pod(
        102, "done-a", job="done", job_uid="job-d", phase="Failed", containers="terminated"
    )
    continuous.feed(done_pod)
    continuous.decide(102)
    first = continuous.decide(100 + 180)  # delete after deleteKillingTasksTimeoutSeconds
    assert [c.step for c in first.commands] == ["delete"]
    continuous.result(281, "stuck-a", "delete")
    stuck_pod = b.pod(281, "stuck-a", job="stuck", job_uid="job-s", deletion=281)
    continuous.feed(stuck_pod)
    later = continuous.decide(281 + 900)  # forceDeleteTaskTimeoutSeconds after deletion
    (force,) = later.commands
    assert force.step == "force-delete"

    # A week on: only the refreshed observations are left (the Jobs and pods never
    # changed again); the killer's own records, and the pod's, expired.
    week = 7 * 24 * 3600
    rebuilt = Harness()
    rebuilt.feed(
        *(refreshed(o) for o in (b.node(0, "n1"), done_job, done_pod, stuck_job, stuck_pod))
    )
    again = rebuilt.decide(week)
    assert [(c.pod_name, c.step, c.command_id) for c in again.commands] == [
        ("stuck-a", "force-delete", force.command_id)
    ], "only the stuck pod, with the same command id"
    started = [e for e in again.kill_events if type(e).__name__ == "KillStarted"]
    assert [e.job_name for e in started] == ["stuck"], (
        "a kill with nothing left is not re-announced"
    )
