"""The mass-disruption guard at the edges: the watcher carries the zone, the config
service checks the keys, notify alerts once per tripping, the CLI builds the resume
for its own topic, and the events read well."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas.events import ForceDeletionHeld, ForceDeletionPaused, ForceDeletionResumed
from schemas.requests import ForceResumeRequested
from schemas.topics import FORCE_RESUMES
from services.config.validation import validate_document
from services.kill.force import build_resume
from services.notify.alerts import alert_for
from services.runtime.kill_events import describe
from services.runtime.messages import CODEC
from services.watcher import wire
from services.watcher.convert import node_observation

NOW = datetime(2026, 1, 1, tzinfo=UTC)

PAUSED = ForceDeletionPaused(
    zone="eu-1a",
    tripped_at=NOW,
    silent_nodes=4,
    zone_nodes=6,
    nodes=("a", "b", "c", "d"),
    min_nodes=3,
    fraction=0.55,
    window_seconds=120,
    config_version=2,
    decided_at=NOW,
)
RESUMED = ForceDeletionResumed(
    zone="eu-1a",
    tripped_at=NOW,
    cause="operator",
    requested_by="oncall",
    requested_at=NOW,
    decided_at=NOW,
)


def _node(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "n1", "uid": "u", "resourceVersion": "5", "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
    }


def test_the_watcher_carries_the_zone_label() -> None:
    raw = _node({"topology.kubernetes.io/zone": "eu-1a", "team": "x"})
    assert node_observation(msgspec.convert(raw, wire.Node), "modified", NOW).zone == "eu-1a"
    assert node_observation(msgspec.convert(_node({}), wire.Node), "modified", NOW).zone is None


def test_the_config_service_checks_the_guard_keys() -> None:
    ok = validate_document(
        {
            "massDisruptionWindowSeconds": 60,
            "massDisruptionMinNodes": 5,
            "massDisruptionFraction": 0.3,
        }
    )
    assert ok.ok and ok.config is not None
    assert ok.config.mass_disruption_fraction == 0.3
    for bad, words in (
        ({"massDisruptionFraction": 55}, "a fraction, not a percentage"),
        ({"massDisruptionFraction": 0}, "more than 0"),
        ({"massDisruptionMinNodes": 0}, "at least 1"),
        ({"massDisruptionWindowSeconds": -1}, "negative"),
        ({"overrides": {"namespaces": {"b": {"massDisruptionMinNodes": 2}}}}, "cluster-wide"),
    ):
        report = validate_document(bad)
        assert not report.ok and words in report.summary(), (bad, report.summary())


def test_notify_alerts_once_per_tripping_and_not_per_held_pod() -> None:
    held = ForceDeletionHeld(
        namespace="ns",
        job_name="j",
        pod_name="p",
        pod_uid="u",
        node_name="a",
        waits_for="guard",
        policy="afterTimeout",
        trigger="Killed",
        reason="Killed",
        since=NOW,
        due_at=NOW,
        decided_at=NOW,
    )
    kinds = []
    for message in (PAUSED, held, RESUMED):
        record = CODEC.encode(message, source="/t")
        found = alert_for(
            CODEC.decode(record.headers, record.value), failing_after=3, remind_every=10
        )
        kinds.append(None if found is None else found.kind)
    assert kinds == ["force-deletion-paused", None, "force-deletion-resumed"]
    assert "4 of 6 nodes" in describe(PAUSED) and "jobreaper force resume" in describe(PAUSED)
    assert "resumed by oncall" in describe(RESUMED)
    assert "mass-disruption guard" in describe(held)


def test_the_resume_goes_to_its_own_topic_keyed_by_zone() -> None:
    every = build_resume(now=NOW, zone=None, reason="r", requested_by="alice")
    one = build_resume(now=NOW, zone="eu-1a", reason="", requested_by="bob")
    assert ForceResumeRequested.TOPIC == FORCE_RESUMES
    assert (every.kafka_key(), one.kafka_key()) == ("*", "zone/eu-1a")
    assert (every.requested_by, every.requested_at) == ("alice", NOW)
