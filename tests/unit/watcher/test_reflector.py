"""The reflector's store: noise dropped, re-lists converge the log to the cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from bench.sample_objects import job_pod
from services.watcher import wire
from services.watcher.reflector import Reflector

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _pod(i: int, **status: Any) -> wire.Pod:
    raw = job_pod(i)
    raw["status"].update(status)
    return msgspec.convert(raw, wire.Pod)


def test_an_unchanged_modification_is_dropped() -> None:
    r = Reflector(wire.Pod)
    first = r.on_event("ADDED", _pod(1), NOW)
    assert first is not None
    assert first.change == "added"
    again = copy.deepcopy(job_pod(1))
    again["metadata"]["resourceVersion"] = "200000"
    assert r.on_event("MODIFIED", msgspec.convert(again, wire.Pod), NOW) is None
    assert r.stats.dropped_unchanged == 1
    changed = r.on_event("MODIFIED", _pod(1, phase="Failed"), NOW)
    assert changed is not None
    assert changed.phase == "Failed"


def test_a_delete_of_an_unknown_object_publishes_nothing() -> None:
    r = Reflector(wire.Pod)
    assert r.on_event("DELETED", _pod(5), NOW) is None
    r.on_event("ADDED", _pod(5), NOW)
    deleted = r.on_event("DELETED", _pod(5), NOW)
    assert deleted is not None
    assert deleted.change == "deleted"
    assert r.store == {}


def test_a_relist_yields_added_synthetic_modified_and_synthetic_deleted() -> None:
    r = Reflector(wire.Pod)
    for i in (1, 2, 3):
        r.on_event("ADDED", _pod(i), NOW)
    # While we were not watching: pod 1 unchanged, pod 2 failed, pod 3 deleted, pod 4 created.
    out = r.on_list([_pod(1), _pod(2, phase="Failed"), _pod(4)], "5000", NOW)
    by_name = {o.name: o for o in out}
    assert set(by_name) == {
        "nightly-report-2-x7k2p",
        "nightly-report-3-x7k2p",
        "nightly-report-4-x7k2p",
    }
    assert by_name["nightly-report-2-x7k2p"].change == "synthetic-modified"
    assert by_name["nightly-report-3-x7k2p"].change == "synthetic-deleted"
    assert by_name["nightly-report-3-x7k2p"].resource_version == "5000"
    assert by_name["nightly-report-4-x7k2p"].change == "added"
    assert len(r.store) == 3


def test_a_store_seeded_from_the_log_emits_only_the_difference() -> None:
    seed = Reflector(wire.Pod)
    known = [o for o in (seed.on_event("ADDED", _pod(i), NOW) for i in range(3)) if o]
    r = Reflector(wire.Pod, known)
    assert r.on_list([_pod(0), _pod(1), _pod(2)], "9", NOW) == []


def test_a_node_that_disappears_is_gone() -> None:
    r = Reflector(wire.Node)
    node = msgspec.convert(
        {
            "metadata": {"name": "n", "uid": "u"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        wire.Node,
    )
    r.on_event("ADDED", node, NOW)
    (gone,) = r.on_list([], "10", NOW)
    assert gone.change == "synthetic-deleted"
    assert gone.status == "gone"  # type: ignore[union-attr]


def test_a_malformed_object_is_counted_and_skipped() -> None:
    r = Reflector(wire.Pod)
    assert r.on_event("MODIFIED", _pod(1, phase="Exploded"), NOW) is None
    assert r.stats.malformed == 1
    assert "Exploded" in r.malformed_reasons[0]


# -- refreshing: an unchanged object published again before its record expires -----


def _uid(i: int) -> str:
    return msgspec.convert(job_pod(i), wire.Pod).metadata.uid


def test_objects_seeded_from_the_log_are_due_by_the_age_of_their_record() -> None:
    seed = Reflector(wire.Pod)
    known = [o for o in (seed.on_event("ADDED", _pod(i), NOW) for i in range(3)) if o]
    r = Reflector(wire.Pod, known, {_uid(0): 100.0, _uid(1): 200.0})
    # pod 2 has no record time: counted as written long ago (refreshed first).
    assert sorted(r.due(150.0)) == [(0.0, _uid(2)), (100.0, _uid(0))]
    assert r.oldest() == 0.0
    assert r.on_list([_pod(0), _pod(1), _pod(2)], "9", NOW) == [], "listing changes no age"
    assert sorted(r.due(150.0)) == [(0.0, _uid(2)), (100.0, _uid(0))]


def test_a_refresh_is_the_newest_observation_again_with_its_version_and_time() -> None:
    r = Reflector(wire.Pod)
    first = r.on_event("ADDED", _pod(1), NOW)
    assert first is not None
    published = NOW.timestamp()
    assert r.due(published - 1) == []
    assert r.due(published) == [(published, first.uid)]
    again = r.refresh(first.uid, cutoff=published, now=published + 50)
    assert again is not None
    assert again.change == "refreshed"
    assert again.resource_version == first.resource_version
    assert again.observed_at == first.observed_at
    assert again.model_dump(exclude={"change"}) == first.model_dump(exclude={"change"})
    assert r.store[first.uid] is first, "the store keeps what the log says"
    assert r.due(published + 49) == [], "it counts as published at the refresh"
    assert r.refresh(first.uid, cutoff=published, now=published + 60) is None


def test_a_change_or_a_deletion_since_the_sweep_began_is_not_refreshed() -> None:
    r = Reflector(wire.Pod)
    r.on_event("ADDED", _pod(1), NOW)
    r.on_event("ADDED", _pod(2), NOW)
    cutoff = NOW.timestamp()
    later = NOW + timedelta(seconds=30)
    assert r.on_event("MODIFIED", _pod(1, phase="Failed"), later) is not None
    assert r.on_event("DELETED", _pod(2), later) is not None
    assert r.refresh(_uid(1), cutoff, later.timestamp()) is None
    assert r.refresh(_uid(2), cutoff, later.timestamp()) is None
    assert r.due(later.timestamp()) == [(later.timestamp(), _uid(1))]
    # A relist that finds it changed or gone moves or drops its age too.
    r.on_list([], "10", later + timedelta(seconds=1))
    assert r.due(later.timestamp() + 10) == []
    assert r.oldest() is None
