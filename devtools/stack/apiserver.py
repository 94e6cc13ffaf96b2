"""kube-apiserver: TLS on loopback, client-certificate auth, RBAC, a JSON audit log.

Once it is ready, the admin kubeconfig and the components' kubeconfigs are written
(they name its port).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from devtools.stack import config
from devtools.stack.build import Build
from devtools.stack.certs import Pki
from devtools.stack.kuberest import KubeRest
from devtools.stack.launch import Launcher
from devtools.stack.layout import State
from devtools.stack.util import elapsed

#: Who gets a kubeconfig of their own (a client certificate each) besides the admin.
COMPONENT_USERS = ("kube-controller-manager", "kube-scheduler", "kwok")

AUDIT_POLICY = """\
# Audit policy of the jobreaper local stack.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
# Noise: node leases (renewed every 2 s per node) and health probes.
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi/*", "/metrics"]
# Pods in full detail: delete options (grace period, preconditions) and patch
# bodies (activeDeadlineSeconds) are what jobreaper's tests check; the response
# (the pod as written: uid, resourceVersion) lets bench_watcher match each write
# to the watcher's observation of it.
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods", "pods/status", "pods/binding", "pods/eviction"]
- level: Metadata
"""


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, pki: Pki, who: str, port: int, cluster: str) -> None:
    """A kubeconfig for ``who`` (its client certificate, inline) on the stack's API server."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": _b64(pki.ca_crt),
                },
            }
        ],
        "users": [
            {
                "name": who,
                "user": {
                    "client-certificate-data": _b64(pki.client_crt(who)),
                    "client-key-data": _b64(pki.client_key(who)),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": who}}],
        "current-context": cluster,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    tmp.chmod(0o600)
    tmp.replace(path)


def ready_check(ports: Mapping[str, int], pki: Pki) -> Callable[[], bool]:
    """``/readyz`` answers 200 (to the admin), on whatever port ``ports`` holds now."""
    rest = KubeRest(0, pki, timeout=3)

    def ready() -> bool:
        rest.port = ports["apiserver"]
        return rest.readyz()

    return ready


def start(launcher: Launcher, state: State, kube: Build, pki: Pki, taken: set[int]) -> None:
    """Start the API server on a free port; once ready, write the kubeconfigs."""
    layout = launcher.layout
    policy = layout.conf / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    t0 = time.monotonic()

    def spawn() -> None:
        launcher.spawn(
            "kube-apiserver",
            [
                str(kube.bin("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={state.ports['apiserver']}",
                f"--cert-dir={layout.root / 'pki-runtime'}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_crt}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={config.SERVICE_CLUSTER_IP_RANGE}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={layout.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=3",
                # The kubernetes Service's endpoints cannot point at loopback.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--event-ttl=1h",
            ],
        )

    launcher.start_with_port_retry(
        "kube-apiserver",
        state,
        ("apiserver",),
        taken,
        spawn,
        ready_check(state.ports, pki),
        timeout=120,
    )
    port = state.ports["apiserver"]
    cluster = f"jobreaper-{launcher.name}"
    write_kubeconfig(layout.kubeconfig, pki, "admin", port, cluster)
    for who in COMPONENT_USERS:
        write_kubeconfig(layout.component_kubeconfig(who), pki, who, port, cluster)
    launcher.say(
        f"  kube-apiserver {kube.version} ready on https://127.0.0.1:{port} ({elapsed(t0)})"
    )
