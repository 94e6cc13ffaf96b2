"""Where the stack's sources, build cache and per-stack state live, and the versions.

Versions are read from the files that pin them (the wrapper ``go.mod`` files
and the Kafka pom), so there is one place to change a version.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from devtools.stack.errors import StackError

#: Components, in the order they are built.
COMPONENTS = ("kafka", "kube", "etcd", "kwok")
#: Tools built the same way, on demand only (``jobreaper-dev stack tool NAME``): the
#: deployment tests render the manifests with kustomize and the Helm chart with helm,
#: and check the alerting rules with promtool. ``stack up`` never builds them.
TOOLS = ("kustomize", "helm", "promtool")
#: Built only for a stack with real nodes (``stack up --real-nodes N``): the kubelet,
#: from its own wrapper module pinned to the control plane's Kubernetes version.
REAL_NODE_COMPONENTS = ("kubelet",)
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

STACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def repo_root() -> Path:
    """The jobreaper checkout holding ``stack/`` (``JOBREAPER_REPO`` overrides)."""
    env = os.environ.get("JOBREAPER_REPO")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "stack" / "go" / "kube" / "go.mod").is_file():
        raise StackError(
            f"cannot find the stack sources (stack/go/kube/go.mod) under {root}; "
            "set JOBREAPER_REPO to the jobreaper checkout"
        )
    return root


def stack_sources() -> Path:
    return repo_root() / "stack"


def cache_dir() -> Path:
    """``${JOBREAPER_CACHE_DIR:-~/.cache/jobreaper}``."""
    env = os.environ.get("JOBREAPER_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jobreaper"


def builds_dir() -> Path:
    return cache_dir() / "builds"


def stacks_dir() -> Path:
    return cache_dir() / "stacks"


def stack_dir(name: str) -> Path:
    check_stack_name(name)
    return stacks_dir() / name


def check_stack_name(name: str) -> None:
    if not STACK_NAME_RE.match(name):
        raise StackError(
            f"invalid stack name {name!r}: use 1-40 characters a-z, 0-9, '-', '_' "
            "(starting with a letter or digit)"
        )


def _go_requirement(go_mod: Path, module: str) -> str:
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise StackError(f"{go_mod} does not require {module}")
    return match.group(1)


def go_requirement(wrapper: str, module: str) -> str:
    """The version of ``module`` that the wrapper module ``stack/go/<wrapper>`` requires."""
    return _go_requirement(stack_sources() / "go" / wrapper / "go.mod", module)


@dataclass(frozen=True)
class Versions:
    kafka: str
    kube: str
    etcd: str
    kwok: str
    kustomize: str
    helm: str
    kubelet: str
    promtool: str

    def of(self, component: str) -> str:
        value: str = getattr(self, component)
        return value


@cache
def versions() -> Versions:
    src = stack_sources()
    pom = (src / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if not match:
        raise StackError(f"{src / 'kafka' / 'pom.xml'} has no <kafka.version>")
    return Versions(
        kafka=match.group(1).strip(),
        kube=_go_requirement(src / "go" / "kube" / "go.mod", "k8s.io/kubernetes"),
        etcd=_go_requirement(src / "go" / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3"),
        kwok=_go_requirement(src / "go" / "kwok" / "go.mod", "sigs.k8s.io/kwok"),
        kustomize=_go_requirement(
            src / "go" / "kustomize" / "go.mod", "sigs.k8s.io/kustomize/kustomize/v5"
        ),
        helm=_go_requirement(src / "go" / "helm" / "go.mod", "helm.sh/helm/v3"),
        kubelet=_go_requirement(src / "go" / "kubelet" / "go.mod", "k8s.io/kubernetes"),
        promtool=_go_requirement(
            src / "go" / "promtool" / "go.mod", "github.com/prometheus/prometheus"
        ),
    )


#: Timings of the node lifecycle: kwok renews each node's lease every
#: NODE_LEASE_SECONDS / 4; the controller manager checks every NODE_MONITOR_PERIOD
#: and marks a node whose lease went stale for NODE_MONITOR_GRACE_PERIOD NotReady
#: (Unknown). So a lost node turns NotReady 8-12 s after its kwok stops.
NODE_LEASE_SECONDS = 8
NODE_MONITOR_PERIOD = "2s"
NODE_MONITOR_GRACE_PERIOD = "8s"

DEFAULT_NODE_COUNT = 3
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
