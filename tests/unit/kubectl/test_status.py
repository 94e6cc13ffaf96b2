"""``kubectl jobreaper status`` from the Job's, pods' and Events' JSON: the summary
for each kill state (and without any), the inputs and outputs apart, jobreaper's
condition and Events picked out, and a Job with fields missing read as absent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.kubectl.status import as_json, kill_status, render

NOW = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)


def job(annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "batch",
            "name": "nightly",
            "uid": "u1",
            "annotations": annotations or {},
            "labels": {"jobreaper.io/enforce": "shadow"},
        },
        "status": status,
    }


KILLED = {
    "jobreaper.io/kill-timestamp": "2026-12-06T17:00:00Z",
    "jobreaper.io/kill-state": "killed",
    "jobreaper.io/kill-trigger": "Killed",
    "jobreaper.io/kill-due-at": "2026-12-06T17:00:00Z",
    "jobreaper.io/killed-at": "2026-12-06T17:00:09Z",
    "other/annotation": "x",
}
FAILED = {
    "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "JobReaperKilled", "message": "m"},
        {"type": "Failed", "status": "True", "reason": "JobReaperKilled", "message": "m"},
        {"type": "SuccessCriteriaMet", "status": "False", "reason": "Other"},
    ]
}
EVENTS = [
    {
        "reason": "JobreaperDeleted",
        "type": "Normal",
        "reportingComponent": "jobreaper.io/executor",
        "message": "delete applied",
        "eventTime": "2026-12-06T17:00:03.000000Z",
    },
    {
        "reason": "SuccessfulCreate",
        "type": "Normal",
        "source": {"component": "job-controller"},
        "message": "Created pod",
        "lastTimestamp": "2026-12-06T16:00:00Z",
        "count": 2,
    },
]


def test_a_killed_job_shows_when_and_why_and_only_jobreapers_share() -> None:
    seen = kill_status(job(KILLED, **FAILED), [], EVENTS)
    assert seen.summary(NOW) == "killed (Killed) at 2026-12-06T17:00:09Z"
    assert seen.started
    assert seen.inputs == {"jobreaper.io/kill-timestamp": "2026-12-06T17:00:00Z"}
    assert set(seen.outputs) == {
        "jobreaper.io/kill-state",
        "jobreaper.io/kill-trigger",
        "jobreaper.io/kill-due-at",
        "jobreaper.io/killed-at",
    }
    text = "\n".join(render(seen, NOW))
    assert "FailureTarget=True JobReaperKilled" in text and "Failed=True JobReaperKilled" in text
    assert "SuccessCriteriaMet" not in text, "only jobreaper's conditions"
    assert "JobreaperDeleted" in text and "SuccessfulCreate" not in text
    assert "SuccessfulCreate (x2)" in "\n".join(render(seen, NOW, all_events=True))
    assert "label jobreaper.io/enforce=shadow" in text


def test_each_kill_state_has_its_summary() -> None:
    def summary(annotations: dict[str, str], **status: Any) -> str:
        return kill_status(job(annotations, **status), [], []).summary(NOW)

    assert (
        summary(
            {"jobreaper.io/kill-state": "due", "jobreaper.io/kill-due-at": "2026-12-06T18:05:00Z"}
        )
        == "kill due at 2026-12-06T18:05:00Z (in 300 s)"
    )
    assert summary(
        {"jobreaper.io/kill-state": "killing", "jobreaper.io/kill-trigger": "Killed"}
    ) == ("being killed (Killed): the kill started (final)")
    assert summary({"jobreaper.io/kill-state": "cancelled"}) == "a kill that was due was cancelled"
    # The outputs absent (a jobreaper that does not write them): read from the inputs.
    assert summary({"jobreaper.io/kill-timestamp": "2026-12-06T18:01:00Z"}) == (
        "kill time set: 2026-12-06T18:01:00Z (in 60 s) (jobreaper has not shown it on the Job yet)"
    )
    assert summary({}, **FAILED) == "killed by jobreaper (see the condition)"
    assert summary({}, conditions=[{"type": "Complete", "status": "True"}]) == (
        "finished (Complete) without a kill by jobreaper"
    )
    assert summary({}) == "no kill time set (timeouts, if any, kill without notice)"


def test_invalid_inputs_are_said_ignored() -> None:
    seen = kill_status(job({"jobreaper.io/kill-timestamp": "tomorrow"}), [], [])
    assert seen.kill_at is None
    assert any(
        "invalid, ignored: jobreaper.io/kill-timestamp" in line for line in render(seen, NOW)
    )


def test_pods_show_how_far_down_the_ladder_they_are() -> None:
    pods = [
        {
            "metadata": {"name": "nightly-b", "deletionTimestamp": "2026-12-06T17:00:03Z"},
            "spec": {"nodeName": "n1", "activeDeadlineSeconds": 5},
            "status": {"phase": "Running"},
        },
        {"metadata": {"name": "nightly-a"}, "spec": {}, "status": {"phase": "Failed"}},
    ]
    lines = render(kill_status(job(), pods, []), NOW)
    start = lines.index("Pods:")
    assert lines[start + 1 : start + 3] == [
        "  nightly-a  Failed  node -",
        "  nightly-b  Running  node n1  deleting since 2026-12-06T17:00:03Z"
        "  activeDeadlineSeconds 5",
    ]


def test_json_has_everything_the_text_has() -> None:
    doc = as_json(kill_status(job(KILLED, **FAILED), [], EVENTS), NOW)
    assert doc["summary"].startswith("killed") and doc["started"] is True
    assert doc["outputs"]["jobreaper.io/kill-state"] == "killed"
    assert [e["from_jobreaper"] for e in doc["events"]] == [False, True]  # oldest first


def test_a_job_with_nothing_filled_in_reads_as_no_kill() -> None:
    seen = kill_status({}, [{}], [{}])
    assert seen.summary(NOW).startswith("no kill time set")
    render(seen, NOW)


def test_the_annotations_read_are_the_ones_jobreaper_writes() -> None:
    """The plugin does not import the executor (it ships to users without it): its
    names and final states must agree with what the executor writes."""
    import typing

    from schemas.commands import KillState
    from services.executor import job as executor_job
    from services.kubectl import status

    assert (status.KILL_STATE, status.KILL_TRIGGER, status.KILL_DUE_AT, status.KILLED_AT) == (
        executor_job.KILL_STATE,
        executor_job.KILL_TRIGGER,
        executor_job.KILL_DUE_AT,
        executor_job.KILLED_AT,
    )
    assert status.FINAL_STATES == {"killing", "killed"} < set(typing.get_args(KillState))
