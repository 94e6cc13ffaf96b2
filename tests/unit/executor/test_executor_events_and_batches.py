"""Kubernetes Event bodies, and how a batch of records is sorted out."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from schemas.commands import CommandApplied
from services.executor.apply import PodView, Result
from services.executor.events import NAME_LIMIT, NOTE_LIMIT, event_bodies, event_name
from services.executor.worker import result_message, sort_out
from services.runtime.kafka import DEADLETTER_REASON_HEADER
from services.runtime.messages import CODEC, outgoing
from services.runtime.topics import TopicNames

from .fakes import T0, UID, command

NAMES = TopicNames("t.")


def result(outcome: str = "applied", message: str = "deleted") -> Result:
    return Result(
        outcome=outcome,  # type: ignore[arg-type]
        applied_at=T0,
        http_status=200,
        message=message,
        attempts=2,
        wrote=True,
        pod=PodView(uid=UID, job_name="job", job_uid="job-uid-from-pod"),
    )


def test_an_applied_command_tells_the_pod_and_the_job() -> None:
    cmd = command("force-delete")
    pod_event, job_event = event_bodies(cmd, result(), "exec-1")
    assert pod_event["apiVersion"] == "events.k8s.io/v1"
    assert pod_event["reportingController"] == "jobreaper.io/executor"
    assert pod_event["reportingInstance"] == "exec-1"
    assert pod_event["action"] == "force-delete"
    assert pod_event["reason"] == "JobreaperForceDeleted"
    assert pod_event["type"] == "Warning"
    assert pod_event["eventTime"] == "2026-01-01T00:00:00.000000Z"
    assert pod_event["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "ns",
        "name": "job-abc",
        "uid": UID,
    }
    assert job_event["regarding"]["kind"] == "Job"
    assert job_event["regarding"]["uid"] == "job-uid"
    for event in (pod_event, job_event):
        assert "trigger Killed" in event["note"]
        assert "rule ladder.force-delete" in event["note"]
        assert cmd.command_id in event["note"]
    # Derived names: a redelivered command re-creates the same Events (409, ignored).
    assert pod_event["metadata"]["name"] == "job-abc.jr-c0ffee"
    assert job_event["metadata"]["name"] == "job.jr-c0ffee"


def test_reasons_per_step_and_outcome() -> None:
    def reason(step: str, outcome: str) -> str | None:
        bodies = event_bodies(command(step), result(outcome), "x")
        return bodies[0]["reason"] if bodies else None

    assert reason("set-active-deadline", "applied") == "JobreaperActiveDeadlineSet"
    assert reason("delete", "applied") == "JobreaperDeleted"
    assert reason("delete", "failed") == "JobreaperKillFailed"
    assert reason("delete", "forbidden") == "JobreaperKillForbidden"
    assert reason("delete", "gone") is None
    assert reason("delete", "uid-mismatch") is None


def test_the_job_uid_comes_from_the_pod_when_the_command_has_none() -> None:
    _, job_event = event_bodies(command(job_uid=None), result(), "x")
    assert job_event["regarding"]["uid"] == "job-uid-from-pod"


def test_names_and_notes_stay_within_the_api_limits() -> None:
    assert len(event_name("p" * 300, "f" * 64)) == NAME_LIMIT
    bodies = event_bodies(command(), result(message="m" * 5000), "x")
    assert all(len(b["note"]) == NOTE_LIMIT for b in bodies)


def _record(
    offset: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t.kill.commands",
        partition=2,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=headers,
    )


def _command_record(offset: int, command_id: str) -> ConsumerRecord[bytes, bytes]:
    rec = outgoing(NAMES, command(command_id=command_id), source="test")
    return _record(offset, rec.key or b"", rec.value, rec.headers)


def test_poison_wrong_type_and_duplicates_are_sorted_out() -> None:
    applied = outgoing(NAMES, result_message(command(command_id="x"), result()), source="test")
    records = [
        _command_record(10, "a"),
        _record(11, b"k", b"not json", [("ce_type", b"io.jobreaper.command.issued.v1")]),
        _record(12, applied.key or b"", applied.value, applied.headers),
        _command_record(13, "a"),  # again within the batch
        _command_record(14, "done-before"),  # has a result already
        _command_record(15, "b"),
    ]
    out = sort_out(records, NAMES, seen={"done-before"})
    assert [(i, c.command_id) for i, c in out.commands] == [(0, "a"), (5, "b")]
    assert out.duplicates == {3, 4}
    assert set(out.dead) == {1, 2}
    poison, wrong = out.dead[1], out.dead[2]
    assert poison.topic == "t.deadletter"
    assert poison.value == b"not json", "the original record is kept byte for byte"
    reasons = {i: dict(d.headers)[DEADLETTER_REASON_HEADER].decode() for i, d in out.dead.items()}
    assert reasons[1].startswith("missing-header")
    assert reasons[2].startswith("wrong-topic: io.jobreaper.command.applied.v1")
    assert dict(wrong.headers)["jr_deadletter_source"] == b"t.kill.commands/2@12"


def test_a_result_mirrors_its_command() -> None:
    cmd = command("set-active-deadline", job_uid=None, attempt=2)
    message = result_message(cmd, result())
    assert isinstance(message, CommandApplied)
    assert message.kafka_key() == cmd.kafka_key()
    assert (message.attempt, message.attempts, message.job_uid) == (2, 2, "job-uid-from-pod")
    assert (
        CODEC.decode(
            outgoing(NAMES, message, source="t").headers, message.model_dump_json().encode()
        ).message
        == message
    )
