"""The replay walk and the what-if on hand-built histories (no Kafka): a recorder
plays the live killer partition, the walk must re-make its decisions exactly."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from core import Decision, KillerState, decide
from schemas.commands import CommandIssued
from services.replay.history import decode
from services.replay.report import replay, what_if
from services.replay.walk import Window
from tests.unit.core.harness import Builder, at, request, snapshot
from tests.unit.replay.recorder import Recorder

FAST = {"deleteKillingTasksTimeoutSeconds": 3, "forceDeleteTaskTimeoutSeconds": 4}


def _lost_node_kill(rec: Recorder, b: Builder, *, force: int = 4) -> None:
    """A running pod, killed at 10 s; its node is lost at 12 s; the delete leaves it
    terminating (deletionTimestamp 13 s); force deletion follows."""
    rec.put(snapshot(1, **{**FAST, "forceDeleteTaskTimeoutSeconds": force}), at(0))
    rec.put(b.node(0, "n1"), at(0))
    rec.put(b.job(1, ads=None), at(1))
    rec.put(b.pod(1, "p1", "pod-1"), at(1))
    rec.step(at(1))
    rec.put(request(10), at(10))
    rec.step(at(10))  # kill: set the active deadline
    rec.put(b.node(12, "n1", "not-ready"), at(12))
    rec.step(at(12))  # node lost: delete at once
    rec.put(b.pod(13, "p1", "pod-1", deletion=13), at(13))
    rec.step(at(13))
    for t in (15, 16, 17, 18, 20):
        rec.step(at(t))  # timers: the force deletion at 13 + force
    rec.put(b.pod(21, "p1", "pod-1", change="deleted", deletion=13), at(21))
    rec.step(at(21))


def _commands(rec: Recorder) -> list[CommandIssued]:
    return [
        m
        for r in rec.history.stream("kill.commands", 0)
        if isinstance(m := decode(r), CommandIssued)
    ]


def test_a_recorded_history_replays_without_divergence() -> None:
    rec, b = Recorder(), Builder()
    _lost_node_kill(rec, b)
    steps = [c.step for c in _commands(rec)]
    # ... and its Job shown killed once the pod is gone (rule job.show-kill)
    assert steps == ["fail-job", "set-active-deadline", "delete", "force-delete", "annotate-job"]
    report = replay(rec.history)
    assert report.divergences == []
    assert report.total("decisions") == rec.decisions >= 4
    assert report.total("commands") == 5
    assert report.total("events") > 0


def test_a_changed_rule_is_reported_at_its_first_differing_event() -> None:
    rec, b = Recorder(), Builder()
    _lost_node_kill(rec, b)
    changed = snapshot(1, **{**FAST, "forceDeleteTaskTimeoutSeconds": 2})

    def changed_decide(state: KillerState, now: datetime) -> Decision:
        return decide(state, now, changed)

    report = replay(rec.history, decide_fn=changed_decide)
    first = report.divergences[0]
    force = _commands(rec)[3]
    assert (first.kind, first.expected_id, first.decided_at) == (
        "command",
        force.command_id,
        force.decided_at,
    )
    assert first.problem == "same id, different bytes"
    assert first.got is not None and first.expected is not None
    assert '"due_at":"2026-01-01T00:00:15Z"' in first.got
    assert '"due_at":"2026-01-01T00:00:17Z"' in first.expected
    # The last input folded before it: the pod's deletion timestamp.
    assert first.last_input is not None and first.last_input.startswith("k8s.objects/0@")


def test_window_compares_only_decisions_inside_but_folds_everything_before() -> None:
    rec, b = Recorder(), Builder()
    _lost_node_kill(rec, b)
    later = replay(rec.history, window=Window(start=at(13)))
    assert later.divergences == []
    assert 0 < later.total("decisions") < rec.decisions
    assert later.total("commands") == 2  # the force deletion, the Job shown killed
    nothing = replay(rec.history, window=Window(end=at(0)))
    assert nothing.total("decisions") == 0


def test_undecodable_records_are_skipped_as_the_killer_skips_them() -> None:
    rec, b = Recorder(), Builder()
    rec.put_garbage("k8s.objects", at(0))
    _lost_node_kill(rec, b)
    report = replay(rec.history)
    assert report.divergences == []
    assert report.total("undecodable") == 1


def _rebuilt_while_node_lost(rec: Recorder, b: Builder) -> None:
    """The kill starts at 10 s with a 60 s delete timeout. The node goes NotReady
    (observed at 12 s) while the killer is down; a resync observes it again at
    20 s; the killer restarts at 22 s."""
    rec.put(snapshot(1, deleteKillingTasksTimeoutSeconds=60), at(0))
    rec.put(b.node(0, "n1"), at(0))
    rec.put(b.job(1), at(1))
    rec.put(b.pod(1, "p1", "pod-1"), at(1))
    rec.put(request(10), at(10))
    rec.step(at(10))
    rec.put(b.node(12, "n1", "not-ready"), at(12))  # the killer is down: no step
    rec.put(b.node(20, "n1", "not-ready"), at(20))
    rec.crash_and_rebuild()
    rec.step(at(22))


def test_a_rebuild_replays_exactly_because_the_decision_records_name_the_state() -> None:
    rec, b = Recorder(), Builder()
    _rebuilt_while_node_lost(rec, b)
    delete = _commands(rec)[-1]
    assert delete.step == "delete"
    assert delete.due_at == at(12), "the rebuilt state dates the node loss from its start"
    report = replay(rec.history)
    assert report.divergences == []
    assert report.total("commands") == 3  # fail-job, set-active-deadline, delete
    assert report.partitions[0].states == 2


def test_a_rebuilt_state_decides_what_a_continuous_state_decides() -> None:
    """Without the state in the records the replay folds one continuous state, which
    sees the node's whole history; the rebuilt killer saw only what it remembers of
    the node topic (``GlobalInputs``): the loss's first observation and the newest.
    Before the memory kept the first, the rebuilt killer dated the loss from 20 s
    and this replay diverged at the delete."""
    rec, b = Recorder(record_states=False), Builder()
    _rebuilt_while_node_lost(rec, b)
    report = replay(rec.history)
    assert report.partitions[0].states == 1
    assert report.divergences == []
    assert report.total("commands") == 3  # fail-job, set-active-deadline, delete


def test_a_new_killer_instance_is_a_new_state() -> None:
    rec, b = Recorder(killer="k-1"), Builder()
    rec.put(snapshot(1, **FAST), at(0))
    rec.put(b.node(0, "n1"), at(0))
    rec.put(b.job(1), at(1))
    rec.put(b.pod(1, "p1", "pod-1"), at(1))
    rec.put(request(10), at(10))
    rec.step(at(10))
    rec.killer = "k-2"  # another instance takes the partition over
    rec.crash_and_rebuild()
    rec.step(at(13))  # the delete after the 3 s timeout
    report = replay(rec.history)
    assert report.divergences == []
    assert report.partitions[0].states == 2
    assert report.total("commands") == 3  # fail-job, set-active-deadline, delete


def test_what_if_with_a_lower_force_timeout_force_deletes_earlier() -> None:
    rec, b = Recorder(), Builder()
    _lost_node_kill(rec, b, force=4)
    result = what_if(rec.history, snapshot(2, **{**FAST, "forceDeleteTaskTimeoutSeconds": 1}))
    steps = {c.step: c for c in result.steps}
    assert steps["force-delete"].recorded == at(17)
    assert steps["force-delete"].what_if == at(14)  # decided at its own timer
    assert steps["delete"].delta_s == 0
    (ns,) = result.namespaces
    assert ns.force_deletions.earlier == [3.0]
    assert ns.commands.added == ns.commands.removed == 0
    assert result.timers >= 1


def test_what_if_with_force_deletion_disabled_avoids_it() -> None:
    rec, b = Recorder(), Builder()
    _lost_node_kill(rec, b, force=4)
    result = what_if(rec.history, snapshot(2, **{**FAST, "forceDeleteTaskTimeoutSeconds": 0}))
    (ns,) = result.namespaces
    assert ns.force_deletions.removed == 1
    assert ns.kills.same == 1


def test_what_if_with_the_same_config_changes_nothing() -> None:
    rec, b = Recorder(), Builder()
    _lost_node_kill(rec, b, force=4)
    result = what_if(rec.history, snapshot(2, **FAST))
    (ns,) = result.namespaces
    assert ns.commands.same == 5  # fail-job, the three rungs, the Job shown killed
    assert ns.commands.added == ns.commands.removed == 0
    assert timedelta(0) == max(
        abs(c.what_if - c.recorded) for c in result.steps if c.what_if and c.recorded
    )


def test_a_decision_is_compared_with_the_record_it_wrote_not_an_older_one_with_its_id() -> None:
    from services.replay.history import Rec
    from services.replay.walk import _written_by

    older, own = (Rec("kill.commands", 0, n, 0, b"{}", [("ce_id", b"x")]) for n in (3, 9))
    assert _written_by([older, own], position=7) is own  # its outputs follow its inputs
    assert _written_by([older, own], position=2) is older
    assert _written_by(None, position=0) is None


def _big_kill(rec: Recorder, b: Builder, pods: int) -> None:
    """A Job of ``pods`` pods killed at 10 s (one active-deadline command each),
    deleted at 13 s (one delete each), gone at 14 s: decisions of 2 x ``pods`` + a
    few ids, written in parts."""
    rec.put(snapshot(1, **FAST), at(0))
    rec.put(b.job(1, ads=None), at(1))
    for i in range(pods):
        rec.put(b.pod(1, f"p{i:05d}", f"pod-{i}"), at(1))
    rec.step(at(1))
    rec.put(request(10), at(10))
    rec.step(at(10))
    rec.step(at(13))
    for i in range(pods):
        rec.put(b.pod(14, f"p{i:05d}", f"pod-{i}", change="deleted"), at(14))
    rec.step(at(14))


@functools.cache
def _big_recorded() -> Recorder:
    """One recording shared by the tests below (it takes seconds); they copy what
    they change."""
    rec = Recorder()
    _big_kill(rec, Builder(), 6_000)
    return rec


def test_a_decision_written_in_parts_replays_as_one_decision() -> None:
    from schemas.decisions import DecisionRecorded
    from schemas.events import JobKilled, KillStarted

    rec = _big_recorded()
    records = [decode(r) for r in rec.history.stream("kill.decisions", 0)]
    assert all(isinstance(r, DecisionRecorded) for r in records)
    # 6,000 commands + 6,000 steps + 6 KillStarted parts: 12,006 ids, two records each
    assert [(r.part, r.parts) for r in records] == [(1, 2), (2, 2), (1, 2), (2, 2), (1, 1)]
    events = [decode(r) for r in rec.history.stream("kill.events", 0)]
    assert sum(isinstance(e, KillStarted) for e in events) == 6
    assert sum(isinstance(e, JobKilled) for e in events) == 6
    report = replay(rec.history)
    assert report.divergences == []
    assert report.total("decisions") == rec.decisions == 3
    assert report.total("commands") == 12_002  # and one fail-job, one annotate-job
    assert report.total("events") == 12_012
    result = what_if(rec.history, snapshot(2, **FAST))
    (ns,) = result.namespaces
    assert ns.commands.same == 12_001 and ns.commands.added == ns.commands.removed == 0


def test_a_decision_with_a_part_missing_is_reported() -> None:
    from services.replay.history import History

    history = History(
        {key: list(stream) for key, stream in _big_recorded().history.streams.items()}
    )
    del history.streams[("kill.decisions", 0)][1]  # part 2 of the kill's decision
    report = replay(history)
    first = report.divergences[0]
    assert (first.kind, first.decision) == ("decision", "kill.decisions/0@0")
    assert "incomplete (parts 1 of 2)" in first.problem
    # the ids of the missing part: the replay decided them, the record does not say
    assert {d.problem for d in report.divergences[1:]} == {
        "the replay decided a event the killer did not"
    }
    assert report.total("decisions") == 3
