"""``annotate-job``: what a Job shows of its kill (rule *job.show-kill*, ``core.show``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from services.executor.apply import Answer, Result, invalid_names
from services.executor.events import event_bodies

from .fakes import T0, FakeClock, ScriptedApi, applier, command, job

OK = Answer(200, "OK")
CONFLICT = Answer(409, "Conflict", "the object has been modified")
FORBIDDEN = Answer(403, "Forbidden", 'jobs.batch "job" is forbidden')
NOT_FOUND = Answer(404, "NotFound", 'jobs.batch "job" not found')
JOB_PATH = "/apis/batch/v1/namespaces/ns/jobs/job"


async def annotate(script: list[Answer], **kw: Any) -> tuple[Result, ScriptedApi]:
    api = ScriptedApi(list(script))
    result = await applier(api, FakeClock(t=2.5), 60.0).apply(
        command("annotate-job", **kw), asyncio.Event()
    )
    return result, api


async def test_due_is_a_read_and_one_conditional_merge_patch_of_the_annotations() -> None:
    due = T0 + timedelta(minutes=5)
    result, api = await annotate([job(), OK], kill_due_at=due)
    assert (result.outcome, result.wrote, result.attempts) == ("applied", True, 2)
    get, patch = api.calls
    assert (get.verb, get.path) == ("GET", JOB_PATH)
    assert (patch.verb, patch.path, patch.content_type) == (
        "PATCH",
        JOB_PATH,  # metadata: the Job itself, not its status
        "application/merge-patch+json",
    )
    assert patch.body == {
        "metadata": {
            "resourceVersion": "70",
            "annotations": {
                "jobreaper.io/kill-state": "due",
                "jobreaper.io/kill-trigger": "Killed",
                "jobreaper.io/kill-due-at": "2026-01-01T00:05:00Z",
                "jobreaper.io/killed-at": None,
            },
        }
    }


async def test_killed_says_when() -> None:
    ended = T0 + timedelta(seconds=42)
    _, api = await annotate([job(), OK], kill_state="killed", decided_at=ended, due_at=ended)
    annotations = api.calls[1].body["metadata"]["annotations"]
    assert annotations["jobreaper.io/kill-state"] == "killed"
    assert annotations["jobreaper.io/killed-at"] == "2026-01-01T00:00:42Z"
    assert annotations["jobreaper.io/kill-due-at"] == "2026-01-01T00:00:00Z"


async def test_another_job_under_the_name_is_not_touched() -> None:
    result, api = await annotate([job(uid="another")])
    assert result.outcome == "uid-mismatch"
    assert [c.verb for c in api.calls] == ["GET"]


async def test_a_gone_job_is_gone_and_a_conflict_reads_again() -> None:
    result, _ = await annotate([NOT_FOUND])
    assert result.outcome == "gone"
    result, api = await annotate([job(), CONFLICT, job(resource_version="71"), OK])
    assert (result.outcome, result.wrote) == ("applied", True)
    assert api.calls[3].body["metadata"]["resourceVersion"] == "71"


async def test_a_job_managed_elsewhere_is_still_annotated() -> None:
    result, api = await annotate([job(managed_by="kueue.x-k8s.io/multikueue"), OK])
    assert result.outcome == "applied"
    assert [c.verb for c in api.calls] == ["GET", "PATCH"]


async def test_forbidden_names_the_missing_grant() -> None:
    result, _ = await annotate([job(), FORBIDDEN])
    assert result.outcome == "forbidden"
    assert "patch on jobs in group batch" in result.message


def test_it_names_no_pod() -> None:
    assert invalid_names(command("annotate-job")) is None
    refused = invalid_names(command("annotate-job").model_copy(update={"pod_name": "x"}))
    assert refused is not None and refused[0] == "invalid-command"


async def test_each_state_is_an_event_on_the_job() -> None:
    for state, reason in (
        ("due", "JobreaperKillDue"),
        ("cancelled", "JobreaperKillCancelled"),
        ("killed", "JobreaperKilled"),
    ):
        cmd = command("annotate-job", kill_state=state)
        result, _ = await annotate([job(), OK], kill_state=state)
        (event,) = event_bodies(cmd, result, "executor-0")
        assert (event["reason"], event["type"], event["regarding"]["kind"]) == (
            reason,
            "Normal",
            "Job",
        )
