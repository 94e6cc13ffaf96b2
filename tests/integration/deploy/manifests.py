"""The deployment manifests as the tests use them: rendered by a real kustomize
(or helm, for the chart), moved into a test namespace, applied with server-side apply.

kustomize and helm are built from the Go module proxy by the stack's build machinery
(``jobreaper-dev stack tool kustomize|helm``, cached under ~/.cache/jobreaper/builds).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from kubernetes_asyncio import client

from devtools.stack import build
from devtools.stack.errors import StackError
from devtools.stack.util import say_stderr
from services.runtime.kube import KubeApiError, raw_request
from tests.integration.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
BASE = KUSTOMIZE_DIR / "base"
CHART = ROOT / "deploy" / "helm" / "jobreaper"
OVERLAYS = sorted(p.parent for p in (KUSTOMIZE_DIR / "overlays").glob("*/kustomization.yaml"))
NAMESPACE = "jobreaper"  # the base's namespace
FIELD_MANAGER = "jobreaper-deploy-test"
SERVICES = ("watcher", "killer", "executor", "config")
#: Deployed beside SERVICES, with no Kubernetes access: alerts to a webhook.
NOTIFY = "notify"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool


#: Every kind the manifests may hold; an unknown kind fails the test (add it here).
RESOURCES: dict[tuple[str, str], Resource] = {
    ("v1", "Namespace"): Resource("/api/v1", "namespaces", False),
    ("v1", "ServiceAccount"): Resource("/api/v1", "serviceaccounts", True),
    ("v1", "ConfigMap"): Resource("/api/v1", "configmaps", True),
    ("v1", "Service"): Resource("/api/v1", "services", True),
    ("v1", "PersistentVolumeClaim"): Resource("/api/v1", "persistentvolumeclaims", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): Resource(
        "/apis/networking.k8s.io/v1", "networkpolicies", True
    ),
    ("apps/v1", "Deployment"): Resource("/apis/apps/v1", "deployments", True),
    ("batch/v1", "Job"): Resource("/apis/batch/v1", "jobs", True),
    ("policy/v1", "PodDisruptionBudget"): Resource("/apis/policy/v1", "poddisruptionbudgets", True),
    ("rbac.authorization.k8s.io/v1", "Role"): Resource(
        "/apis/rbac.authorization.k8s.io/v1", "roles", True
    ),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): Resource(
        "/apis/rbac.authorization.k8s.io/v1", "rolebindings", True
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): Resource(
        "/apis/rbac.authorization.k8s.io/v1", "clusterroles", False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): Resource(
        "/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): Resource(
        "/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): Resource(
        "/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", False
    ),
}


def tool_binary(tool: str) -> Path:
    """A deployment tool (kustomize, helm), built or taken from the cache."""
    try:
        built = build.ensure_tool(tool, say_stderr)
    except StackError as e:
        pytest.fail(f"{tool} cannot be built: {e}", pytrace=False)
    return built.bin(build.tool_binary(tool))


def kustomize_binary() -> Path:
    return tool_binary("kustomize")


def helm_binary() -> Path:
    return tool_binary("helm")


def render(kustomize: Path, directory: Path) -> list[Obj]:
    """``kustomize build directory``, parsed."""
    out = subprocess.run(
        [str(kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, f"kustomize build {directory} failed: {out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def resource_of(obj: Obj) -> Resource:
    key = (obj["apiVersion"], obj["kind"])
    assert key in RESOURCES, f"{key} is not known to the deploy tests: add it to RESOURCES"
    return RESOURCES[key]


def retarget(objects: list[Obj], namespace: str, suffix: str) -> list[Obj]:
    """The manifests moved from ``jobreaper`` into ``namespace``; cluster-scoped
    objects get ``-suffix`` so that runs never share (or clobber) one."""
    cluster_scoped = {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["kind"] != "Namespace" and not resource_of(o).namespaced
    }
    out = []
    for original in objects:
        obj = copy.deepcopy(original)
        meta = obj["metadata"]
        if obj["kind"] == "Namespace":
            assert meta["name"] == NAMESPACE
            meta["name"] = namespace
        elif (obj["kind"], meta["name"]) in cluster_scoped:
            meta["name"] = f"{meta['name']}-{suffix}"
        elif resource_of(obj).namespaced:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']} {meta['name']}"
            meta["namespace"] = namespace
        ref = obj.get("roleRef")
        if ref and ref["kind"] == "ClusterRole":
            ref["name"] = f"{ref['name']}-{suffix}"
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["policyName"] = f"{obj['spec']['policyName']}-{suffix}"
        for subject in obj.get("subjects") or ():
            if subject.get("namespace") == NAMESPACE:
                subject["namespace"] = namespace
        out.append(obj)
    return out


def object_path(obj: Obj) -> str:
    resource = resource_of(obj)
    meta = obj["metadata"]
    where = f"/namespaces/{meta['namespace']}" if resource.namespaced else ""
    return f"{resource.prefix}{where}/{resource.plural}/{meta['name']}"


async def apply(api: client.ApiClient, obj: Obj, *, dry_run: bool) -> Obj:
    """Server-side apply of one object; returns what the server answered."""
    query: list[tuple[str, Any]] = [("fieldManager", FIELD_MANAGER)]
    if dry_run:
        query.append(("dryRun", "All"))
    response = await raw_request(
        api,
        "PATCH",
        object_path(obj),
        query=query,
        body=obj,
        content_type="application/apply-patch+yaml",
    )
    try:
        answer: Obj = orjson.loads(await response.read())
    finally:
        response.release()
    return answer


async def delete(api: client.ApiClient, obj: Obj) -> None:
    try:
        response = await raw_request(api, "DELETE", object_path(obj))
        response.release()
    except KubeApiError as exc:
        if exc.status != 404:
            raise


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} in the manifests")


def container_env(objects: list[Obj], pod_spec: Obj, pod_name: str) -> dict[str, str]:
    """The environment the kubelet gives the pod's first container: envFrom
    ConfigMaps, then env (values and the metadata fieldRefs the manifests use)."""
    container = pod_spec["containers"][0]
    env: dict[str, str] = {}
    namespace_of = {o["metadata"].get("namespace") for o in objects} - {None}
    (namespace,) = namespace_of
    for source in container.get("envFrom") or ():
        ref = source["configMapRef"]["name"]
        env.update(find(objects, "ConfigMap", ref)["data"])
    fields = {"metadata.namespace": namespace, "metadata.name": pod_name}
    for var in container.get("env") or ():
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in fields, f"{var['name']}: fieldRef {path} is not resolved by the tests"
            env[var["name"]] = fields[path]
    return env


# -- running the services as the image would ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def jobreaper_command(args: list[Any]) -> list[str]:
    """``jobreaper <args>`` (the image's entry point) as this checkout runs it."""
    args = [str(a) for a in args]
    assert not any("$(" in a for a in args), "the tests do not expand $(VAR) in args"
    return [sys.executable, "-m", "services", *args]


def local_env(declared: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """The declared environment, what the local stack must change on top, and
    nothing from this shell (no admin KUBECONFIG leaking into a service)."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return {**base, **declared, **overrides}


async def run_once(command: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode, out.decode()


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


@contextlib.asynccontextmanager
async def all_ready(
    services: dict[str, tuple[list[str], dict[str, str]]], logs: Path
) -> AsyncIterator[None]:
    """Start each ``name: (command, env)`` (env must set JOBREAPER_HTTP_PORT), wait
    until every one answers ``/readyz`` 200, yield, then stop them with SIGTERM."""
    procs: dict[str, tuple[asyncio.subprocess.Process, int, Path]] = {}
    try:
        for name, (command, env) in services.items():
            log = logs / f"{name}.log"
            with log.open("wb") as out_file:
                proc = await asyncio.create_subprocess_exec(
                    *command, env=env, stdout=out_file, stderr=asyncio.subprocess.STDOUT
                )
            procs[name] = (proc, int(env["JOBREAPER_HTTP_PORT"]), log)
        for name, (proc, port, log) in procs.items():

            async def ready(proc: Any = proc, port: int = port, log: Path = log) -> bool:
                assert proc.returncode is None, f"exited {proc.returncode}: {log.read_text()}"
                return await _ready(port)

            await eventually(f"{name} ready", ready, timeout=180)
        yield
    finally:
        for proc, _, _ in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for name, (proc, _, log) in procs.items():
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                pytest.fail(f"{name} did not stop on SIGTERM: {log.read_text()[-2000:]}")
