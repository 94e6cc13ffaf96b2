"""jobreaper as it ships, on the local stack: the image built without Docker
(``devtools/stack/appimage.py``), imported into the real node's containerd, and the
manifests of ``deploy/kubernetes/overlays/local-stack`` applied as they are, with a
kustomization of this run on top for what differs per stack and run (the API
server's and Kafka's ports, the image's tag, a topic prefix and consumer groups of
its own, the ladder's timeouts and which Jobs it may act on).

The shared stack runs other tests beside this one: the services deployed here act
only on Jobs carrying :data:`RUN_LABEL` with this run's value (a selector override
sets ``enforce: on`` for them), and every Job that opts itself in by its label is
pinned off (selector overrides beat a Job's label, docs/config.md "Scope"). The
admission policy of the base is left out: it is cluster-wide and would refuse other
tests' deliberately invalid annotations (``tests/integration/deploy`` tests it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from schemas.annotations import ENFORCE
from services.runtime.kube import KubeApiError
from tests.integration.deploy.manifests import ROOT, apply, delete, render
from tests.integration.helpers import eventually

OVERLAY = ROOT / "deploy" / "kubernetes" / "overlays" / "local-stack"
NAMESPACE = "jobreaper"
SERVICES = ("watcher", "killer", "executor", "config")
RUN_LABEL = "jobreaper.test/in-cluster"
#: Applied by the test's own means: cluster-wide, see the module docstring.
LEFT_OUT = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")

Obj = dict[str, Any]


def user(service: str) -> str:
    """The API server's name for a service's pods: its ServiceAccount."""
    return f"system:serviceaccount:{NAMESPACE}:jobreaper-{service}"


def config_for(run_id: str, **settings: Any) -> dict[str, Any]:
    """The shipped config.json with ``settings`` on top, scoped to this run's Jobs."""
    return {
        "killMethod": "activeDeadline",
        "deleteKillingTasksTimeoutSeconds": 180,
        "forceDeleteTaskTimeoutSeconds": 900,
        "defaultPendingTimeoutSeconds": 900,
        "forceDeletePolicy": "afterTimeout",
        "fenceUnreachableAfterSeconds": 0,
        "maxForceDeletionsPerSecondPerPartition": 20,
        "enforce": "off",
        **settings,
        "overrides": {
            "namespaces": {},
            "selectors": [
                {"matchLabels": {ENFORCE: "on"}, "settings": {"enforce": "off"}},
                {"matchLabels": {ENFORCE: "shadow"}, "settings": {"enforce": "off"}},
                {"matchLabels": {RUN_LABEL: run_id}, "settings": {"enforce": "on"}},
            ],
        },
    }


def render_run(
    kustomize: Path,
    workdir: Path,
    stack: StackInfo,
    *,
    image_ref: str,
    topic_prefix: str,
    run_id: str,
    config: dict[str, Any],
) -> list[Obj]:
    """The overlay with this stack's and this run's values, rendered by kustomize."""
    repository, tag = image_ref.rsplit(":", 1)
    api_port = stack.api_server.rsplit(":", 1)[1]
    settings = [
        ("replace", "JOBREAPER_KAFKA_BOOTSTRAP", stack.kafka_bootstrap),
        ("replace", "KUBERNETES_SERVICE_PORT", api_port),
        ("replace", "JOBREAPER_KAFKA_TOPIC_PREFIX", topic_prefix),
        # This run's consumer groups, and no Warning Events on other tests' Jobs.
        ("add", "JOBREAPER_KILLER_GROUP_ID", f"in-cluster-killer-{run_id}"),
        ("add", "JOBREAPER_EXECUTOR_GROUP_ID", f"in-cluster-executor-{run_id}"),
        ("add", "JOBREAPER_WATCHER_EVENTS", "false"),
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes no absolute path here; a relative one may leave the folder.
        "resources": [os.path.relpath(OVERLAY, workdir)],
        "images": [{"name": repository, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "ConfigMap", "name": "jobreaper-settings"},
                "patch": json.dumps(
                    [{"op": op, "path": f"/data/{k}", "value": v} for op, k, v in settings]
                ),
            },
            {
                "target": {"kind": "ConfigMap", "name": "jobreaper-config"},
                "patch": json.dumps(
                    [
                        {
                            "op": "replace",
                            "path": "/data/config.json",
                            "value": json.dumps(config, indent=2),
                        }
                    ]
                ),
            },
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(kustomize, workdir)


def host_ports(objects: list[Obj]) -> list[int]:
    """The ports the overlay's pods take on the real node's (the host's) network."""
    return sorted(
        port["containerPort"]
        for o in objects
        if o["kind"] == "Deployment"
        for port in o["spec"]["template"]["spec"]["containers"][0].get("ports") or ()
    )


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _namespace_gone(core: client.CoreV1Api) -> bool:
    try:
        await core.read_namespace(NAMESPACE)
    except client.ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


async def undeploy(kube_api: client.ApiClient, objects: list[Obj], *, timeout: float = 90) -> None:
    """Delete what :func:`deploy` applied and wait until the namespace (and with it
    every pod on the real node) is gone."""
    core = client.CoreV1Api(kube_api)
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            await delete(kube_api, obj)
    with contextlib.suppress(client.ApiException):
        await core.delete_namespace(NAMESPACE)

    async def gone() -> bool:
        return await _namespace_gone(core)

    await eventually(f"namespace {NAMESPACE} deleted", gone, timeout=timeout)


@dataclass(frozen=True)
class Deployed:
    objects: list[Obj]
    #: pod -> seconds from its creation to its Ready condition (the API server's clock)
    ready_after: dict[str, float]
    #: seconds from the first apply to every service pod Ready (this process's clock)
    all_ready_s: float
    #: when the first object was applied (RFC 3339)
    started: str


async def deploy(kube_api: client.ApiClient, objects: list[Obj]) -> Deployed:
    """Apply the rendered manifests (server-side apply), the topics Job first; wait
    until it completes and one pod of each service is Ready."""
    core = client.CoreV1Api(kube_api)
    if not await _namespace_gone(core):  # a run that was interrupted before its cleanup
        await undeploy(kube_api, objects)
    t0 = time.monotonic()
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    wanted = [o for o in objects if o["kind"] not in LEFT_OUT]
    later = [o for o in wanted if o["kind"] == "Deployment"]
    for obj in [o for o in wanted if o["kind"] != "Deployment"]:
        await _apply_retrying(kube_api, obj)

    async def topics_created() -> bool:
        job = await client.BatchV1Api(kube_api).read_namespaced_job("jobreaper-topics", NAMESPACE)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

    await eventually("the topics Job completed", topics_created, timeout=90)
    for obj in later:
        await _apply_retrying(kube_api, obj)

    async def all_ready() -> dict[str, float] | None:
        pods = (await core.list_namespaced_pod(NAMESPACE)).items
        ready: dict[str, float] = {}
        for service in SERVICES:
            mine = [
                p
                for p in pods
                if (p.metadata.labels or {}).get("app.kubernetes.io/name") == f"jobreaper-{service}"
            ]
            for pod in mine:
                for cond in pod.status.conditions or []:
                    if cond.type == "Ready" and cond.status == "True":
                        ready[pod.metadata.name] = (
                            cond.last_transition_time - pod.metadata.creation_timestamp
                        ).total_seconds()
            if not any(p.metadata.name in ready for p in mine):
                return None
        return ready

    ready = await eventually("one pod of each service Ready", all_ready, timeout=120)
    return Deployed(objects, ready, time.monotonic() - t0, started)


async def _apply_retrying(kube_api: client.ApiClient, obj: Obj) -> None:
    """Server-side apply; a namespaced object right after its Namespace, or a pod
    before the namespace's ServiceAccount exists, may be refused for a moment."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await apply(kube_api, obj, dry_run=False)
            return
        except KubeApiError as exc:
            if time.monotonic() > deadline or exc.status not in (403, 404, 409, 500):
                raise
            await asyncio.sleep(0.5)


def audit_events_by(
    audit_log: Path,
    usernames: set[str],
    since: str,
    stages: tuple[str, ...] = ("ResponseComplete",),
) -> list[dict[str, Any]]:
    """Requests of these users received after ``since`` (an RFC 3339 timestamp; the
    API server runs on this machine's clock), from the stack's audit log. A watch is
    logged ``ResponseStarted`` when it starts and ``ResponseComplete`` when it ends."""
    found: list[dict[str, Any]] = []
    needles = [f'"{name}"' for name in usernames]
    with audit_log.open() as f:
        for line in f:
            if not any(n in line for n in needles):
                continue
            event = json.loads(line)
            if (
                event.get("stage") in stages
                and event.get("user", {}).get("username") in usernames
                and event.get("requestReceivedTimestamp", "") >= since
            ):
                found.append(event)
    return found
