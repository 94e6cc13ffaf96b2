"""What the executor refuses: names it will not put in a URL, pods that are not the
command's Job's (docs/executor.md, "What the executor refuses")."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.executor.apply import (
    Result,
    is_dns1123_label,
    is_dns1123_subdomain,
)
from services.executor.events import event_bodies
from services.executor.metrics import ExecutorMetrics
from services.executor.worker import PartitionWorker, result_message
from services.runtime.topics import TopicNames

from .fakes import (
    OTHER_UID,
    FakeClock,
    ScriptedApi,
    applier,
    command,
    job_ref,
    pod,
)
from .test_executor_apply import INVALID, OK

STEPS = ("set-active-deadline", "delete", "force-delete")


async def apply(script: list[Any], step: str = "delete", **kw: Any) -> tuple[Result, ScriptedApi]:
    api = ScriptedApi(list(script))
    result = await applier(api, FakeClock()).apply(command(step, **kw), asyncio.Event())
    return result, api


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label", "subdomain"),
    [
        ("ns", True, True),
        ("a", True, True),
        ("0abc-9", True, True),
        ("a" * 63, True, True),
        ("a" * 64, False, True),
        ("a.b", False, True),
        (
            ".".join(["a" * 63] * 4),
            False,
            False,
        ),  # 255 characters: the pattern fits, not the length
        (".".join(["a" * 63] * 3) + "." + "a" * 61, False, True),  # 253
        (".".join(["a" * 63] * 3) + "." + "a" * 62, False, False),  # 254
        ("", False, False),
        ("-a", False, False),
        ("a-", False, False),
        ("A", False, False),
        ("a_b", False, False),
        ("a/b", False, False),
        ("..", False, False),
        ("a..b", False, False),
        (".a", False, False),
        ("a.", False, False),
        ("a%2Fb", False, False),
        ("a?b=c", False, False),
        ("a\n", False, False),
        ("a b", False, False),
        ("é", False, False),
    ],
)
def test_dns1123_names(value: str, label: bool, subdomain: bool) -> None:
    assert is_dns1123_label(value) is label
    assert is_dns1123_subdomain(value) is subdomain


@pytest.mark.parametrize(
    ("fields", "reason", "says"),
    [
        ({"namespace": "../kube-system"}, "invalid-namespace", "namespace '../kube-system'"),
        ({"namespace": "kube-system/pods/x"}, "invalid-namespace", "DNS-1123 label"),
        ({"namespace": "NS"}, "invalid-namespace", "DNS-1123 label"),
        ({"namespace": "a" * 64}, "invalid-namespace", "(64 characters)"),
        ({"namespace": ""}, "invalid-namespace", "namespace ''"),
        ({"namespace": "ns\n"}, "invalid-namespace", "'ns\\n'"),
        ({"pod_name": "x/../../other"}, "invalid-pod-name", "pod name 'x/../../other'"),
        ({"pod_name": "x?dryRun=All"}, "invalid-pod-name", "DNS-1123 subdomain"),
        ({"pod_name": "x%2F.."}, "invalid-pod-name", "DNS-1123 subdomain"),
        ({"pod_name": "a" * 254}, "invalid-pod-name", "(254 characters)"),
        ({"pod_name": "Job-ABC"}, "invalid-pod-name", "DNS-1123 subdomain"),
        ({"job_name": "job/x"}, "invalid-job-name", "Job name 'job/x'"),
        ({"job_name": ""}, "invalid-job-name", "Job name ''"),
        ({"job_name": "j" * 254}, "invalid-job-name", "DNS-1123 subdomain"),
    ],
)
@pytest.mark.parametrize("step", STEPS)
async def test_an_invalid_name_is_refused_without_any_api_call(
    step: str, fields: dict[str, Any], reason: str, says: str
) -> None:
    result, api = await apply([], step=step, **fields)
    assert api.calls == []
    assert (result.outcome, result.refusal, result.attempts) == ("refused", reason, 0)
    assert (result.wrote, result.http_status, result.pod) == (False, None, None)
    assert result.message.startswith("refused, no API call: ")
    assert says in result.message
    assert event_bodies(command(step, **fields), result, "x") == [], "no Event"


async def test_a_set_active_deadline_without_a_value_is_refused_without_a_call() -> None:
    result, api = await apply([], step="set-active-deadline", active_deadline_seconds=None)
    assert api.calls == []
    assert (result.outcome, result.refusal) == ("refused", "invalid-command")


async def test_a_valid_name_at_the_limits_is_applied() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253
    result, api = await apply([pod(), OK], pod_name=name, namespace="n" * 63)
    assert result.outcome == "applied"
    assert api.calls[0].path == f"/api/v1/namespaces/{'n' * 63}/pods/{name}"


# -- ownership: a pod read ------------------------------------------------------------------

OTHER_LABELS = {"batch.kubernetes.io/job-name": "other", "controller-uid": OTHER_UID}
NOT_MINE = "not by Job 'job' (uid job-uid)"
NOT_THE_JOBS: dict[str, tuple[list[dict[str, Any]], dict[str, str] | None, str]] = {
    "another Job": ([job_ref("other", OTHER_UID)], OTHER_LABELS, NOT_MINE),
    "a Job of the name re-created (another uid)": ([job_ref("job", OTHER_UID)], None, NOT_MINE),
    "the uid under another name": ([job_ref("other", "job-uid")], None, NOT_MINE),
    "a Job of another API group": ([job_ref(apiVersion="example.com/v1")], None, NOT_MINE),
    "a ReplicaSet": (
        [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "job",
                "uid": "job-uid",
                "controller": True,
            }
        ],
        None,
        "is controlled by ReplicaSet 'job' (apps/v1, uid job-uid), " + NOT_MINE,
    ),
    "the Job, but not as controller": (
        [job_ref(controller=False)],
        None,
        "has an owner reference to a Job (uid job-uid) but no controller",
    ),
    "an orphan of another Job": ([], OTHER_LABELS, "is an orphan with Job-name label 'other'"),
}


@pytest.mark.parametrize(
    ("owners", "labels", "says"), NOT_THE_JOBS.values(), ids=NOT_THE_JOBS.keys()
)
@pytest.mark.parametrize("step", STEPS)
async def test_a_pod_not_owned_by_the_commands_job_is_read_and_not_written(
    step: str, owners: list[dict[str, Any]], labels: dict[str, str] | None, says: str
) -> None:
    result, api = await apply([pod(owners=owners, labels=labels)], step=step)
    assert [c.verb for c in api.calls] == ["GET"]
    assert api.writes == []
    assert (result.outcome, result.refusal, result.wrote) == ("refused", "not-owned", False)
    assert (result.http_status, result.attempts) == (200, 1)
    assert result.message.startswith("refused, not written: pod ns/job-abc ")
    assert says in result.message, result.message
    assert result.pod is None, "the other Job's facts are not the command's"


@pytest.mark.parametrize("step", STEPS)
async def test_a_pod_owned_by_the_commands_job_is_applied(step: str) -> None:
    # the controller need not come first among the owner references
    owners = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "c-uid"},
        job_ref(),
    ]
    result, api = await apply([pod(owners=owners), OK], step=step)
    assert (result.outcome, result.wrote, result.refusal) == ("applied", True, None)
    assert [c.verb for c in api.calls] == [
        "GET",
        "PATCH" if step == "set-active-deadline" else "DELETE",
    ]


async def test_a_refusal_names_the_owner_found() -> None:
    result, _ = await apply([pod(owners=[job_ref("other", OTHER_UID)])])
    assert result.message == (
        "refused, not written: pod ns/job-abc is controlled by Job 'other' "
        f"(batch/v1, uid {OTHER_UID}), not by Job 'job' (uid job-uid)"
    )


# -- ownership: orphans (no controller) ----------------------------------------------------

RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "r", "controller": True}
BOTH = {"batch.kubernetes.io/job-name": "job", "job-name": "job"}
UIDS = {"batch.kubernetes.io/controller-uid": "job-uid", "controller-uid": "job-uid"}
Orphan = tuple[str | None, list[dict[str, Any]], dict[str, str], str | None]
ORPHAN_CASES: dict[str, Orphan] = {
    # A command without a Job uid: the killer found the pod by its label only.
    "no uid: an orphan, both labels": (None, [], BOTH, None),
    "no uid: an orphan, legacy label only": (None, [], {"job-name": "job"}, None),
    "no uid: an orphan of another name": (
        None,
        [],
        {"batch.kubernetes.io/job-name": "other"},
        "Job-name label 'other'",
    ),
    "no uid: labels disagree (the first wins)": (
        None,
        [],
        {"batch.kubernetes.io/job-name": "other", "job-name": "job"},
        "Job-name label 'other'",
    ),
    "no uid: no label": (None, [], {}, "no Job-name label"),
    "no uid: controlled by a Job": (None, [job_ref()], BOTH, "is controlled by Job 'job'"),
    "no uid: controlled by something else": (None, [RS], BOTH, "is controlled by ReplicaSet"),
    "no uid: a Job reference, not as controller": (
        None,
        [job_ref(controller=False)],
        BOTH,
        "has an owner reference to a Job (uid job-uid) but no controller",
    ),
    # A command with a Job uid on a pod orphaned since the killer saw it (its Job
    # deleted with propagationPolicy Orphan): the labels still say whose it was.
    "uid: orphaned, labels of the Job": ("job-uid", [], {**BOTH, **UIDS}, None),
    "uid: orphaned, legacy labels only": (
        "job-uid",
        [],
        {"job-name": "job", "controller-uid": "job-uid"},
        None,
    ),
    "uid: orphaned from a Job of the name with another uid": (
        "job-uid",
        [],
        {**BOTH, "batch.kubernetes.io/controller-uid": OTHER_UID},
        f"controller-uid label '{OTHER_UID}'",
    ),
    "uid: orphaned, no controller-uid label": ("job-uid", [], BOTH, "no controller-uid label"),
    "uid: orphaned from a Job of another name": (
        "job-uid",
        [],
        {"job-name": "other", **UIDS},
        "Job-name label 'other'",
    ),
}


@pytest.mark.parametrize(
    ("uid", "owners", "labels", "refused"), ORPHAN_CASES.values(), ids=ORPHAN_CASES.keys()
)
async def test_an_orphan_is_only_touched_by_a_command_of_the_job_its_labels_name(
    uid: str | None, owners: list[dict[str, Any]], labels: dict[str, str], refused: str | None
) -> None:
    script = [pod(owners=owners, labels=labels)] + ([] if refused else [OK])
    result, api = await apply(script, job_uid=uid)
    if refused is None:
        assert (result.outcome, len(api.writes)) == ("applied", 1)
    else:
        assert (result.outcome, result.refusal) == ("refused", "not-owned")
        assert refused in result.message, result.message
        assert api.writes == []


async def test_an_unread_patch_on_a_pod_orphaned_since_is_read_then_written() -> None:
    # The owner tests fail (the pod has no owner reference now): read, and the
    # orphan's labels name the command's Job, so it is written on that read.
    orphaned = pod(owners=[], labels={**BOTH, **UIDS}, resourceVersion="9")
    result, api = await apply(
        [INVALID, orphaned, OK], step="set-active-deadline", pod_resource_version="7"
    )
    assert (result.outcome, result.wrote) == ("applied", True)
    assert [c.verb for c in api.calls] == ["PATCH", "GET", "PATCH"]
    second = api.writes[1].body
    assert not any("ownerReferences" in op["path"] for op in second)
    assert {"op": "test", "path": "/metadata/resourceVersion", "value": "9"} in second


async def test_a_refused_orphan_command_is_not_recorded_under_the_pods_job() -> None:
    cmd = command(job_uid=None)
    api = ScriptedApi([pod(owners=[job_ref("other", OTHER_UID)])])
    result = await applier(api, FakeClock()).apply(cmd, asyncio.Event())
    assert result.outcome == "refused"
    assert result_message(cmd, result).job_uid is None


# -- the unread patch ---------------------------------------------------------------------


async def test_an_unread_patch_whose_owner_test_fails_is_read_then_refused() -> None:
    # The command carries the pod's true uid and version, but names a Job that does
    # not own it: the API server refuses the patch's owner tests (422), the read
    # shows the pod's owner, and nothing else is sent.
    result, api = await apply(
        [INVALID, pod(owners=[job_ref("other", OTHER_UID)])],
        step="set-active-deadline",
        pod_resource_version="7",
    )
    assert [c.verb for c in api.calls] == ["PATCH", "GET"]
    (patch,) = api.writes
    assert {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": "job-uid"} in (
        patch.body
    )
    assert (result.outcome, result.refusal, result.wrote) == ("refused", "not-owned", False)
    assert (result.attempts, result.http_status) == (2, 200)


# -- accounting ---------------------------------------------------------------------------


class _Producer:
    async def stop(self) -> None:
        return None


async def test_a_refusal_is_counted_by_reason_and_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = CollectorRegistry()
    metrics = ExecutorMetrics(registry)
    clock = FakeClock()
    worker = PartitionWorker(
        TopicPartition("t.kill.commands", 0),
        cast(Any, _Producer()),
        group_id="g",
        names=TopicNames("t."),
        source="test",
        applier=applier(ScriptedApi([]), clock),
        metrics=metrics,
        seen=set(),
        next_offset=0,
        end_offset=0,
        max_batch=10,
        concurrency=1,
    )
    try:
        cmd = command(namespace="../x")
        result = await worker.applier.apply(cmd, asyncio.Event())
        worker._account(cmd, result)
        worker._account(cmd, result)
    finally:
        await worker.stop()
    value = registry.get_sample_value(
        "jobreaper_executor_refused_total", {"reason": "invalid-namespace"}
    )
    assert value == 2
    assert (
        registry.get_sample_value(
            "jobreaper_executor_commands_total", {"step": "delete", "outcome": "refused"}
        )
        == 2
    )
    assert registry.get_sample_value("jobreaper_executor_writes_total", {"step": "delete"}) is None
    out = capsys.readouterr()
    assert "executor.refused" in out.out + out.err


# -- shadow mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
async def test_a_shadow_command_makes_no_api_call_and_would_apply(step: str) -> None:
    """A command decided under ``enforce: shadow``: no read, no write, no Event; the
    result keeps the command's id and says ``would-apply``."""
    cmd = command(step, shadow=True)
    result, api = await apply([], step=step, shadow=True)
    assert api.calls == []
    assert (result.outcome, result.attempts, result.wrote) == ("would-apply", 0, False)
    assert (result.http_status, result.pod, result.refusal) == (None, None, None)
    assert event_bodies(cmd, result, "x") == [], "no Event"
    message = result_message(cmd, result)
    assert (message.command_id, message.outcome, message.attempts, message.wrote) == (
        cmd.command_id,
        "would-apply",
        0,
        False,
    )


async def test_a_shadow_command_with_an_invalid_name_still_makes_no_api_call() -> None:
    result, api = await apply([], shadow=True, pod_name="x%2F..")
    assert api.calls == []
    assert result.outcome == "would-apply"
