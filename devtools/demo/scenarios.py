"""The demo's scenarios: one Job each, what the newcomer is told, and the expected end.

Pods run on kwok, which simulates kubelets: a pod "runs" for the duration in
its ``pod-complete.stage.kwok.x-k8s.io/delay`` annotation (``never``: until
killed) and fails on its ``activeDeadlineSeconds`` as a kubelet would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from schemas.annotations import ENFORCE

Expect = Literal["completes", "killed", "killed-at-time", "force-deleted"]

IMAGE = "registry.invalid/jobreaper/demo:1"  # kwok never pulls images

DELETE_TIMEOUT_S = 4
FORCE_TIMEOUT_S = 6
"""The demo namespace's ladder timeouts (the defaults are 180 s and 900 s), so
the lost-node Job goes through the whole ladder in about 15 s."""
GRACE_S = 5
"""The pods' terminationGracePeriodSeconds (default 30): a graceful deletion sets
``deletionTimestamp`` that far ahead, and the force timeout counts from there."""


@dataclass(frozen=True)
class Scenario:
    job: str
    """The Job's name; also the scenario's name."""
    title: str
    explain: str
    """One line for a newcomer: what happens and what to look at."""
    expect: Expect
    expect_text: str
    runs: str = "never"
    """How long the pod runs by itself (kwok delay), ``never``: until killed."""


FINISHES = Scenario(
    job="finishes",
    title="a normal Job",
    explain="runs 12 s and completes by itself: jobreaper watches it and does nothing",
    expect="completes",
    expect_text="completes by itself, no kill",
    runs="12s",
)
KILL_NOW = Scenario(
    job="kill-now",
    title="killed now",
    explain="`jobreaper kill {ns}/kill-now`: the killer lowers the pod's activeDeadlineSeconds "
    "and the kubelet (kwok) fails it at once; the first rung of the ladder is enough",
    expect="killed",
    expect_text="killed by its deadline",
)
KILL_LATER = Scenario(
    job="kill-later",
    title="kill time ahead",
    explain="`jobreaper kill {ns}/kill-later --at +{later}s`: nothing happens until the due "
    "second (a timer, no polling), then the same ladder; latency = applied - due",
    expect="killed-at-time",
    expect_text="killed at its kill time, not before",
)
NODE_LOST = Scenario(
    job="node-lost",
    title="node lost",
    explain="its node is lost (kwok stops), so no kubelet obeys the deadline and a deletion "
    "hangs (Kubernetes alone leaves the pod Terminating for ever): jobreaper escalates "
    f"deadline -> delete (after {DELETE_TIMEOUT_S} s, or once the node is NotReady) -> force "
    f"delete ({FORCE_TIMEOUT_S} s after the deletion's {GRACE_S} s grace period ran out)",
    expect="force-deleted",
    expect_text="killed: pod force-deleted",
)

SCENARIOS: tuple[Scenario, ...] = (FINISHES, KILL_NOW, KILL_LATER, NODE_LOST)


def demo_config(namespace: str) -> dict[str, Any]:
    """The configuration the demo's config service publishes: built-in defaults, with
    short ladder timeouts for the demo namespace only (a namespace override)."""
    return {
        "overrides": {
            "namespaces": {
                namespace: {
                    "deleteKillingTasksTimeoutSeconds": DELETE_TIMEOUT_S,
                    "forceDeleteTaskTimeoutSeconds": FORCE_TIMEOUT_S,
                }
            }
        }
    }


def job_manifest(scenario: Scenario, node: str) -> dict[str, Any]:
    """The Job of ``scenario``; its pod is pinned to ``node``."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": scenario.job,
            # Opted in, as a user does (the built-in scope is off).
            "labels": {"app.kubernetes.io/part-of": "jobreaper-demo", ENFORCE: "on"},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": {"app.kubernetes.io/part-of": "jobreaper-demo"},
                    "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": scenario.runs},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": GRACE_S,
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [{"name": "main", "image": IMAGE}],
                },
            },
        },
    }
