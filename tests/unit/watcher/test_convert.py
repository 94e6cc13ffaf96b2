"""Wire structs become observations equal to validated ones; noise is recognised."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from bench.sample_objects import job_pod
from schemas.observations import JobObserved, NodeObserved, PodObserved
from services.watcher import wire
from services.watcher.convert import (
    MalformedObject,
    job_observation,
    node_observation,
    pod_observation,
    same_content,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _pod(obj: dict[str, Any]) -> wire.Pod:
    return msgspec.convert(obj, wire.Pod)


def test_pod_observation_equals_a_validated_model() -> None:
    obs = pod_observation(_pod(job_pod(3)), "modified", NOW)
    assert obs is not None
    assert PodObserved.model_validate(obs.model_dump()) == obs
    assert PodObserved.model_validate_json(obs.model_dump_json()) == obs
    assert obs.job_name == "nightly-report-3"
    assert obs.job_uid is not None
    assert obs.annotations == {"jobreaper.io/running-timeout-seconds": "3600"}
    assert obs.labels == {}
    assert obs.containers[0].state == "running"
    assert obs.kafka_key() == "analytics/nightly-report-3"


def test_an_orphan_is_found_by_its_job_name_label() -> None:
    raw = job_pod(1)
    raw["metadata"]["ownerReferences"] = []
    obs = pod_observation(_pod(raw), "modified", NOW)
    assert obs is not None
    assert (obs.job_name, obs.job_uid) == ("nightly-report-1", None)


def test_a_pod_of_no_job_is_not_observed() -> None:
    raw = job_pod(1)
    raw["metadata"]["ownerReferences"] = []
    raw["metadata"]["labels"] = {"app": "web"}
    assert pod_observation(_pod(raw), "added", NOW) is None


def test_terminated_and_waiting_containers_and_unschedulable() -> None:
    raw = job_pod(2, phase="Pending", node=None)
    raw["status"]["containerStatuses"] = [
        {"name": "a", "state": {"terminated": {"exitCode": 137, "reason": "Error"}}},
        {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}},
    ]
    raw["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    ]
    obs = pod_observation(_pod(raw), "modified", NOW)
    assert obs is not None
    assert [(c.state, c.exit_code, c.reason) for c in obs.containers] == [
        ("terminated", 137, "Error"),
        ("waiting", None, "ContainerCreating"),
    ]
    assert obs.unschedulable
    assert obs.node_name is None
    assert PodObserved.model_validate(obs.model_dump()) == obs


def test_an_unknown_phase_is_malformed() -> None:
    raw = job_pod(1, phase="Exploded")
    with pytest.raises(MalformedObject, match="Exploded"):
        pod_observation(_pod(raw), "modified", NOW)


def test_a_resource_version_only_change_is_the_same_fact() -> None:
    raw = job_pod(4)
    newer = copy.deepcopy(raw)
    newer["metadata"]["resourceVersion"] = "999999"
    a = pod_observation(_pod(raw), "added", NOW)
    b = pod_observation(_pod(newer), "modified", NOW)
    assert a is not None and b is not None
    assert same_content(a, b)
    newer["status"]["phase"] = "Failed"
    c = pod_observation(_pod(newer), "modified", NOW)
    assert c is not None and not same_content(a, c)


def test_job_observation() -> None:
    raw = {
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": "7",
            "labels": {"team": "a"},
            "annotations": {"jobreaper.io/kill-timestamp": "2026-01-01T00:00:00Z", "x": "y"},
        },
        "spec": {"activeDeadlineSeconds": 60, "suspend": True},
        "status": {
            "startTime": "2026-11-23T10:00:00Z",
            "active": 2,
            "conditions": [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "lastTransitionTime": "2026-11-23T10:01:00Z",
                }
            ],
        },
    }
    obs = job_observation(msgspec.convert(raw, wire.Job), "modified", NOW)
    assert JobObserved.model_validate(obs.model_dump()) == obs
    assert obs.annotations == {"jobreaper.io/kill-timestamp": "2026-01-01T00:00:00Z"}
    assert obs.labels == {"team": "a"}
    assert obs.suspend and obs.active == 2 and obs.terminating is None
    assert obs.conditions[0].reason == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("ready", "change", "expected"),
    [
        ("True", "modified", "ready"),
        ("False", "modified", "not-ready"),
        ("Unknown", "modified", "unreachable"),
        (None, "added", "unreachable"),
        ("True", "deleted", "gone"),
        ("True", "synthetic-deleted", "gone"),
    ],
)
def test_node_status(ready: str | None, change: Any, expected: str) -> None:
    raw: dict[str, Any] = {
        "metadata": {"name": "n1", "uid": "u", "resourceVersion": "5"},
        "spec": {
            "taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                {"key": "team", "effect": "NoSchedule"},
            ]
        },
        "status": {"conditions": [] if ready is None else [{"type": "Ready", "status": ready}]},
    }
    obs = node_observation(msgspec.convert(raw, wire.Node), change, NOW)
    assert obs.status == expected
    assert obs.taints == ("node.kubernetes.io/unreachable",)
    assert NodeObserved.model_validate(obs.model_dump()) == obs
