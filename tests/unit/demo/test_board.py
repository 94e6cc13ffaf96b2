"""The demo's board: which scenario reached its expected end, from the messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devtools.demo.board import Board
from devtools.demo.scenarios import FINISHES, KILL_LATER, NODE_LOST, SCENARIOS
from schemas.commands import CommandApplied
from schemas.events import JobKilled, KillStarted, KillStep, PodEnding

T0 = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
NS = "jobreaper-demo-x"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kill(board: Board, job: str, due: float, steps: list[tuple[str, float]], ended: str) -> None:
    common = {"namespace": NS, "job_name": job, "trigger": "Killed", "reason": "Killed"}
    board.fold(KillStarted(**common, due_at=at(due), decided_at=at(due)), at(due))
    for index, (step, decided) in enumerate(steps):
        board.fold(
            KillStep(
                **common,
                pod_name="p",
                pod_uid="u",
                command_id=f"c{index}",
                step=step,
                rule="ladder.force-delete",
                due_at=at(decided),
                decided_at=at(decided),
            ),
            at(decided),
        )
        board.fold(
            CommandApplied(
                namespace=NS,
                job_name=job,
                command_id=f"c{index}",
                step=step,
                pod_name="p",
                pod_uid="u",
                outcome="applied",
                applied_at=at(decided + 0.2),
            ),
            at(decided + 0.2),
        )
    board.fold(
        JobKilled(
            **common,
            killed_at=at(steps[-1][1] + 1),
            decided_at=at(due),
            pods=(PodEnding(name="p", uid="u", ended=ended),),
        ),
        at(steps[-1][1] + 1),
    )


def test_each_scenario_reaches_its_own_end_only() -> None:
    board = Board(SCENARIOS, NS, T0)
    assert not board.done()
    board.observe_job(FINISHES.job, "Complete", at(12))
    kill(board, "kill-now", 1, [("set-active-deadline", 1.1)], "exited")
    board.rows[KILL_LATER.job].kill_at = at(20)
    kill(board, KILL_LATER.job, 20, [("set-active-deadline", 20.1)], "exited")
    kill(board, NODE_LOST.job, 2, [("set-active-deadline", 2.1), ("delete", 6)], "deleted")
    assert not board.rows[NODE_LOST.job].reached(), "deleted is not force-deleted"
    assert [r.scenario.job for r in board.unreached()] == [NODE_LOST.job]
    assert board.rows["kill-now"].kill_latency_s == 0.3
    assert board.settled()


def test_a_kill_before_its_time_or_of_the_normal_job_fails_early() -> None:
    board = Board(SCENARIOS, NS, T0)
    board.rows[KILL_LATER.job].kill_at = at(20)
    kill(board, KILL_LATER.job, 5, [("set-active-deadline", 5)], "exited")
    kill(board, FINISHES.job, 3, [("set-active-deadline", 3)], "exited")
    assert board.rows[KILL_LATER.job].failed_early() == "a step was decided before the kill time"
    assert board.rows[FINISHES.job].failed_early() == "it was killed"
    assert not board.rows[FINISHES.job].reached()


def test_messages_of_other_namespaces_are_ignored() -> None:
    board = Board(SCENARIOS, NS, T0)
    other = KillStarted(
        namespace="elsewhere",
        job_name="kill-now",
        trigger="Killed",
        reason="Killed",
        due_at=T0,
        decided_at=T0,
    )
    board.fold(other, T0)
    assert board.rows["kill-now"].due_at is None
    assert board.log == []
