"""The snapshot file format: a round trip keeps every decision; damage and
incompatibility are detected and named (the caller then replays the log)."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.killer import snapshots
from services.killer.snapshots import (
    SnapshotHeader,
    SnapshotRejected,
    SnapshotStore,
    check_positions,
    decode,
    dump_state,
    encode,
    load_state,
    make_header,
)
from tests.unit.core.harness import Harness, cmd_tuple, request, snapshot

PREFIX = "t-1."
POSITIONS = {
    "k8s.objects": 120,
    "kill.requests": 3,
    "kill.commands": 7,
    "kill.results": 0,
    "kill.events": 2,
}


def busy_harness() -> Harness:
    """A state with something of everything: Jobs, pods, a lost node, a kill in its
    ladder (commands issued and folded back, one applied), a pending request, config."""
    h = Harness()
    h.feed(snapshot(1, defaultPendingTimeoutSeconds=600))
    for j in range(3):
        h.feed(h.b.job(0, name=f"j{j}", uid=f"job-{j}"))
        for k in range(3):
            h.feed(h.b.pod(1, name=f"j{j}-p{k}", job=f"j{j}", job_uid=f"job-{j}", node=f"n{k}"))
    h.feed(h.b.node(2, "n0", "ready"), h.b.node(2, "n2", "not-ready"))
    h.feed(request(3, job="j0", rid="r0"))
    h.decide(4)
    h.result(5, "j0-p0", "set-active-deadline")
    h.feed(request(6, kill_at=900, job="j1", rid="r1"))
    h.decide(7)
    return h


def round_trip(h: Harness) -> Harness:
    payload = dump_state(h.state)
    header = make_header(
        prefix=PREFIX,
        partition=2,
        job_partitions=6,
        positions=POSITIONS,
        global_positions={"k8s.nodes/0": 4},
        payload=payload,
    )
    back, restored_payload = decode(
        encode(header, payload), prefix=PREFIX, partition=2, job_partitions=6
    )
    assert back == header
    restored = Harness()
    restored.state = load_state(restored_payload)
    restored.b.rv = h.b.rv
    return restored


def test_a_restored_state_decides_exactly_as_the_original() -> None:
    original = busy_harness()
    assert original.commands, "the history issued commands (else this proves little)"
    restored = round_trip(original)
    # The same future for both: a new Job, a request, time passing through every step.
    history = list(original.commands)
    for h in (original, restored):
        h.commands = list(history)  # so that results can name the commands they answer
        h.feed(h.b.job(10, name="j9", uid="job-9"), h.b.pod(10, "j9-p0", job="j9", job_uid="job-9"))
        h.feed(request(11, job="j9", rid="r9"))
        h.result(12, "j0-p1", "set-active-deadline", outcome="failed")
        h.commands.clear()
        h.events.clear()
        for t in (12, 60, 120, 400, 901, 1000, 4000):
            h.decide(t)
    assert [cmd_tuple(c) for c in restored.commands] == [cmd_tuple(c) for c in original.commands]
    assert [c.command_id for c in restored.commands] == [c.command_id for c in original.commands]
    assert len(original.commands) > 5
    assert restored.events == original.events
    assert restored.events, "the future has kill events too"


def good_file() -> tuple[bytes, SnapshotHeader]:
    payload = dump_state(busy_harness().state)
    header = make_header(
        prefix=PREFIX,
        partition=2,
        job_partitions=6,
        positions=POSITIONS,
        global_positions={},
        payload=payload,
    )
    return encode(header, payload), header


def rejected(data: bytes, **expect: object) -> str:
    kwargs: dict[str, object] = {"prefix": PREFIX, "partition": 2, "job_partitions": 6}
    kwargs.update(expect)
    with pytest.raises(SnapshotRejected) as info:
        open_snapshot(data, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def open_snapshot(data: bytes, *, prefix: str, partition: int, job_partitions: int) -> None:
    _, payload = decode(data, prefix=prefix, partition=partition, job_partitions=job_partitions)
    load_state(payload)


def test_truncation_anywhere_is_detected() -> None:
    data, _ = good_file()
    for cut in (0, 5, 11, 40, len(data) // 2, len(data) - 1):
        assert rejected(data[:cut]) in {"truncated", "unreadable"}, cut
    assert rejected(data[: len(data) // 2]) == "truncated"


def test_a_flipped_byte_is_detected() -> None:
    data, header = good_file()
    payload_at = len(data) - header.payload_bytes
    for at in (payload_at, payload_at + header.payload_bytes // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        assert rejected(bytes(damaged)) == "checksum", at
    # In the header (it has its own checksum) or its length.
    for at in range(len(snapshots.MAGIC), payload_at):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        assert rejected(bytes(damaged)) in {"unreadable", "truncated", "checksum"}, at
        if at >= len(snapshots.MAGIC) + 4:
            assert rejected(bytes(damaged)) == "checksum", at


def test_garbage_and_a_bad_payload_are_unreadable() -> None:
    assert rejected(b"x" * 100) == "unreadable"
    payload = b"not a pickle"
    header = make_header(
        prefix=PREFIX,
        partition=2,
        job_partitions=6,
        positions=POSITIONS,
        global_positions={},
        payload=payload,
    )
    assert rejected(encode(header, payload)) == "unreadable"
    payload = pickle.dumps({"a": 1})
    header = dataclasses.replace(
        header,
        payload_bytes=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
    assert rejected(encode(header, payload)) == "unreadable"


def test_another_core_format_prefix_or_partitioning_is_incompatible() -> None:
    data, header = good_file()
    payload = data[len(data) - header.payload_bytes :]
    assert rejected(encode(dataclasses.replace(header, core="0" * 64), payload)) == "incompatible"
    assert rejected(encode(dataclasses.replace(header, format=99), payload)) == "incompatible"
    assert rejected(data, prefix="other.") == "mismatch"
    assert rejected(data, partition=3) == "mismatch"
    assert rejected(data, job_partitions=12) == "mismatch"


def test_positions_must_lie_inside_the_log() -> None:
    _, header = good_file()
    ends = {topic: offset + 10 for topic, offset in POSITIONS.items()}
    check_positions(header, {topic: 0 for topic in POSITIONS}, ends)  # fine
    check_positions(header, dict(POSITIONS), dict(POSITIONS))  # at both edges: fine
    with pytest.raises(SnapshotRejected, match="end") as info:
        check_positions(header, {}, {**ends, "k8s.objects": 100})  # topic re-created
    assert info.value.reason == "outside-log"
    with pytest.raises(SnapshotRejected, match="start") as info:
        check_positions(header, {"kill.requests": 4}, ends)  # retention removed records
    assert info.value.reason == "outside-log"


def test_the_store_writes_atomically_and_keeps_the_previous(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", PREFIX)
    data, header = good_file()
    payload = data[len(data) - header.payload_bytes :]
    assert store.candidates(2) == []
    size = store.write(header, payload)
    assert size == len(data)
    later = dataclasses.replace(header, created_at=datetime(2030, 1, 1, tzinfo=UTC))
    store.write(later, payload)
    newest, previous = store.candidates(2)
    assert newest == store.path(2)
    assert store.read(newest, partition=2, job_partitions=6)[0].created_at.year == 2030
    assert store.read(previous, partition=2, job_partitions=6)[0] == header
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == [
        "killer.t-1.p2.prev",
        "killer.t-1.p2.snap",
    ], "no temporary file left behind"
