"""Events on pods whose force deletion is held or forbidden (``services/executor/held.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.events import ForceDeletionForbidden, ForceDeletionHeld
from services.executor.held import held_event_body

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def held(**overrides: object) -> ForceDeletionHeld:
    fields: dict[str, object] = {
        "namespace": "batch",
        "job_name": "nightly",
        "job_uid": "job-uid",
        "pod_name": "nightly-abc",
        "pod_uid": "pod-uid",
        "node_name": "node-7",
        "waits_for": "fence",
        "policy": "whenFenced",
        "trigger": "Killed",
        "reason": "Killed",
        "since": T0,
        "due_at": T0 + timedelta(seconds=900),
        "decided_at": T0 + timedelta(seconds=900),
    }
    fields.update(overrides)
    return ForceDeletionHeld.model_validate(fields)


def test_a_hold_is_a_warning_on_the_pod_saying_what_it_waits_for() -> None:
    body = held_event_body(held(), "0c5e-41aa-9f00-1234567890ab", "executor-0")
    assert body is not None
    assert (body["reason"], body["type"], body["action"]) == (
        "JobreaperForceDeletionHeld",
        "Warning",
        "force-delete-held",
    )
    assert body["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "batch",
        "name": "nightly-abc",
        "uid": "pod-uid",
    }
    assert body["related"]["kind"] == "Job" and body["related"]["uid"] == "job-uid"
    assert "fence of node node-7" in body["note"], body["note"]
    # Named after the kill event: the same record read again is the same Event (409).
    assert body["metadata"] == {"name": "nightly-abc.jr-0c5e41aa9f001234", "namespace": "batch"}
    again = held_event_body(held(), "0c5e-41aa-9f00-1234567890ab", "executor-1")
    assert again is not None and again["metadata"] == body["metadata"]


def test_each_reason_to_wait_is_told() -> None:
    for waits_for, words in (
        ("rate-limit", "rate limit"),
        ("guard", "mass-disruption guard"),
        ("volume", "ReadWriteOnce"),
    ):
        until = T0 + timedelta(seconds=901) if waits_for == "rate-limit" else None
        body = held_event_body(held(waits_for=waits_for, until=until), "e1", "x")
        assert body is not None and words in body["note"], (waits_for, body)


def test_a_forbidden_force_deletion_is_told_too_and_shadow_writes_nothing() -> None:
    forbidden = ForceDeletionForbidden.model_validate(
        {
            **{
                k: v
                for k, v in held().model_dump().items()
                if k in ForceDeletionForbidden.model_fields
            },
            "forbidden_by": "job",
        }
    )
    body = held_event_body(forbidden, "e2", "x")
    assert body is not None and body["reason"] == "JobreaperForceDeletionForbidden"
    assert held_event_body(held(shadow=True), "e3", "x") is None


def test_a_long_pod_name_still_makes_a_valid_event_name() -> None:
    name = "p" * 253
    body = held_event_body(held(pod_name=name), "e4", "x")
    assert body is not None and len(body["metadata"]["name"]) <= 253
