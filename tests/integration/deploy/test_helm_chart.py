"""The Helm chart (deploy/helm/jobreaper, issue 19) with a real helm, on the real
local API server, against the kustomize base it must agree with.

- ``helm lint`` and ``helm template`` pass, with the defaults and with every option on;
- every rendered object passes a server-side dry-run apply (dryRun=All);
- the RBAC it renders (ServiceAccounts, Roles, ClusterRoles, bindings) equals the
  kustomize base's, and so do the workloads, the shipped configuration and the
  admission policy (the chart reads the base's policy file itself);
- every value that matters lands where the code reads it: the Kafka bootstrap, a
  per-service SASL password file and the TLS files mounted from the Secrets named,
  accepted by the services' own KafkaSettings; enforce/shadow in the config the
  config service validates; the killer's snapshot volume at its SNAPSHOT_DIR;
  replicas; the notifier's webhook from a Secret file, never a flag.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from services.config.validation import validate_text
from services.runtime.settings import KafkaSettings
from tests.integration.deploy.manifests import (
    BASE,
    CHART,
    NOTIFY,
    SERVICES,
    Obj,
    apply,
    find,
    helm_binary,
    kustomize_binary,
    render,
)

pytestmark = pytest.mark.stack

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
WORKLOADS = (*SERVICES, NOTIFY)
#: Every pod that talks to Kafka: the services and the topics Job.
KAFKA_CLIENTS = (*WORKLOADS, "topics")
#: What the base needs that the defaults leave off: the notifier (it needs a Secret
#: the user creates first, so the chart ships it off).
AS_THE_BASE: dict[str, Any] = {"notify": {"enabled": True}}

#: Every option on (the ServiceMonitor apart: its CRD is not on this cluster).
EVERYTHING: dict[str, Any] = {
    "kafka": {
        "bootstrap": "broker-0.kafka.example:9093,broker-1.kafka.example:9093",
        "topicPrefix": "prod.",
        "jobPartitions": 12,
        "securityProtocol": "SASL_SSL",
        "tls": {"caSecret": "kafka-ca", "caKey": "ca.pem", "clientCertSecret": "kafka-client"},
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "passwordSecret": "kafka-passwords",
            "usernames": {"killer": "svc-killer"},
        },
    },
    "enforce": "shadow",
    "config": {
        "replicas": 3,
        "document": {
            "deleteKillingTasksTimeoutSeconds": 60,
            "overrides": {"namespaces": {"kube-system": {"enforce": "off"}}, "selectors": []},
        },
    },
    "watcher": {"replicas": 1},
    "killer": {
        "replicas": 4,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
        "snapshots": {
            "type": "persistentVolumeClaim",
            "persistentVolumeClaim": {"storageClassName": "shared-nfs", "size": "20Gi"},
            "everyRecords": 20000,
        },
    },
    "executor": {"replicas": 3},
    "notify": {"enabled": True, "webhookSecret": "slack-hook", "webhookKey": "hook-url"},
    "networkPolicy": {
        "enabled": True,
        "kafka": {"to": [{"namespaceSelector": {"matchLabels": {"name": "kafka"}}}]},
        "apiServer": {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}]},
    },
    "extraSettings": {"JOBREAPER_LOG_LEVEL": "debug"},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def helm_template(
    helm: Path,
    tmp_path: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "jobreaper",
    namespace: str = "jobreaper",
    values_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    values_file = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    values_file.write_text(values_text if values_text is not None else yaml.safe_dump(values or {}))
    return subprocess.run(
        [
            str(helm),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(values_file),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def chart(helm: Path, tmp_path: Path, values: dict[str, Any] | None = None, **kw: Any) -> list[Obj]:
    out = helm_template(helm, tmp_path, values, **kw)
    assert out.returncode == 0, f"helm template failed: {out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def pod_of(objects: list[Obj], kind: str, name: str) -> Obj:
    spec: Obj = find(objects, kind, name)["spec"]["template"]["spec"]
    return spec


def env_of(pod: Obj) -> dict[str, Any]:
    """The first container's env entries by name (value or valueFrom)."""
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0].get("env") or ()
    }


def file_source(pod: Obj, path: str) -> tuple[str, str, str]:
    """Where the file ``path`` of the pod's container comes from:
    (volume kind, its Secret/claim name, the key), resolved through the mounts."""
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod.get("volumes") or ()}
    for mount in container.get("volumeMounts") or ():
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = volumes[mount["name"]]
        relative = path[len(prefix) :]
        if "secret" in volume:
            secret = volume["secret"]
            items = {i["path"]: i["key"] for i in secret.get("items") or ()}
            return "secret", secret["secretName"], items.get(relative, relative)
        raise AssertionError(f"{path} is on volume {volume}, not a Secret")
    raise AssertionError(f"no volume is mounted where {path} is read")


# -- renders, lints ------------------------------------------------------------------------


def test_helm_lint_and_template_render(helm: Path, tmp_path: Path) -> None:
    lint = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    defaults = chart(helm, tmp_path)
    kinds = {o["kind"] for o in defaults}
    assert {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "Job"} <= kinds
    assert set(RBAC_KINDS) <= kinds
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    # Off by default: the ServiceMonitor (no CRD on a plain cluster), the network
    # policies (the cluster's addresses are needed), the notifier (a Secret is needed).
    assert not kinds & {"ServiceMonitor", "NetworkPolicy", "PersistentVolumeClaim"}
    assert not [o for o in defaults if o["metadata"]["name"] == "jobreaper-notify"]
    # Every option on renders too, and each option adds what it should.
    everything = chart(helm, tmp_path, {**EVERYTHING, "serviceMonitor": {"enabled": True}})
    kinds = {o["kind"] for o in everything}
    assert {"ServiceMonitor", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds


def test_invalid_values_are_refused_with_a_reason(helm: Path, tmp_path: Path) -> None:
    # YAML reads a bare off as false: the chart says so instead of shipping "false".
    out = helm_template(helm, tmp_path, values_text="enforce: off\n")
    assert out.returncode != 0 and 'quote it: enforce: "off"' in out.stderr, out.stderr
    out = helm_template(helm, tmp_path, {"enforce": "always"})
    assert out.returncode != 0 and "is not one of" in out.stderr, out.stderr
    out = helm_template(helm, tmp_path, {"config": {"document": {"enforce": "on"}}})
    assert out.returncode != 0 and "set the top-level value enforce" in out.stderr
    out = helm_template(helm, tmp_path, {"kafka": {"securityProtocol": "SASL_SSL"}})
    assert out.returncode != 0 and "kafka.sasl.passwordSecret" in out.stderr, out.stderr
    out = helm_template(helm, tmp_path, {"kafka": {"securityProtocol": "TLS"}})
    assert out.returncode != 0 and "kafka.securityProtocol" in out.stderr, out.stderr


# -- the API server accepts it -------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
async def test_every_rendered_object_passes_a_server_side_dry_run_apply(
    helm: Path,
    tmp_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    values: dict[str, Any],
) -> None:
    # A release name of its own: the cluster-scoped objects (ClusterRoles, the
    # admission policy) are named after it, so runs never share one.
    release = f"jr-{uuid.uuid4().hex[:8]}"
    objects = chart(helm, tmp_path, values, release=release, namespace=namespace)
    assert len(objects) >= 20
    for obj in objects:
        answer = await apply(kube_api, obj, dry_run=True)
        assert answer["kind"] == obj["kind"], answer
        assert answer["metadata"]["name"] == obj["metadata"]["name"]
        assert answer["metadata"]["name"].startswith(f"{release}-jobreaper")
    # A dry run persists nothing.
    rbac = client.RbacAuthorizationV1Api(kube_api)
    assert not (await rbac.list_namespaced_role(namespace)).items


# -- the same install as the kustomize base ------------------------------------------------


def _normalized(obj: Obj) -> Obj:
    """What an object does, without what only says where it came from (labels,
    annotations, the chart's release checksum) or helm's pull policy."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    out["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
    template = out.get("spec", {}).get("template")
    if template:
        template.pop("metadata", None)
        for container in template["spec"]["containers"]:
            container.pop("imagePullPolicy", None)
    spec = out.get("spec", {})
    if out["kind"] in ("Deployment", "PodDisruptionBudget"):
        spec.pop("selector", None)  # the chart's also carries app.kubernetes.io/instance
    if out["kind"] == "Service":
        spec.pop("selector", None)
    return out


def test_chart_rbac_and_workloads_equal_the_kustomize_base(helm: Path, tmp_path: Path) -> None:
    base = render(kustomize_binary(), BASE)
    rendered = chart(helm, tmp_path, AS_THE_BASE)

    def by_kind(objects: list[Obj], kinds: tuple[str, ...]) -> dict[tuple[str, str], Obj]:
        return {
            (o["kind"], o["metadata"]["name"]): _normalized(o)
            for o in objects
            if o["kind"] in kinds
        }

    # RBAC: the same accounts, roles, rules and bindings, object for object.
    assert by_kind(rendered, RBAC_KINDS) == by_kind(base, RBAC_KINDS)
    # The workloads: the same pods (image, args, env, probes, resources, security,
    # volumes), replicas, disruption budgets and Services.
    workload_kinds = ("Deployment", "Job", "PodDisruptionBudget", "Service")
    assert by_kind(rendered, workload_kinds) == by_kind(base, workload_kinds)
    # The selectors select the same pods (the chart's add the release's instance).
    for obj in rendered:
        if obj["kind"] in ("Deployment", "PodDisruptionBudget"):
            theirs = find(base, obj["kind"], obj["metadata"]["name"])["spec"]["selector"]
            assert theirs["matchLabels"].items() <= obj["spec"]["selector"]["matchLabels"].items()
    # The shared settings: the base's, plus the security protocol at its default.
    settings = find(rendered, "ConfigMap", "jobreaper-settings")["data"]
    assert settings == {
        **find(base, "ConfigMap", "jobreaper-settings")["data"],
        "JOBREAPER_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    }
    # The shipped configuration, as parsed.
    shipped = [
        json.loads(find(objects, "ConfigMap", "jobreaper-config")["data"]["config.json"])
        for objects in (rendered, base)
    ]
    assert shipped[0] == shipped[1]
    # The admission policy: the base's file itself, and a binding that denies.
    policies = [
        find(objects, "ValidatingAdmissionPolicy", "jobreaper-annotations")["spec"]
        for objects in (rendered, base)
    ]
    assert policies[0] == policies[1]
    bindings = [
        find(objects, "ValidatingAdmissionPolicyBinding", "jobreaper-annotations")["spec"]
        for objects in (rendered, base)
    ]
    assert bindings[0] == bindings[1]
    # Nothing the base has is missing from the chart, but its Namespace (helm
    # install --create-namespace; Pod Security's label is in docs/quickstart.md).
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    missing = {(o["kind"], o["metadata"]["name"]) for o in base} - names
    assert missing == {("Namespace", "jobreaper")}, missing


# -- every value that matters, where the code reads it ------------------------------------


def test_values_are_rendered_where_the_services_read_them(helm: Path, tmp_path: Path) -> None:
    objects = chart(helm, tmp_path, EVERYTHING, release="prod", namespace="batch-system")
    name = "prod-jobreaper"
    settings = find(objects, "ConfigMap", f"{name}-settings")["data"]
    kafka = EVERYTHING["kafka"]
    assert settings["JOBREAPER_KAFKA_BOOTSTRAP"] == kafka["bootstrap"]
    assert settings["JOBREAPER_KAFKA_TOPIC_PREFIX"] == "prod."
    assert settings["JOBREAPER_KAFKA_JOB_PARTITIONS"] == "12"
    assert settings["JOBREAPER_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert settings["JOBREAPER_LOG_LEVEL"] == "debug"

    # Kafka: each client reads its own password, mounted from the Secret named, and the
    # TLS files; the services' own settings accept what the pod would give them.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for component in KAFKA_CLIENTS:
        kind = "Job" if component == "topics" else "Deployment"
        pod = pod_of(objects, kind, f"{name}-{component}")
        container = pod["containers"][0]
        assert container["envFrom"] == [{"configMapRef": {"name": f"{name}-settings"}}]
        env = env_of(pod)
        user = "svc-killer" if component == "killer" else f"jobreaper-{component}"
        assert env["JOBREAPER_KAFKA_SASL_USERNAME"] == user, component
        assert env["JOBREAPER_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert "JOBREAPER_KAFKA_SASL_PASSWORD" not in env  # a file, never a value
        password = env["JOBREAPER_KAFKA_SASL_PASSWORD_FILE"]
        assert file_source(pod, password) == ("secret", "kafka-passwords", component)
        assert file_source(pod, env["JOBREAPER_KAFKA_SSL_CAFILE"]) == (
            "secret",
            "kafka-ca",
            "ca.pem",
        )
        assert file_source(pod, env["JOBREAPER_KAFKA_SSL_CERTFILE"]) == (
            "secret",
            "kafka-client",
            "tls.crt",
        )
        assert file_source(pod, env["JOBREAPER_KAFKA_SSL_KEYFILE"]) == (
            "secret",
            "kafka-client",
            "tls.key",
        )
        # The kubelet's files, here: the code's settings take them.
        files: dict[str, str] = {}
        for var in ("SASL_PASSWORD_FILE", "SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE"):
            local = secrets / f"{component}-{var}"
            local.write_text(f"{component}-secret\n")
            files[var.lower()] = str(local)
        fields = {
            k.removeprefix("JOBREAPER_KAFKA_").lower(): v
            for k, v in {**settings, **env}.items()
            if k.startswith("JOBREAPER_KAFKA_") and isinstance(v, str)
        }
        parsed = KafkaSettings(**{**fields, **files})
        assert parsed.bootstrap == kafka["bootstrap"]
        assert parsed.security_protocol == "SASL_SSL" and parsed.sasl_username == user
        assert parsed.sasl_password is not None
        assert parsed.sasl_password.get_secret_value() == f"{component}-secret"

    # Scope and the rest of the configuration: what the config service reads (the
    # ConfigMap its env names, which its Role lets it list), valid by its own rules.
    config_pod = pod_of(objects, "Deployment", f"{name}-config")
    config_env = env_of(config_pod)
    configmap = find(objects, "ConfigMap", config_env["JOBREAPER_CONFIG_CONFIGMAP_NAME"])
    role = find(objects, "Role", f"{name}-config")
    assert [r["resourceNames"] for r in role["rules"] if "configmaps" in r["resources"]] == [
        [configmap["metadata"]["name"]]
    ]
    report = validate_text(configmap["data"]["config.json"])
    assert report.ok, report.summary()
    assert report.config is not None
    assert report.config.enforce == "shadow"
    document = json.loads(configmap["data"]["config.json"])
    assert document["overrides"]["namespaces"] == {"kube-system": {"enforce": "off"}}
    assert document["deleteKillingTasksTimeoutSeconds"] == 60
    assert document["forceDeleteTaskTimeoutSeconds"] == 900  # the other defaults stay

    # The killer's snapshots: the directory it is told is a mount of the shared claim
    # the chart creates, writable by its group.
    killer = pod_of(objects, "Deployment", f"{name}-killer")
    killer_env = env_of(killer)
    directory = killer_env["JOBREAPER_KILLER_SNAPSHOT_DIR"]
    assert killer_env["JOBREAPER_KILLER_SNAPSHOT_EVERY_RECORDS"] == "20000"
    (mount,) = [m for m in killer["containers"][0]["volumeMounts"] if m["mountPath"] == directory]
    assert not mount.get("readOnly")
    (volume,) = [v for v in killer["volumes"] if v["name"] == mount["name"]]
    claim = find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "shared-nfs"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert killer["securityContext"]["fsGroup"] == 10001
    assert killer["containers"][0]["resources"]["limits"]["memory"] == "3Gi"

    # Replicas.
    replicas = {
        c: find(objects, "Deployment", f"{name}-{c}")["spec"]["replicas"] for c in WORKLOADS
    }
    assert replicas == {"watcher": 1, "killer": 4, "executor": 3, "config": 3, "notify": 1}

    # The notifier: its webhook URL from the Secret named, as a file; no token.
    notify = pod_of(objects, "Deployment", f"{name}-notify")
    assert notify["containers"][0]["args"] == ["notify"]
    webhook = env_of(notify)["JOBREAPER_NOTIFY_WEBHOOK_FILE"]
    assert file_source(notify, webhook) == ("secret", "slack-hook", "hook-url")
    assert notify["automountServiceAccountToken"] is False

    # Network policies: Kafka's and the API server's peers as given.
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    assert policies[f"{name}-dns-kafka"]["egress"][1]["to"] == kafka_peers()
    assert policies[f"{name}-apiserver"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "10.96.0.1/32"}}
    ]


def kafka_peers() -> list[Obj]:
    peers: list[Obj] = EVERYTHING["networkPolicy"]["kafka"]["to"]
    return peers


def test_defaults_snapshot_to_an_empty_dir_and_the_service_monitor_scrapes_every_service(
    helm: Path, tmp_path: Path
) -> None:
    objects = chart(helm, tmp_path, {**AS_THE_BASE, "serviceMonitor": {"enabled": True}})
    killer = pod_of(objects, "Deployment", "jobreaper-killer")
    directory = env_of(killer)["JOBREAPER_KILLER_SNAPSHOT_DIR"]
    (mount,) = [m for m in killer["containers"][0]["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in killer["volumes"] if v["name"] == mount["name"]]
    assert volume == {"name": "snapshots", "emptyDir": {}}
    # The ServiceMonitor selects every service's metrics Service, on its http port.
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        o
        for o in objects
        if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()
    ]
    assert len(selected) == len(WORKLOADS)
    for service in selected:
        assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
