"""``fail-job``: the Job-level step (a ``FailureTarget`` on the Job's status)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from services.executor.apply import Answer, Result, classify, invalid_names
from services.executor.events import event_bodies
from services.executor.job import JobView, condition_reason, parse_job, plan_fail_job

from .fakes import T0, FakeClock, ScriptedApi, applier, command, job

OK = Answer(200, "OK")
CONFLICT = Answer(409, "Conflict", "the object has been modified")
INVALID = Answer(422, "Invalid", "cannot set Complete=True and FailureTarget=true conditions")
FORBIDDEN = Answer(403, "Forbidden", 'jobs.batch "job" is forbidden')
NOT_FOUND = Answer(404, "NotFound", 'jobs.batch "job" not found')
UNAVAILABLE = Answer(503, "ServiceUnavailable", "etcd leader changed")
STATUS_PATH = "/apis/batch/v1/namespaces/ns/jobs/job/status"
RUNNING = {"type": "Suspended", "status": "False", "reason": "JobResumed"}


async def fail(
    script: list[Answer], budget_s: float = 60.0, **kw: Any
) -> tuple[Result, ScriptedApi, FakeClock]:
    api = ScriptedApi(list(script))
    clock = FakeClock(t=2.5)
    result = await applier(api, clock, budget_s).apply(command("fail-job", **kw), asyncio.Event())
    return result, api, clock


async def test_a_clean_fail_job_is_a_read_and_one_conditional_status_merge_patch() -> None:
    result, api, _ = await fail(
        [job(conditions=[RUNNING]), OK], trigger="PendingTimeout", reason="PendingTimeout"
    )
    assert (result.outcome, result.wrote, result.attempts, result.http_status) == (
        "applied",
        True,
        2,
        200,
    )
    get, patch = api.calls
    assert (get.verb, get.path) == ("GET", "/apis/batch/v1/namespaces/ns/jobs/job")
    assert (patch.verb, patch.path) == ("PATCH", STATUS_PATH)
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["metadata"] == {
        "resourceVersion": "70",
        # what the Job shows of its kill, in the same write (rule job.show-kill)
        "annotations": {
            "jobreaper.io/kill-state": "killing",
            "jobreaper.io/kill-trigger": "PendingTimeout",
            "jobreaper.io/kill-due-at": "2026-01-01T00:00:00Z",
            "jobreaper.io/killed-at": None,
        },
    }
    existing, ours = patch.body["status"]["conditions"]
    assert existing == RUNNING, "a merge patch replaces the list: the existing ones are kept"
    stamp = (T0 + timedelta(seconds=2.5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ours == {
        "type": "FailureTarget",
        "status": "True",
        "reason": "JobReaperPendingTimeout",
        "message": (
            "killed by jobreaper: PendingTimeout (due 2026-01-01T00:00:00Z, command c0ffee)"
        ),
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [
        ("Killed", "JobReaperKilled"),
        ("PendingTimeout", "JobReaperPendingTimeout"),
        ("RunningTimeout", "JobReaperRunningTimeout"),
    ],
)
def test_the_condition_reason_names_jobreaper_and_the_trigger(trigger: str, reason: str) -> None:
    assert condition_reason(trigger) == reason


def test_the_message_carries_a_reason_that_differs_from_the_trigger() -> None:
    view = JobView(uid="job-uid", resource_version="1", managed_by=None, conditions=())
    action = plan_fail_job(command("fail-job", reason="kill requested by ops"), view, T0)
    assert not isinstance(action, str)
    message = action.body["status"]["conditions"][-1]["message"]
    assert message.startswith("killed by jobreaper: Killed: kill requested by ops (due ")


async def test_a_missing_job_is_gone_without_a_write() -> None:
    result, api, _ = await fail([NOT_FOUND])
    assert (result.outcome, result.http_status) == ("gone", 404)
    assert api.writes == []


async def test_another_job_under_the_name_is_not_touched() -> None:
    result, api, _ = await fail([job(uid="other-uid")])
    assert result.outcome == "uid-mismatch"
    assert "other-uid" in result.message
    assert api.writes == []


@pytest.mark.parametrize("manager", ["kueue.x-k8s.io/multikueue", "example.com/mine"])
async def test_a_job_managed_by_another_controller_is_refused_unwritten(manager: str) -> None:
    result, api, _ = await fail([job(managed_by=manager)])
    assert (result.outcome, result.refusal, result.wrote) == ("refused", "managed-elsewhere", False)
    assert manager in result.message
    assert api.writes == []


async def test_a_job_managed_by_the_job_controller_by_name_is_written() -> None:
    result, api, _ = await fail([job(managed_by="kubernetes.io/job-controller"), OK])
    assert (result.outcome, result.wrote) == ("applied", True)
    assert len(api.writes) == 1


@pytest.mark.parametrize("kind", ["FailureTarget", "SuccessCriteriaMet", "Complete", "Failed"])
async def test_a_job_whose_end_is_decided_is_not_written_over(kind: str) -> None:
    theirs = {"type": kind, "status": "True", "reason": "BackoffLimitExceeded"}
    result, api, _ = await fail([job(conditions=[theirs])])
    assert (result.outcome, result.wrote) == ("applied", False)
    assert kind in result.message and "BackoffLimitExceeded" in result.message
    assert api.writes == []


async def test_a_false_terminal_condition_does_not_count() -> None:
    result, api, _ = await fail([job(conditions=[{"type": "Complete", "status": "False"}]), OK])
    assert result.wrote is True
    assert len(api.writes) == 1


async def test_a_conflict_is_decided_by_reading_again() -> None:
    # The controller wrote its own FailureTarget between our read and our write.
    theirs = {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}
    result, api, _ = await fail([job(), CONFLICT, job(conditions=[theirs], resource_version="71")])
    assert (result.outcome, result.wrote) == ("applied", False)
    assert [c.verb for c in api.calls] == ["GET", "PATCH", "GET"]


async def test_a_422_on_a_completed_job_is_decided_by_reading_again() -> None:
    done = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
    result, _, _ = await fail([job(), INVALID, job(conditions=[done])])
    assert (result.outcome, result.wrote) == ("applied", False)


async def test_a_job_changed_meanwhile_is_written_on_a_fresh_read() -> None:
    result, api, _ = await fail([job(), CONFLICT, job(resource_version="72"), OK])
    assert (result.outcome, result.wrote) == ("applied", True)
    assert [w.body["metadata"]["resourceVersion"] for w in api.writes] == ["70", "72"]


async def test_refused_again_and_again_fails_after_the_bounded_rechecks() -> None:
    result, api, _ = await fail([job(), INVALID, job(), INVALID, job(), INVALID])
    assert result.outcome == "failed"
    assert len(api.writes) == 3  # the first write and max_rechecks (2) more


async def test_forbidden_names_the_missing_grant() -> None:
    result, _, _ = await fail([job(), FORBIDDEN])
    assert result.outcome == "forbidden"
    assert "patch jobs/status" in result.message
    result, _, _ = await fail([FORBIDDEN])
    assert (result.outcome, result.message.split(":")[0]) == ("forbidden", "get jobs denied")


async def test_transient_errors_are_retried_from_the_read() -> None:
    result, api, clock = await fail([UNAVAILABLE, job(), UNAVAILABLE, job(), OK])
    assert (result.outcome, result.wrote) == ("applied", True)
    assert [s for s, _ in clock.retried] == ["fail-job", "fail-job"]
    assert [c.verb for c in api.calls] == ["GET", "GET", "PATCH", "GET", "PATCH"]


def test_parse_job_refuses_what_is_not_a_job() -> None:
    for body in (b"[]", b"{}", b'{"metadata": {"uid": "u"}, "status": {"conditions": [1]}}'):
        with pytest.raises(ValueError, match="Job"):
            parse_job(body)


async def test_an_unparseable_job_fails_without_a_write() -> None:
    result, api, _ = await fail([Answer(200, "OK", "", b"not json")])
    assert result.outcome == "failed"
    assert api.writes == []


def test_fail_job_needs_no_pod_name_and_a_job_uid_checks_names_as_pod_steps_do() -> None:
    assert invalid_names(command("fail-job")) is None
    bad = invalid_names(command("fail-job", job_name="Job/../x"))
    assert bad is not None and bad[0] == "invalid-job-name"
    bad = invalid_names(command("fail-job", namespace="NS"))
    assert bad is not None and bad[0] == "invalid-namespace"


@pytest.mark.parametrize(
    ("status", "write", "verdict"),
    [(409, True, "recheck"), (422, True, "recheck"), (422, False, "failed"), (404, True, "gone")],
)
def test_classify_fail_job(status: int, write: bool, verdict: str) -> None:
    assert classify(status, step="fail-job", write=write) == verdict


def test_one_event_on_the_job_and_none_on_a_pod() -> None:
    result = Result(outcome="applied", applied_at=T0, http_status=200, message="m", attempts=2)
    (event,) = event_bodies(command("fail-job"), result, "executor-0")
    assert event["regarding"]["kind"] == "Job"
    assert event["regarding"]["uid"] == "job-uid"
    assert "related" not in event
    assert event["reason"] == "JobreaperFailureTarget"
    assert event["note"].endswith("Job-level]")
