"""Bounded records (schemas/parts.py): the largest part of every split message,
with the longest names Kubernetes accepts, encoded as the killer writes it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decisions import (
    DecisionRecorded,
    IncompleteDecision,
    InputPosition,
    decision_parts,
    merge_parts,
)
from schemas.events import (
    JobKilled,
    KillStarted,
    PodEnding,
    PodRef,
    fixed_bytes,
    job_killed_parts,
    kill_started_parts,
)
from schemas.parts import (
    KAFKA_DEFAULT_MAX_BYTES,
    MAX_IDS_PER_DECISION_PART,
    MAX_PODS_PER_PART,
    PART_TARGET_BYTES,
    json_bytes,
    split,
)
from services.runtime.messages import CODEC

AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
NAME_MAX = 253  # a pod name is a DNS subdomain
UID = "0" * 8 + "-0000-0000-0000-" + "0" * 12  # 36 characters, as Kubernetes makes them
JOB = "j" * 63  # Job names are label values: at most 63 characters
NAMESPACE = "n" * 63


def record_bytes(message: KillStarted | JobKilled | DecisionRecorded) -> int:
    """The record as the producer sizes it: key, value and headers."""
    encoded = CODEC.encode(message, source="/jobreaper/killer/" + "k" * 63, time=AT)
    headers = sum(len(k) + len(v) for k, v in encoded.headers)
    return len(encoded.key or b"") + len(encoded.value) + headers


def long_name(i: int) -> str:
    return f"{i:06d}".rjust(NAME_MAX, "p")


def started(**fields: object) -> KillStarted:
    return KillStarted(
        namespace=NAMESPACE,
        job_name=JOB,
        job_uid=UID,
        episode=1,
        trigger="JobFinished",
        reason="BackoffLimitExceeded",
        due_at=AT,
        decided_at=AT,
        **fields,  # type: ignore[arg-type]
    )


def killed() -> JobKilled:
    return JobKilled(
        namespace=NAMESPACE,
        job_name=JOB,
        job_uid=UID,
        episode=1,
        trigger="JobFinished",
        reason="BackoffLimitExceeded",
        killed_at=AT,
        decided_at=AT,
    )


def test_the_largest_kill_started_part_is_well_below_the_kafka_limit() -> None:
    pods = tuple(PodRef(name=long_name(i), uid=UID) for i in range(3 * MAX_PODS_PER_PART))
    parts = kill_started_parts(started(), pods[:-10], pods[-10:])
    assert [len(p.pods) + len(p.already_done) for p in parts] == [MAX_PODS_PER_PART] * 3
    largest = max(record_bytes(p) for p in parts)
    print(f"largest KillStarted part: {largest:,} bytes")
    # 1,000 x 310 bytes of entries + the fields: about a third of the limit.
    assert 300_000 < largest < PART_TARGET_BYTES < KAFKA_DEFAULT_MAX_BYTES // 2 + 1


def test_the_largest_job_killed_part_is_well_below_the_kafka_limit() -> None:
    pods = tuple(
        PodEnding(name=long_name(i), uid=UID, ended="force-deleted")
        for i in range(MAX_PODS_PER_PART + 1)
    )
    parts = job_killed_parts(killed(), pods)
    assert [len(p.pods) for p in parts] == [MAX_PODS_PER_PART, 1]
    largest = record_bytes(parts[0])
    print(f"largest JobKilled part: {largest:,} bytes")
    assert 320_000 < largest < PART_TARGET_BYTES


def test_the_largest_decision_part_is_well_below_the_kafka_limit() -> None:
    record = DecisionRecorded(
        partition=5,
        decided_at=AT,
        config_version=12,
        inputs=tuple(InputPosition(topic=f"t{i}", partition=i, offset=10**12) for i in range(7)),
        killer="k" * 63,
        state="f" * 16,
        rebuilt_from=tuple(
            InputPosition(topic="k8s.nodes", partition=0, offset=10**12) for _ in "ab"
        ),
    )
    commands = [f"{i:032x}" for i in range(20_000)]
    events = [f"{i:032x}" for i in range(20_000, 40_020)]
    parts = decision_parts(record, commands, events)
    assert [len(p.command_ids) + len(p.event_ids) for p in parts] == [
        MAX_IDS_PER_DECISION_PART
    ] * 4 + [20]
    largest = max(record_bytes(p) for p in parts)
    print(f"largest DecisionRecorded part: {largest:,} bytes")
    assert 350_000 < largest < PART_TARGET_BYTES
    merged = merge_parts(parts)
    assert merged.command_ids == tuple(commands) and merged.event_ids == tuple(events)
    assert (merged.part, merged.parts) == (1, 1)
    with pytest.raises(IncompleteDecision):
        merge_parts(parts[1:])
    with pytest.raises(IncompleteDecision):
        merge_parts(parts[:2] + parts[3:])


def test_one_part_is_written_as_before_parts_existed() -> None:
    """Same bytes, so the same derived event id as a killer before parts wrote."""
    pods = (PodRef(name="a", uid="1"), PodRef(name="b", uid="2"))
    (only,) = kill_started_parts(started(), pods, ())
    assert only == started(pods=pods)
    assert '"part' not in only.model_dump_json()
    assert only.model_dump_json() == started(pods=pods).model_dump_json()
    (none,) = kill_started_parts(started(), (), ())
    assert none.pods == () and (none.part, none.parts) == (1, 1)


def test_names_longer_than_kubernetes_allows_make_smaller_parts_not_larger_records() -> None:
    """A forged record can carry any name: the byte bound splits before the count."""
    pods = tuple(PodRef(name=f"{i}-" + "\u00e9\n" * 20_000, uid=UID) for i in range(60))
    parts = kill_started_parts(started(), pods, ())
    assert len(parts) > 1
    assert [p for part in parts for p in part.pods] == list(pods)
    for part in parts:
        size = len(part.model_dump_json().encode())
        assert size <= PART_TARGET_BYTES
    assert max(record_bytes(p) for p in parts) < KAFKA_DEFAULT_MAX_BYTES


def test_json_bytes_counts_what_pydantic_writes() -> None:
    for text in ("plain", 'quo"te', "back\\slash", "new\nline", "\x00\x1f\x7f", "é€😀", ""):
        assert json_bytes(text) == len(PodRef(name=text, uid="").model_dump_json().encode()) - len(
            '{"name":"","uid":""}'
        )


def test_split_is_deterministic_and_keeps_the_order() -> None:
    items = list(range(10))
    assert split(items, lambda _: 1, max_items=3, max_bytes=100) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
        [9],
    ]
    assert split(items, lambda i: i, max_items=100, max_bytes=10) == [
        [0, 1, 2, 3, 4],
        [5],
        [6],
        [7],
        [8],
        [9],
    ]
    assert split([], lambda _: 1, max_items=3, max_bytes=1) == [[]]
    assert split([50], lambda i: i, max_items=3, max_bytes=1) == [[50]]


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    _TEXT,
    _TEXT,
    st.one_of(st.none(), _TEXT),
    _TEXT,
    st.integers(1, 10**60),
    st.sampled_from([datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC), AT]),
)
def test_the_fields_every_part_repeats_are_bounded_without_serializing(
    namespace: str, job: str, uid: str | None, reason: str, episode: int, when: datetime
) -> None:
    """``fixed_bytes`` (what the core counts, as it may not serialize: that raises on
    a lone surrogate) bounds the JSON of a part without its pods."""
    common = {
        "namespace": namespace,
        "job_name": job,
        "job_uid": uid,
        "episode": episode,
        "trigger": "StuckTerminating",
        "reason": reason,
        "decided_at": when,
        "part": 99_999,
        "parts": 99_999,
    }
    for event in (
        KillStarted(**common, due_at=when),  # type: ignore[arg-type]
        JobKilled(**common, killed_at=when),  # type: ignore[arg-type]
    ):
        assert len(event.model_dump_json().encode()) <= fixed_bytes(event)


def test_parts_of_names_no_utf8_can_hold_are_made_without_raising() -> None:
    pods = (PodRef(name="\ud800", uid="\udfff"),)
    (part,) = kill_started_parts(started().model_copy(update={"reason": "\ud800"}), pods, ())
    assert part.pods == pods
