"""The claims a pod mounts reach its observation with their access modes (what the
killer needs to hold back the force deletion of a pod with a ReadWriteOnce claim)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from bench.sample_objects import job_pod
from schemas.observations import PodObserved, VolumeClaim
from services.watcher import wire
from services.watcher.claims import ClaimModes
from services.watcher.convert import pod_observation, same_content

NOW = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
NS = "analytics"


def _claim(name: str, spec: list[str], status: list[str] | None = None, ns: str = NS) -> Any:
    raw: dict[str, Any] = {
        "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}"},
        "spec": {"accessModes": spec},
    }
    if status is not None:
        raw["status"] = {"phase": "Bound", "accessModes": status}
    return msgspec.convert(raw, wire.PersistentVolumeClaim)


def _pod_with_volumes() -> wire.Pod:
    raw = job_pod(1)
    raw["spec"]["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-claim"}},
        {"name": "shared", "persistentVolumeClaim": {"claimName": "shared-claim"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"name": "config", "configMap": {"name": "c"}},
        {"name": "missing", "persistentVolumeClaim": {"claimName": "never-seen"}},
    ]
    return msgspec.convert(raw, wire.Pod)


def test_a_pods_claims_carry_the_access_modes_the_watcher_saw() -> None:
    pod = _pod_with_volumes()
    modes = ClaimModes()
    name = pod.metadata.name
    modes.on_list(
        None,
        [
            _claim("data-claim", ["ReadWriteOnce"]),
            # bound: the volume's modes win over those asked for
            _claim("shared-claim", ["ReadWriteOnce"], ["ReadWriteMany"]),
            _claim(f"{name}-scratch", ["ReadWriteOncePod"]),
            _claim("never-seen", ["ReadWriteMany"], ns="elsewhere"),  # another namespace
        ],
    )
    obs = pod_observation(pod, "modified", NOW, None, modes.claims_of)
    assert obs is not None
    assert obs.claims == (
        VolumeClaim(name="data-claim", access_modes=("ReadWriteOnce",)),
        VolumeClaim(name="shared-claim", access_modes=("ReadWriteMany",)),
        VolumeClaim(name=f"{name}-scratch", access_modes=("ReadWriteOncePod",)),
        VolumeClaim(name="never-seen", access_modes=()),  # not seen: the worst case
    )
    assert PodObserved.model_validate_json(obs.model_dump_json()) == obs


def test_watch_events_update_the_modes_and_a_list_replaces_its_namespace() -> None:
    modes = ClaimModes()
    modes.on_list(NS, [_claim("a", ["ReadWriteOnce"])])
    modes.on_list("other", [_claim("b", ["ReadOnlyMany"], ns="other")])
    modes.on_event("ADDED", _claim("c", ["ReadWriteMany"]))
    assert modes.modes == {
        (NS, "a"): ("ReadWriteOnce",),
        ("other", "b"): ("ReadOnlyMany",),
        (NS, "c"): ("ReadWriteMany",),
    }
    modes.on_event("DELETED", _claim("a", ["ReadWriteOnce"]))
    modes.on_list(NS, [_claim("d", ["ReadWriteOnce"])])  # a re-list of one namespace
    assert modes.modes == {("other", "b"): ("ReadOnlyMany",), (NS, "d"): ("ReadWriteOnce",)}


def test_a_pod_without_volumes_has_no_claims_and_modes_learnt_later_are_new_content() -> None:
    assert pod_observation(msgspec.convert(job_pod(2), wire.Pod), "added", NOW).claims == ()  # type: ignore[union-attr]
    pod = _pod_with_volumes()
    before = pod_observation(pod, "modified", NOW)  # the default: no claim seen
    modes = ClaimModes()
    modes.on_event("ADDED", _claim("data-claim", ["ReadWriteMany"]))
    after = pod_observation(pod, "modified", NOW, None, modes.claims_of)
    assert before is not None and after is not None
    assert not same_content(before, after), "the pod's next change publishes the modes"
