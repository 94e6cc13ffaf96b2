"""The executor's mapping: command -> request, answer -> outcome, and the apply loop."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from services.executor.apply import (
    Abandoned,
    AlreadyDone,
    Answer,
    OwnerRef,
    PodView,
    Result,
    Write,
    classify,
    parse_pod,
    plan,
)

from .fakes import JOB_REF, OTHER_UID, T0, UID, FakeClock, ScriptedApi, applier, command, pod

OK = Answer(200, "OK")
CONFLICT = Answer(409, "Conflict", "the UID in the precondition does not match")
INVALID = Answer(422, "Invalid", "the server rejected our request")
UNAVAILABLE = Answer(503, "ServiceUnavailable", "etcd leader changed")
THROTTLED = Answer(429, "TooManyRequests", "slow down")
NO_ANSWER = Answer(0, "TimeoutError", "")
FORBIDDEN = Answer(403, "Forbidden", 'pods "job-abc" is forbidden')
NOT_FOUND = Answer(404, "NotFound", 'pods "job-abc" not found')


# -- classify -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "step", "write", "verdict"),
    [
        (200, "delete", True, "ok"),
        (202, "delete", True, "ok"),
        (200, "delete", False, "ok"),
        (404, "delete", True, "gone"),
        (404, "set-active-deadline", False, "gone"),
        (409, "delete", True, "recheck"),
        (409, "force-delete", True, "recheck"),
        (409, "set-active-deadline", True, "recheck"),
        (422, "set-active-deadline", True, "recheck"),
        (422, "delete", True, "failed"),
        (403, "delete", True, "forbidden"),
        (403, "delete", False, "forbidden"),
        (429, "delete", True, "retry"),
        (500, "force-delete", True, "retry"),
        (503, "delete", False, "retry"),
        (504, "set-active-deadline", True, "retry"),
        (0, "delete", True, "retry"),
        (400, "delete", True, "failed"),
        (401, "delete", True, "failed"),
        (409, "delete", False, "failed"),
    ],
)
def test_classify(status: int, step: str, write: bool, verdict: str) -> None:
    assert classify(status, step=step, write=write) == verdict  # type: ignore[arg-type]


# -- plan: the never-raise rule and the preconditions ------------------------------------


def test_set_active_deadline_on_a_pod_without_one_patches_with_a_uid_test() -> None:
    action = plan(command("set-active-deadline", active_deadline_seconds=30), PodView(uid=UID))
    assert isinstance(action, Write)
    assert action.verb == "PATCH"
    assert action.path == "/api/v1/namespaces/ns/pods/job-abc"
    assert action.content_type == "application/json-patch+json"
    assert action.body == [
        {"op": "test", "path": "/metadata/uid", "value": UID},
        {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 30},
    ]


def test_every_write_is_conditional_on_the_resource_version_read() -> None:
    seen = PodView(uid=UID, resource_version="41")
    patch = plan(command("set-active-deadline", active_deadline_seconds=30), seen)
    assert isinstance(patch, Write)
    assert patch.body[1] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    for step in ("delete", "force-delete"):
        delete = plan(command(step), seen)
        assert isinstance(delete, Write)
        assert delete.body["preconditions"] == {"uid": UID, "resourceVersion": "41"}


def test_set_active_deadline_lowers_a_larger_value() -> None:
    action = plan(
        command("set-active-deadline", active_deadline_seconds=30),
        PodView(uid=UID, active_deadline_seconds=3600),
    )
    assert isinstance(action, Write)
    assert action.body[1]["value"] == 30


@pytest.mark.parametrize("current", [30, 29, 1])
def test_set_active_deadline_never_raises(current: int) -> None:
    action = plan(
        command("set-active-deadline", active_deadline_seconds=30),
        PodView(uid=UID, active_deadline_seconds=current),
    )
    assert isinstance(action, AlreadyDone)
    assert f"already {current} <= 30" in action.message


def test_delete_carries_the_uid_precondition_and_the_commands_grace_period() -> None:
    own = plan(command("delete"), PodView(uid=UID))
    assert isinstance(own, Write)
    assert (own.verb, own.content_type) == ("DELETE", "application/json")
    assert own.body["preconditions"] == {"uid": UID}
    assert "gracePeriodSeconds" not in own.body, "None keeps the pod's own grace period"
    short = plan(command("delete", grace_period_seconds=5), PodView(uid=UID))
    assert isinstance(short, Write)
    assert short.body["gracePeriodSeconds"] == 5


def test_delete_of_a_pod_already_being_deleted_sends_nothing() -> None:
    action = plan(command("delete"), PodView(uid=UID, deletion_timestamp="2026-01-01T00:00:00Z"))
    assert isinstance(action, AlreadyDone)
    assert "already being deleted" in action.message


def test_force_delete_uses_grace_zero_even_on_a_terminating_pod() -> None:
    action = plan(
        command("force-delete"),
        PodView(
            uid=UID, deletion_timestamp="2026-01-01T00:00:00Z", deletion_grace_period_seconds=30
        ),
    )
    assert isinstance(action, Write)
    assert action.body["gracePeriodSeconds"] == 0
    assert action.body["preconditions"] == {"uid": UID}


def test_force_delete_already_at_grace_zero_sends_nothing() -> None:
    action = plan(
        command("force-delete"),
        PodView(
            uid=UID, deletion_timestamp="2026-01-01T00:00:00Z", deletion_grace_period_seconds=0
        ),
    )
    assert isinstance(action, AlreadyDone)


def test_parse_pod_reads_the_fields_a_command_needs() -> None:
    view = parse_pod(pod(deletionTimestamp="2026-01-01T00:00:00Z", activeDeadlineSeconds=7).body)
    assert view == PodView(
        uid=UID,
        resource_version="7",
        deletion_timestamp="2026-01-01T00:00:00Z",
        deletion_grace_period_seconds=30,
        active_deadline_seconds=7,
        job_name="job",
        job_uid="job-uid",
        controller=OwnerRef(kind="Job", api_version="batch/v1", name="job", uid="job-uid"),
        controller_index=0,
        job_owners=("job-uid",),
        job_label="job",
        job_uid_label="job-uid",
    )


# -- the apply loop -------------------------------------------------------------------------


async def apply(
    script: list[Answer], step: str = "delete", budget_s: float = 60.0, **kw: Any
) -> tuple[Result, ScriptedApi, FakeClock]:
    api = ScriptedApi(list(script))
    clock = FakeClock()
    result = await applier(api, clock, budget_s).apply(command(step, **kw), asyncio.Event())
    return result, api, clock


async def test_a_clean_delete_is_one_read_and_one_write() -> None:
    result, api, _ = await apply([pod(), OK])
    assert (result.outcome, result.http_status, result.attempts, result.wrote) == (
        "applied",
        200,
        2,
        True,
    )
    assert [c.verb for c in api.calls] == ["GET", "DELETE"]


async def test_a_missing_pod_is_gone_without_a_write() -> None:
    result, api, _ = await apply([NOT_FOUND])
    assert (result.outcome, result.http_status) == ("gone", 404)
    assert api.writes == []


async def test_another_pod_under_the_name_is_not_touched() -> None:
    result, api, _ = await apply([pod(uid=OTHER_UID)], step="force-delete")
    assert result.outcome == "uid-mismatch"
    assert OTHER_UID in result.message
    assert api.writes == []


async def test_a_409_on_delete_is_decided_by_reading_again() -> None:
    result, api, _ = await apply([pod(), CONFLICT, pod(uid=OTHER_UID)])
    assert result.outcome == "uid-mismatch"
    assert len(api.writes) == 1


async def test_a_pod_changed_between_read_and_delete_is_deleted_on_a_fresh_read() -> None:
    result, api, _ = await apply([pod(), CONFLICT, pod(resourceVersion="8"), OK])
    assert (result.outcome, result.wrote) == ("applied", True)
    assert [w.body["preconditions"]["resourceVersion"] for w in api.writes] == ["7", "8"]


async def test_a_lost_delete_that_lands_after_the_reread_is_not_applied_twice() -> None:
    # The first DELETE's answer is lost and it is still queued in the API server
    # when we read again: the read shows the pod untouched, our second DELETE
    # (conditional on that read's resourceVersion) is refused because the first
    # landed meanwhile, and the next read shows the deletion.
    terminating = pod(deletionTimestamp="2026-01-01T00:00:01Z", resourceVersion="9")
    result, api, _ = await apply([pod(), NO_ANSWER, pod(), CONFLICT, terminating])
    assert (result.outcome, result.wrote) == ("applied", False)
    assert "no second delete" in result.message
    assert len(api.writes) == 2, "two requests, one of them refused by its precondition"


async def test_a_refused_patch_is_decided_by_reading_again() -> None:
    # The uid test failed (422): the re-read shows another pod under the name.
    result, api, _ = await apply([pod(), INVALID, pod(uid=OTHER_UID)], step="set-active-deadline")
    assert result.outcome == "uid-mismatch"
    assert len(api.writes) == 1


async def test_a_value_lowered_meanwhile_is_applied_without_a_second_write() -> None:
    result, api, _ = await apply(
        [pod(activeDeadlineSeconds=600), INVALID, pod(activeDeadlineSeconds=10)],
        step="set-active-deadline",
    )
    assert (result.outcome, result.wrote) == ("applied", False)
    assert "already 10 <= 30" in result.message
    assert len(api.writes) == 1


async def test_a_patch_refused_again_and_again_fails() -> None:
    result, api, _ = await apply(
        [pod(), INVALID, pod(), INVALID, pod(), INVALID], step="set-active-deadline"
    )
    assert result.outcome == "failed"
    assert len(api.writes) == 3


async def test_forbidden_is_an_outcome_naming_the_verb() -> None:
    result, _, _ = await apply([pod(), FORBIDDEN])
    assert (result.outcome, result.http_status) == ("forbidden", 403)
    assert result.message.startswith("delete pods denied")
    result, _, _ = await apply([FORBIDDEN])
    assert result.message.startswith("get pods denied")


async def test_transient_errors_are_retried_with_growing_delays() -> None:
    result, _, clock = await apply([UNAVAILABLE, pod(), THROTTLED, pod(), NO_ANSWER, pod(), OK])
    assert (result.outcome, result.attempts, result.wrote) == ("applied", 7, True)
    assert clock.slept == [0.2, 0.4, 0.8]
    assert clock.retried == [("delete", 503), ("delete", 429), ("delete", 0)]
    assert result.applied_at == T0 + timedelta(seconds=1.4)


async def test_a_write_whose_answer_was_lost_is_not_sent_again() -> None:
    # The DELETE timed out but landed: the read before the retry sees it.
    result, api, _ = await apply([pod(), NO_ANSWER, pod(deletionTimestamp="2026-01-01T00:00:01Z")])
    assert (result.outcome, result.wrote) == ("applied", False)
    assert "no second delete" in result.message
    assert len(api.writes) == 1


async def test_retries_stop_at_the_budget_and_the_command_fails() -> None:
    result, api, clock = await apply([UNAVAILABLE] * 100, budget_s=20.0)
    assert result.outcome == "failed"
    assert result.http_status == 503
    assert "gave up after" in result.message
    assert clock.slept == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]  # 21.2 s would pass 20
    assert clock.slept[-1] == 5.0, "the delay is capped"
    assert result.attempts == len(api.calls)


async def test_a_stopping_executor_abandons_a_command_waiting_to_retry() -> None:
    api = ScriptedApi([UNAVAILABLE])
    clock = FakeClock()
    stopping = asyncio.Event()
    stopping.set()
    with pytest.raises(Abandoned):
        await applier(api, clock).apply(command(), stopping)
    assert api.calls == [], "a command not started is not started once stopping"


async def test_stop_during_backoff_abandons() -> None:
    api = ScriptedApi([UNAVAILABLE])
    clock = FakeClock()
    stopping = asyncio.Event()
    runner = applier(api, clock)

    async def sleep_then_stop(event: asyncio.Event, delay: float) -> None:
        event.set()
        raise Abandoned

    runner.sleep = sleep_then_stop
    with pytest.raises(Abandoned):
        await runner.apply(command(), stopping)
    assert len(api.calls) == 1


# -- writing on the killer's view, without a read -------------------------------------------

OWNER_TESTS = [
    {"op": "test", "path": "/metadata/ownerReferences/0/controller", "value": True},
    {"op": "test", "path": "/metadata/ownerReferences/0/apiVersion", "value": "batch/v1"},
    {"op": "test", "path": "/metadata/ownerReferences/0/kind", "value": "Job"},
    {"op": "test", "path": "/metadata/ownerReferences/0/name", "value": "job"},
    {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": "job-uid"},
]


async def test_a_command_carrying_the_pods_version_is_one_write_conditional_on_it() -> None:
    written = pod(resourceVersion="8")  # the API server answers with the pod as written
    result, api, _ = await apply([written], step="set-active-deadline", pod_resource_version="7")
    assert (result.outcome, result.attempts, result.wrote) == ("applied", 1, True)
    assert [c.verb for c in api.calls] == ["PATCH"]
    assert result.pod is not None and result.pod.job_uid == "job-uid"


async def test_an_unread_patch_tests_the_killers_uid_and_version_and_the_pods_owner() -> None:
    result, api, _ = await apply([OK], step="set-active-deadline", pod_resource_version="7")
    assert (result.outcome, result.wrote) == ("applied", True)
    (write,) = api.writes
    assert write.body == [
        {"op": "test", "path": "/metadata/uid", "value": UID},
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        *OWNER_TESTS,
        {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 30},
    ]


async def test_a_patch_after_a_read_tests_the_owner_where_the_read_found_it() -> None:
    owners = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "cm-uid"},
        JOB_REF,
    ]
    result, api, _ = await apply([pod(owners=owners), OK], step="set-active-deadline")
    assert (result.outcome, result.wrote) == ("applied", True)
    (write,) = api.writes
    assert {"op": "test", "path": "/metadata/ownerReferences/1/uid", "value": "job-uid"} in (
        write.body
    )
    assert not any("/ownerReferences/0/" in op["path"] for op in write.body)


async def test_deletions_carrying_a_version_are_read_first() -> None:
    # A DELETE's preconditions cannot test the owner: only a read can.
    for step in ("delete", "force-delete"):
        result, api, _ = await apply([pod(), OK], step=step, pod_resource_version="7")
        assert (result.outcome, result.wrote) == ("applied", True)
        assert [c.verb for c in api.calls] == ["GET", "DELETE"]


async def test_a_command_without_a_job_uid_is_read_first() -> None:
    orphan = pod(owners=[])
    result, api, _ = await apply(
        [orphan, OK], step="set-active-deadline", pod_resource_version="7", job_uid=None
    )
    assert (result.outcome, result.wrote) == ("applied", True)
    assert [c.verb for c in api.calls] == ["GET", "PATCH"]


async def test_a_pod_changed_since_the_killer_saw_it_is_read_and_decided_afresh() -> None:
    # Refused (422: another version); the read shows a value lowered meanwhile.
    lowered = pod(activeDeadlineSeconds=10, resourceVersion="9")
    result, api, _ = await apply(
        [INVALID, lowered], step="set-active-deadline", pod_resource_version="7"
    )
    assert (result.outcome, result.wrote, result.attempts) == ("applied", False, 2)
    assert "already 10 <= 30" in result.message
    # Refused, the read shows the same pod changed in other ways: written on that read.
    result, api, _ = await apply(
        [INVALID, pod(resourceVersion="9"), OK],
        step="set-active-deadline",
        pod_resource_version="7",
    )
    assert (result.outcome, result.wrote) == ("applied", True)
    assert [w.body[1]["value"] for w in api.writes] == ["7", "9"]


async def test_an_unread_write_refused_for_another_pod_under_the_name_touches_nothing() -> None:
    result, api, _ = await apply(
        [INVALID, pod(uid=OTHER_UID)], step="set-active-deadline", pod_resource_version="7"
    )
    assert result.outcome == "uid-mismatch"
    assert len(api.writes) == 1, "the refused write only"


async def test_an_unread_write_whose_answer_was_lost_is_settled_by_a_read() -> None:
    landed = pod(activeDeadlineSeconds=30, resourceVersion="8")
    result, api, _ = await apply(
        [NO_ANSWER, landed], step="set-active-deadline", pod_resource_version="7"
    )
    assert (result.outcome, result.wrote) == ("applied", False)
    assert [c.verb for c in api.calls] == ["PATCH", "GET"]


async def test_the_unread_refusal_does_not_use_up_the_rechecks() -> None:
    result, api, _ = await apply(
        [INVALID, pod(), INVALID, pod(), INVALID, pod(), OK],
        step="set-active-deadline",
        pod_resource_version="6",
    )
    assert (result.outcome, result.wrote) == ("applied", True)
    assert len(api.writes) == 4
