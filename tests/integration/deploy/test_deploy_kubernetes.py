"""The Kubernetes manifests (issue 9) on the real local API server.

- rendered by a real kustomize, every object is accepted by a server-side dry-run apply;
- the RBAC, applied for real in a test namespace, allows each ServiceAccount exactly
  what its service calls (SubjectAccessReview) and nothing of a sample of the rest;
- the services, started with the Deployments' environment and their ServiceAccount's
  token, become ready on the local stack.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from services.config.settings import WRITE_GROUP, WRITE_RESOURCE, WRITE_VERB
from services.runtime.kube import request_json
from tests.integration.deploy.manifests import (
    BASE,
    NOTIFY,
    OVERLAYS,
    SERVICES,
    Obj,
    all_ready,
    apply,
    container_env,
    delete,
    find,
    free_port,
    jobreaper_command,
    kustomize_binary,
    local_env,
    render,
    retarget,
    run_once,
)
from tests.integration.helpers import eventually, service_account_kubeconfig

pytestmark = pytest.mark.stack

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


@pytest.fixture(scope="module")
def kustomize() -> Path:
    return kustomize_binary()


# -- every object accepted -----------------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.name)
async def test_every_object_passes_a_server_side_dry_run_apply(
    kustomize: Path, kube_api: client.ApiClient, namespace: str, directory: Path
) -> None:
    objects = retarget(render(kustomize, directory), namespace, uuid.uuid4().hex[:8])
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "PodDisruptionBudget", "Service", "ConfigMap"} <= kinds
    assert kinds >= set(RBAC_KINDS)
    # The admission policy is part of every install (tests/.../test_admission_policy.py).
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    for obj in objects:
        answer = await apply(kube_api, obj, dry_run=True)
        assert answer["kind"] == obj["kind"]
        assert answer["metadata"]["name"] == obj["metadata"]["name"]
    # A dry run persists nothing.
    rbac = client.RbacAuthorizationV1Api(kube_api)
    assert not (await rbac.list_namespaced_role(namespace)).items


def test_deployments_are_locked_down(kustomize: Path) -> None:
    """The pod settings the issue asks for, on every Deployment and the topics Job."""
    objects = render(kustomize, BASE)
    workloads = [o for o in objects if o["kind"] in ("Deployment", "Job")]
    assert {o["metadata"]["name"] for o in workloads} == {
        *(f"jobreaper-{s}" for s in (*SERVICES, NOTIFY)),
        "jobreaper-topics",
    }
    for obj in workloads:
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        if obj["kind"] == "Deployment":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
            settings = find(objects, "ConfigMap", "jobreaper-settings")["data"]
            assert port == int(settings["JOBREAPER_HTTP_PORT"])
            assert settings["JOBREAPER_HTTP_HOST"] == "0.0.0.0"
            name = obj["metadata"]["name"]
            labels = obj["spec"]["selector"]["matchLabels"]
            pdb = find(objects, "PodDisruptionBudget", name)
            assert pdb["spec"]["selector"]["matchLabels"] == labels
            assert any(
                o["kind"] == "Service" and o["spec"]["selector"] == labels for o in objects
            ), f"no Service for {name}'s /metrics"
    # The killer's token reads the API server's clock and nothing else, the notifier
    # calls no Kubernetes API at all: no binding names either.
    bound = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(
            s.get("name") in ("jobreaper-killer", f"jobreaper-{NOTIFY}")
            for s in o.get("subjects", [])
        )
    ]
    assert bound == [], f"the killer and the notifier need no RBAC: {bound}"
    notify = find(objects, "Deployment", f"jobreaper-{NOTIFY}")["spec"]["template"]["spec"]
    assert notify["automountServiceAccountToken"] is False
    # Its webhook URL is a secret: a file from a Secret, never an argument.
    (container,) = notify["containers"]
    assert container["args"] == [NOTIFY]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOBREAPER_NOTIFY_WEBHOOK_FILE"]["value"] == "/etc/jobreaper/webhook/url"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "webhook"]
    assert mount == {"name": "webhook", "mountPath": "/etc/jobreaper/webhook", "readOnly": True}
    (volume,) = [v for v in notify["volumes"] if v["name"] == "webhook"]
    assert volume["secret"]["items"] == [{"key": "url", "path": "url"}]
    # The killer snapshots its state where a volume is mounted (docs/killer.md).
    killer = find(objects, "Deployment", "jobreaper-killer")["spec"]["template"]["spec"]
    (container,) = killer["containers"]
    env = {e["name"]: e for e in container["env"]}
    directory = env["JOBREAPER_KILLER_SNAPSHOT_DIR"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert {"name": mount["name"], "emptyDir": {}} in killer["volumes"]


# -- RBAC: exactly what the code calls -----------------------------------------------------

Scope = str  # "cluster" (ClusterRoleBinding) or "namespace" (RoleBinding, its namespace)
Grant = tuple[Scope, str, str, str, str | None]  # scope, apiGroup, resource, verb, name

#: What each ServiceAccount is granted, derived from the API calls in services/:
#: watcher stream.py (list, watch; persistentvolumeclaims for claims.py)
#: + annotation_events.py (events.k8s.io POST)
#: + runtime/lease.py (GET/PUT by name, POST);
#: executor apply.py (GET, PATCH, DELETE a pod) + job.py (GET a Job, PATCH its status;
#: annotate-job: PATCH its jobreaper.io/kill-* annotations)
#: + events.py (events.k8s.io POST);
#: config sources.py (list/watch with fieldSelector metadata.name, core Events POST)
#: + lease.py + runtime/kube_auth.py (TokenReview, SubjectAccessReview: cluster-scoped
#: creates, for PUT /config with source=http); killer: GET /version only (its clock; no RBAC).
GRANTS: dict[str, set[Grant]] = {
    "watcher": {
        *(
            ("cluster", "", r, v, None)
            for r in ("pods", "nodes", "persistentvolumeclaims")
            for v in ("list", "watch")
        ),
        *(("cluster", "batch", "jobs", v, None) for v in ("list", "watch")),
        ("cluster", "events.k8s.io", "events", "create", None),
        ("namespace", "coordination.k8s.io", "leases", "create", None),
        *(
            ("namespace", "coordination.k8s.io", "leases", v, "jobreaper-watcher")
            for v in ("get", "update")
        ),
    },
    "executor": {
        *(("cluster", "", "pods", v, None) for v in ("get", "patch", "delete")),
        *(("cluster", "batch", "jobs", v, None) for v in ("get", "patch")),
        ("cluster", "batch", "jobs/status", "patch", None),
        ("cluster", "events.k8s.io", "events", "create", None),
    },
    "config": {
        *(("namespace", "", "configmaps", v, "jobreaper-config") for v in ("list", "watch")),
        ("namespace", "", "events", "create", None),
        ("namespace", "coordination.k8s.io", "leases", "create", None),
        *(
            ("namespace", "coordination.k8s.io", "leases", v, "jobreaper-config")
            for v in ("get", "update")
        ),
        ("cluster", "authentication.k8s.io", "tokenreviews", "create", None),
        ("cluster", "authorization.k8s.io", "subjectaccessreviews", "create", None),
    },
    "killer": set(),
}

CLUSTER_SCOPED = ("nodes", "tokenreviews", "subjectaccessreviews")

# (verb, group, resource, namespace, name, subresource); namespace "OWN" is the
# install's namespace, "OTHER" some other one, "" all namespaces / cluster-scoped.
Check = tuple[str, str, str, str, str, str]


def _allowed_checks(account: str) -> list[Check]:
    """Each grant exercised: cluster-wide grants in another namespace and across all."""
    checks: list[Check] = []
    for scope, group, resource, verb, name in GRANTS[account]:
        places = ["OWN"] if scope == "namespace" else ["OTHER", "OWN"]
        if scope == "cluster" and verb in ("list", "watch"):
            places.append("")  # all namespaces (or a cluster-scoped resource)
        if resource in CLUSTER_SCOPED:
            places = [""]
        base, _, subresource = resource.partition("/")  # "jobs/status"
        for where in places:
            checks.append((verb, group, base, where, name or "", subresource))
    return checks


DENIED_FOR_ALL: list[Check] = [
    ("get", "", "secrets", "OWN", "", ""),
    ("list", "", "secrets", "", "", ""),
    ("watch", "", "secrets", "OTHER", "", ""),
    ("*", "", "pods", "OWN", "", ""),
    ("get", "*", "*", "OWN", "", ""),
    ("create", "", "pods", "OWN", "", ""),
    ("create", "", "pods", "OWN", "x", "eviction"),
    ("deletecollection", "", "pods", "OWN", "", ""),
    ("delete", "batch", "jobs", "OTHER", "x", ""),
    ("update", "batch", "jobs", "OWN", "x", ""),
    ("patch", "", "nodes", "", "x", ""),
    ("update", "coordination.k8s.io", "leases", "OTHER", "jobreaper-watcher", ""),
    ("create", "coordination.k8s.io", "leases", "OTHER", "", ""),
    ("update", "", "configmaps", "OWN", "jobreaper-config", ""),
    ("impersonate", "", "serviceaccounts", "OWN", "", ""),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "OWN", "", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", ""),
    # Nobody of jobreaper's own may write the configuration through the API.
    ("update", "jobreaper.io", "configs", "OWN", "", ""),
    ("update", "jobreaper.io", "configs", "", "", ""),
]

DENIED: dict[str, list[Check]] = {
    "watcher": [
        ("get", "", "pods", "OTHER", "x", ""),
        ("delete", "", "pods", "OWN", "x", ""),
        ("update", "coordination.k8s.io", "leases", "OWN", "jobreaper-config", ""),
        ("list", "", "configmaps", "OWN", "", ""),
        ("create", "", "events", "OWN", "", ""),  # it writes events.k8s.io only
        ("update", "events.k8s.io", "events", "OTHER", "x", ""),  # create, never change
        ("list", "events.k8s.io", "events", "", "", ""),
        ("create", "authentication.k8s.io", "tokenreviews", "", "", ""),
    ],
    "executor": [
        ("list", "", "pods", "", "", ""),
        ("watch", "", "pods", "OWN", "", ""),
        ("update", "", "pods", "OWN", "x", ""),
        ("create", "", "events", "OWN", "", ""),  # it writes events.k8s.io only
        ("list", "", "nodes", "", "", ""),
        ("get", "coordination.k8s.io", "leases", "OWN", "jobreaper-watcher", ""),
        ("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""),
        # fail-job writes the status, annotate-job patches metadata: never an update
        ("update", "batch", "jobs", "OWN", "x", "status"),
        ("get", "batch", "jobs", "OWN", "x", "status"),
        ("list", "batch", "jobs", "", "", ""),
    ],
    "config": [
        ("list", "", "configmaps", "OWN", "", ""),  # only its own, by name
        ("get", "", "configmaps", "OWN", "other", ""),
        ("list", "", "configmaps", "OTHER", "jobreaper-config", ""),
        ("update", "coordination.k8s.io", "leases", "OWN", "jobreaper-watcher", ""),
        ("create", "", "events", "OTHER", "", ""),
        ("create", "events.k8s.io", "events", "OTHER", "", ""),
        ("delete", "", "pods", "OWN", "x", ""),
    ],
    "killer": [
        ("list", "", "pods", "", "", ""),
        ("list", "", "configmaps", "OWN", "jobreaper-config", ""),
        ("create", "coordination.k8s.io", "leases", "OWN", "", ""),
        ("get", "coordination.k8s.io", "leases", "OWN", "jobreaper-watcher", ""),
        ("create", "", "events", "OWN", "", ""),
        ("create", "authentication.k8s.io", "tokenreviews", "", "", ""),
        ("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""),
    ],
}


def _grants_in(objects: list[Obj], account: str) -> set[Grant]:
    """What the manifests bind to ``jobreaper-<account>``, rule by rule, flattened."""
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if "rules" in o}
    out: set[Grant] = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == f"jobreaper-{account}"
            for s in binding["subjects"]
        ):
            continue
        scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else "namespace"
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [None]:
                            out.add((scope, group, resource, verb, name))
    return out


def test_rbac_grants_exactly_what_the_code_calls(kustomize: Path) -> None:
    objects = render(kustomize, BASE)
    for account in SERVICES:
        assert _grants_in(objects, account) == GRANTS[account], account
    for role in (o for o in objects if "rules" in o):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in (rule.get(key) or ()), f"wildcard in {role['metadata']['name']}"
            assert "secrets" not in rule["resources"]
            assert not rule.get("nonResourceURLs")
    # The example role for writers of PUT /config: what the code asks (a
    # SubjectAccessReview), and nothing else; bound to none of jobreaper's accounts.
    writer = find(objects, "ClusterRole", "jobreaper-config-writer")
    assert writer["rules"] == [
        {"apiGroups": [WRITE_GROUP], "resources": [WRITE_RESOURCE], "verbs": [WRITE_VERB]}
    ]
    assert not [
        o
        for o in objects
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and o["roleRef"]["name"] == "jobreaper-config-writer"
    ]
    config = find(objects, "Deployment", "jobreaper-config")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in config["containers"][0]["env"]}
    assert env["JOBREAPER_CONFIG_API_AUTH"]["value"] == "kubernetes"
    assert env["JOBREAPER_CONFIG_API_AUTH_NAMESPACE"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.namespace"
    }


@pytest_asyncio.fixture(loop_scope="session")
async def installed(
    kustomize: Path, kube_api: client.ApiClient, namespace: str
) -> AsyncIterator[list[Obj]]:
    """The RBAC objects and ConfigMaps of the base applied for real in ``namespace``
    (cluster-scoped ones suffixed and deleted afterwards)."""
    objects = retarget(render(kustomize, BASE), namespace, namespace)
    wanted = [o for o in objects if o["kind"] in (*RBAC_KINDS, "ConfigMap")]
    applied: list[Obj] = []
    try:
        for obj in wanted:
            await apply(kube_api, obj, dry_run=False)
            applied.append(obj)
        yield objects
    finally:
        for obj in applied:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                await delete(kube_api, obj)


async def _review(
    api: client.ApiClient, namespace: str, account: str, check: Check, other: str
) -> bool:
    verb, group, resource, where, name, subresource = check
    attributes: dict[str, Any] = {"verb": verb, "group": group, "resource": resource}
    if where:
        attributes["namespace"] = namespace if where == "OWN" else other
    if name:
        attributes["name"] = name
    if subresource:
        attributes["subresource"] = subresource
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:jobreaper-{account}",
            # The groups a ServiceAccount token carries: default grants count too.
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    answer = orjson.loads(
        await request_json(
            api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
        )
    )
    return bool(answer["status"].get("allowed"))


@pytest.mark.parametrize("account", SERVICES)
async def test_each_service_account_is_allowed_what_it_needs_and_denied_the_rest(
    kube_api: client.ApiClient, namespace: str, installed: list[Obj], account: str
) -> None:
    other = "kube-system"

    async def allowed_all(checks: list[Check]) -> list[tuple[Check, bool]]:
        return [(c, await _review(kube_api, namespace, account, c, other)) for c in checks]

    # RBAC is read from the API server's informer cache: poll until the bindings
    # just applied are seen (one grant allowed), then judge every row once.
    needed = _allowed_checks(account)
    if needed:
        await eventually(
            f"the RBAC of {account} in effect",
            lambda: _review(kube_api, namespace, account, needed[0], other),
        )
    else:  # the killer: wait until another account's grant shows, so a deny is real
        await eventually(
            "the RBAC of the watcher in effect",
            lambda: _review(kube_api, namespace, "watcher", _allowed_checks("watcher")[0], other),
        )
    refused = [c for c, ok in await allowed_all(needed) if not ok]
    assert not refused, f"{account} is denied what it needs: {refused}"
    leaked = [c for c, ok in await allowed_all(DENIED_FOR_ALL + DENIED[account]) if ok]
    assert not leaked, f"{account} is allowed what it must not do: {leaked}"


# -- the services become ready with the manifests' settings --------------------------------


@pytest.mark.exclusive(
    "its services watch every namespace, and its killer and executor act on what they see"
)
async def test_services_with_the_manifests_settings_become_ready(
    stack: StackInfo,
    kube_api: client.ApiClient,
    namespace: str,
    topic_prefix: str,
    installed: list[Obj],
    tmp_path: Path,
) -> None:
    objects = installed
    isolation = uuid.uuid4().hex[:8]
    local = {
        # The local stack instead of the cluster's Kafka, and a topic prefix (plus
        # consumer groups) of this test's own; one broker, so one replica per topic.
        "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
        "JOBREAPER_TOPICS_REPLICATION_FACTOR": "1",
        "JOBREAPER_KILLER_GROUP_ID": f"deploy-killer-{isolation}",
        "JOBREAPER_EXECUTOR_GROUP_ID": f"deploy-executor-{isolation}",
        "JOBREAPER_CONFIG_API_PORT": "0",
        # This watcher watches the whole shared stack: it must not put Warning Events
        # about invalid annotations on other tests' Jobs (the grant is checked above
        # by SubjectAccessReview; the Events by tests/integration/watcher).
        "JOBREAPER_WATCHER_EVENTS": "false",
    }

    # The topics first, as the Job does (the services are told not to create them).
    job = find(objects, "Job", "jobreaper-topics")["spec"]["template"]["spec"]
    env = local_env(container_env(objects, job, "jobreaper-topics-test"), local)
    assert env["JOBREAPER_KAFKA_CREATE_TOPICS"] == "false"
    code, output = await run_once(jobreaper_command(job["containers"][0]["args"]), env)
    assert code == 0, output

    services: dict[str, tuple[list[str], dict[str, str]]] = {}
    for service in SERVICES:
        name = f"jobreaper-{service}"
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        overrides = {**local, "JOBREAPER_HTTP_PORT": str(free_port())}
        if pod.get("automountServiceAccountToken") is not False:
            # What the pod's mounted token allows, and not a bit more.
            kubeconfig = await service_account_kubeconfig(
                kube_api, stack, namespace, pod["serviceAccountName"], tmp_path / service
            )
            overrides["JOBREAPER_KUBECONFIG"] = str(kubeconfig)
        env = local_env(container_env(objects, pod, f"{name}-0"), overrides)
        services[service] = (jobreaper_command(pod["containers"][0]["args"]), env)
    # The notifier: its webhook file where the Secret would be mounted (it needs no
    # token; readiness is its consumer group's assignment, no POST is made).
    pod = find(objects, "Deployment", f"jobreaper-{NOTIFY}")["spec"]["template"]["spec"]
    webhook = tmp_path / "webhook-url"
    webhook.write_text("http://127.0.0.1:9/hook\n")
    env = local_env(
        container_env(objects, pod, f"jobreaper-{NOTIFY}-0"),
        {
            **local,
            "JOBREAPER_HTTP_PORT": str(free_port()),
            "JOBREAPER_NOTIFY_WEBHOOK_FILE": str(webhook),
            "JOBREAPER_NOTIFY_GROUP_ID": f"deploy-notify-{isolation}",
        },
    )
    services[NOTIFY] = (jobreaper_command(pod["containers"][0]["args"]), env)
    async with all_ready(services, tmp_path):
        pass
