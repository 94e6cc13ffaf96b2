"""kube-controller-manager and kube-scheduler: every controller (no leader election),
with node-monitor timings short enough that a lost node turns NotReady in seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from devtools.stack import config
from devtools.stack.build import Build
from devtools.stack.certs import Pki
from devtools.stack.launch import Launcher, http_ok
from devtools.stack.layout import State
from devtools.stack.util import elapsed

CONTROLLERS = ("kube-controller-manager", "kube-scheduler")


def ready_check(component: str, ports: Mapping[str, int]) -> Callable[[], bool]:
    """``/healthz`` of ``component`` (one of CONTROLLERS) answers 200."""
    return lambda: http_ok("127.0.0.1", ports[component], "/healthz", tls=True)


def start(launcher: Launcher, state: State, kube: Build, pki: Pki, taken: set[int]) -> None:
    """Start the controller manager, then the scheduler; wait until each is healthy."""
    layout = launcher.layout
    t0 = time.monotonic()
    kcm_conf = str(layout.component_kubeconfig("kube-controller-manager"))
    sched_conf = str(layout.component_kubeconfig("kube-scheduler"))

    def spawn_kcm() -> None:
        launcher.spawn(
            "kube-controller-manager",
            [
                str(kube.bin("kube-controller-manager")),
                f"--kubeconfig={kcm_conf}",
                f"--authentication-kubeconfig={kcm_conf}",
                f"--authorization-kubeconfig={kcm_conf}",
                "--bind-address=127.0.0.1",
                f"--secure-port={state.ports['kube-controller-manager']}",
                f"--cert-dir={layout.root / 'pki-runtime'}",
                "--controllers=*",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--cluster-name=jobreaper-{launcher.name}",
                f"--service-cluster-ip-range={config.SERVICE_CLUSTER_IP_RANGE}",
                f"--node-monitor-period={config.NODE_MONITOR_PERIOD}",
                f"--node-monitor-grace-period={config.NODE_MONITOR_GRACE_PERIOD}",
                "--profiling=false",
            ],
        )

    def spawn_scheduler() -> None:
        launcher.spawn(
            "kube-scheduler",
            [
                str(kube.bin("kube-scheduler")),
                f"--kubeconfig={sched_conf}",
                f"--authentication-kubeconfig={sched_conf}",
                f"--authorization-kubeconfig={sched_conf}",
                "--bind-address=127.0.0.1",
                f"--secure-port={state.ports['kube-scheduler']}",
                f"--cert-dir={layout.root / 'pki-runtime'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    for proc, spawn in zip(CONTROLLERS, (spawn_kcm, spawn_scheduler), strict=True):
        launcher.start_with_port_retry(
            proc, state, (proc,), taken, spawn, ready_check(proc, state.ports), timeout=90
        )
    launcher.say(f"  kube-controller-manager and kube-scheduler ready ({elapsed(t0)})")
