"""A real node: containerd + runc + the bridge CNI plugin and a real kubelet.

``stack up --real-nodes 1`` adds ``real-node-0`` beside the kwok nodes, so the
ladder can be shown on real processes (the kubelet's ``activeDeadlineSeconds``
kill, a SIGTERM-ignoring process, a frozen kubelet). What it needs and how it is
set up (facts first found by hand, ``RECIPES.md`` "A real node"):

- Debian's containerd, runc, CNI plugins and busybox-static, installed by
  ``stack/realnode/install-packages.sh`` when missing (apt-get; runs as root);
- one containerd per real node, with its own root, state, socket and CNI
  config under ``<stack>/nodes/<node>/`` (never the machine's ``/var/lib/containerd``);
- the pause and workload images made from busybox here (``images``), imported
  with ``ctr images import``: no registry; pods use ``imagePullPolicy: Never``;
- the kubelet built from the control plane's Kubernetes module (component
  ``kubelet``), on loopback, with the admin kubeconfig, anonymous auth and
  ``AlwaysAllow`` on its own port (a test stack only).

The node registers with the taint ``jobreaper.test/real-node=true:NoSchedule``,
so pods of tests written for kwok never land on it; a pod meant for it
tolerates the taint and selects ``kubernetes.io/hostname: real-node-0``.

Stopping (``down``) thaws a frozen kubelet, stops it, kills and removes every
container it left in containerd, removes their network namespaces, stops
containerd and unmounts whatever is left under the node's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import zlib
from pathlib import Path

from devtools.stack import config, images, process
from devtools.stack.build import Build
from devtools.stack.certs import Pki
from devtools.stack.errors import StackError
from devtools.stack.kuberest import KubeRest
from devtools.stack.kwok import ready_check
from devtools.stack.launch import Launcher, wait_for
from devtools.stack.layout import Layout, State, containerd_proc, kubelet_proc
from devtools.stack.util import elapsed, free_port, run_logged

NODE_PREFIX = "real-node-"
REAL_NODE_LABEL = "jobreaper.test/real-node"
#: Pods for a real node tolerate this taint (see the module docstring).
TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI plugin's containers and images
CNI_BIN_DIR = Path("/usr/lib/cni")
INSTALL_SCRIPT = "realnode/install-packages.sh"
#: What the install script provides, checked before anything starts.
NEEDED = (
    Path("/usr/bin/containerd"),
    Path("/usr/bin/ctr"),
    Path("/usr/sbin/runc"),
    CNI_BIN_DIR / "bridge",
    CNI_BIN_DIR / "host-local",
    CNI_BIN_DIR / "loopback",
    CNI_BIN_DIR / "portmap",
    images.BUSYBOX,
)


def node_names(count: int) -> list[str]:
    return [f"{NODE_PREFIX}{i}" for i in range(count)]


def processes(node: str) -> list[str]:
    """The processes of ``node``, in start order."""
    return [containerd_proc(node), kubelet_proc(node)]


def node_dir(layout: Layout, node: str) -> Path:
    return layout.root / "nodes" / node


def socket(layout: Layout, node: str) -> Path:
    return node_dir(layout, node) / "containerd.sock"


# -- packages ---------------------------------------------------------------------


def ensure_packages(launcher: Launcher) -> None:
    """Run the install script if anything a real node needs is missing."""
    missing = [str(p) for p in NEEDED if not p.exists()]
    if not missing:
        return
    script = config.stack_sources() / INSTALL_SCRIPT
    log = launcher.layout.log("install-packages")
    t0 = time.monotonic()
    launcher.say(f"  installing Debian packages for a real node ({script}; log: {log})")
    run_logged(["sh", str(script)], step="install real-node packages", log=log, timeout=900)
    still = [str(p) for p in NEEDED if not p.exists()]
    if still:
        raise StackError(f"still missing after install: {', '.join(still)}", log=log)
    launcher.say(f"  installed packages in {elapsed(t0)}")


# -- configuration ----------------------------------------------------------------


def _subnet(layout: Layout, index: int) -> str:
    """A pod subnet per stack and node, so two stacks' bridges do not overlap."""
    third = (zlib.crc32(layout.name.encode()) + index) % 200 + 50
    return f"10.{third}.{index}.0/24"


def _bridge(layout: Layout, index: int) -> str:
    """A bridge name of at most 15 characters, one per stack and node."""
    return f"jr{zlib.crc32(layout.name.encode()) % 10**8:08d}n{index}"


def _containerd_config(layout: Layout, node: str) -> Path:
    d = node_dir(layout, node)
    cni_conf = d / "cni" / "net.d"
    text = f"""\
version = 2
root = "{d / "containerd" / "root"}"
state = "{d / "containerd" / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt"]

[grpc]
  address = "{socket(layout, node)}"

[ttrpc]
  address = "{d / "containerd.ttrpc.sock"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  # Without it runc fails with "failed to update /proc/self/oom_score_adj:
  # Permission denied" (seen only as "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""
    path = layout.conf / f"{containerd_proc(node)}.toml"
    path.write_text(text)
    return path


def _cni_config(layout: Layout, node: str, index: int) -> None:
    d = node_dir(layout, node)
    conflist = {
        "cniVersion": "0.4.0",
        "name": f"jobreaper-{layout.name}-{index}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": _bridge(layout, index),
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(d / "cni" / "ipam"),
                    "ranges": [[{"subnet": _subnet(layout, index)}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    conf_dir = d / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-jobreaper.conflist").write_text(json.dumps(conflist, indent=2))


def _kubelet_config(layout: Layout, state: State, node: str) -> Path:
    d = node_dir(layout, node)
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": state.ports[f"kubelet-{node}"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": state.ports[f"kubelet-healthz-{node}"],
        # A test stack on loopback: anyone who reaches the port may do anything.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{socket(layout, node)}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # these machines have cgroup v1
        "failSwapOn": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "resolvConf": "",
        "podLogsDirectory": str(d / "pod-logs"),
        # The same lease as kwok's nodes: a frozen kubelet turns NotReady as fast.
        "nodeLeaseDurationSeconds": config.NODE_LEASE_SECONDS,
        "nodeStatusUpdateFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
        # Never garbage-collect the locally imported images (there is no registry
        # to pull them back from), and do not evict on a busy shared disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "registerWithTaints": [TAINT],
        "serializeImagePulls": False,
    }
    path = layout.conf / f"{kubelet_proc(node)}.yaml"
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return path


# -- containerd -------------------------------------------------------------------


def ctr(layout: Layout, node: str, *args: str, timeout: float = 30) -> str:
    """Run ``ctr`` against ``node``'s containerd (namespace k8s.io); its stdout."""
    argv = ["ctr", "--address", str(socket(layout, node)), "-n", NAMESPACE, *args]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StackError(f"{' '.join(argv)}: {e}", step="ctr") from None
    if out.returncode != 0:
        raise StackError(f"{' '.join(argv)}: {out.stderr.strip()[:300]}", step="ctr")
    return out.stdout


def tasks(layout: Layout, node: str) -> dict[str, tuple[int, str]]:
    """containerd's tasks on ``node``: container id -> (pid, status such as RUNNING)."""
    result: dict[str, tuple[int, str]] = {}
    for line in ctr(layout, node, "tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            result[fields[0]] = (int(fields[1]), fields[2])
    return result


def _containerd_ready(layout: Layout, node: str) -> bool:
    try:
        ctr(layout, node, "version", timeout=5)
        return True
    except StackError:
        return False


def _import_images(layout: Layout, node: str) -> None:
    d = node_dir(layout, node) / "images"
    for spec in images.IMAGES:
        tar = d / (spec.ref.rsplit("/", 1)[-1].replace(":", "-") + ".tar")
        images.docker_archive(spec, tar)
        ctr(layout, node, "images", "import", "--no-unpack=false", str(tar), timeout=120)


# -- start ------------------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path)
    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(mount_point)
    return sorted(set(found), key=len, reverse=True)


def _unmount_all(path: Path) -> None:
    for mount_point in _mounts_under(path):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)


def start(launcher: Launcher, state: State, kubelet: Build, pki: Pki, taken: set[int]) -> None:
    """Start containerd and the kubelet of every real node; wait until all are Ready."""
    if not state.real_nodes:
        return
    t0 = time.monotonic()
    layout = launcher.layout
    ensure_packages(launcher)
    if kubelet.version != state.versions.get("kube"):
        raise StackError(
            f"kubelet {kubelet.version} is not the control plane's {state.versions.get('kube')}: "
            "stack/go/kubelet/go.mod and stack/go/kube/go.mod must require the same "
            "k8s.io/kubernetes"
        )
    for index, node in enumerate(state.real_nodes):
        d = node_dir(layout, node)
        _unmount_all(d)
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("containerd", "kubelet", "pod-logs", "images", "cni/ipam"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        _cni_config(layout, node, index)
        launcher.spawn(
            containerd_proc(node),
            ["/usr/bin/containerd", "--config", str(_containerd_config(layout, node))],
        )
        wait_for(
            f"{containerd_proc(node)} serves",
            lambda node=node: _containerd_ready(layout, node),  # type: ignore[misc]
            timeout=60,
            proc=(containerd_proc(node), layout),
        )
        _import_images(layout, node)
        state.ports[f"kubelet-{node}"] = free_port(taken)
        state.ports[f"kubelet-healthz-{node}"] = free_port(taken)
        launcher.spawn(
            kubelet_proc(node),
            [
                str(kubelet.bin("kubelet")),
                f"--config={_kubelet_config(layout, state, node)}",
                f"--kubeconfig={layout.kubeconfig}",
                f"--hostname-override={node}",
                # Loopback: the kubelet logs "nodeIP can't be loopback address" and
                # publishes no address, yet registers, turns Ready and runs pods.
                "--node-ip=127.0.0.1",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={d / 'kubelet' / 'pki'}",
                f"--node-labels={REAL_NODE_LABEL}=true,type=real",
            ],
        )
    rest = KubeRest(state.ports["apiserver"], pki)
    for node in state.real_nodes:
        wait_for(
            f"node {node} Ready",
            ready_check(rest, node),
            timeout=120,
            proc=(kubelet_proc(node), layout),
        )
    names = ", ".join(state.real_nodes)
    launcher.say(f"  kubelet {kubelet.version} + containerd: nodes {names} Ready ({elapsed(t0)})")


# -- stop -------------------------------------------------------------------------


def _netns_paths(layout: Layout, node: str, container_ids: list[str]) -> list[str]:
    """The network namespaces (``/var/run/netns/cni-...``) of these containers."""
    found: list[str] = []
    for cid in container_ids:
        try:
            info = json.loads(ctr(layout, node, "containers", "info", cid))
        except (StackError, ValueError):
            continue
        for ns in (info.get("Spec") or {}).get("linux", {}).get("namespaces") or []:
            if ns.get("type") == "network" and ns.get("path"):
                found.append(str(ns["path"]))
    return sorted(set(found))


def clean_containers(layout: Layout, node: str) -> list[str]:
    """Kill and remove every container in ``node``'s containerd; return their ids.

    For ``down`` (the kubelet is stopped by then, so nobody else removes them) and
    for a kubelet that was lost with containers still running."""
    try:
        ids = [c.split()[0] for c in ctr(layout, node, "containers", "ls", "-q").split()]
    except StackError:
        return []
    netns = _netns_paths(layout, node, ids)
    for cid in ids:
        with contextlib.suppress(StackError):
            ctr(layout, node, "tasks", "kill", "-s", "SIGKILL", cid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if all(s == "STOPPED" for _, s in tasks(layout, node).values()):
                break
        except StackError:
            break
        time.sleep(0.2)
    for cid in ids:
        with contextlib.suppress(StackError):
            ctr(layout, node, "tasks", "delete", "-f", cid)
        with contextlib.suppress(StackError):
            ctr(layout, node, "containers", "delete", cid)
    for path in netns:
        subprocess.run(["umount", path], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return ids


def stop(layout: Layout, state: State) -> list[str]:
    """Stop every real node: kubelet, its containers, containerd. Names what it stopped."""
    stopped: list[str] = []
    for node in state.real_nodes:
        kubelet_pid = layout.pid(kubelet_proc(node))
        record = process.running(kubelet_pid)
        if record is not None:
            with contextlib.suppress(OSError):
                os.kill(record.pid, signal.SIGCONT)  # a frozen kubelet cannot exit
            process.stop(kubelet_pid, timeout=15)
            stopped.append(f"{record.name} (pid {record.pid})")
        cd_pid = layout.pid(containerd_proc(node))
        cd = process.running(cd_pid) or _containerd_for_cleanup(layout, node)
        if cd is not None:
            removed = clean_containers(layout, node)
            if removed:
                stopped.append(f"{len(removed)} containers of {node}")
            process.stop(cd_pid, timeout=15)
            stopped.append(f"{cd.name} (pid {cd.pid})")
        _unmount_all(node_dir(layout, node))
    return stopped


def frozen(layout: Layout, node: str) -> bool:
    """Whether ``node``'s kubelet is stopped by :func:`freeze`."""
    record = process.running(layout.pid(kubelet_proc(node)))
    return record is not None and process.stopped(record)


def _containerd_for_cleanup(layout: Layout, node: str) -> process.ProcessRecord | None:
    """containerd started again on the node's state, when it died with containers
    left: its shims keep them running, and only containerd (which reconnects to
    them from its state folder) can stop and remove them."""
    conf = layout.conf / f"{containerd_proc(node)}.toml"
    if not conf.is_file() or not (node_dir(layout, node) / "containerd" / "state").is_dir():
        return None
    record = process.spawn(
        containerd_proc(node),
        ["/usr/bin/containerd", "--config", str(conf)],
        pid_file=layout.pid(containerd_proc(node)),
        log=layout.log(containerd_proc(node)),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _containerd_ready(layout, node):
            return record
        time.sleep(0.2)
    process.stop(layout.pid(containerd_proc(node)))
    return None


def freeze(layout: Layout, node: str) -> None:
    """SIGSTOP ``node``'s kubelet: a lost node whose containers keep running."""
    _signal_kubelet(layout, node, signal.SIGSTOP)


def thaw(layout: Layout, node: str) -> None:
    """SIGCONT ``node``'s kubelet: the node comes back and reconciles."""
    _signal_kubelet(layout, node, signal.SIGCONT)


def crash(layout: Layout, node: str) -> None:
    """SIGKILL ``node``'s kubelet (a crash): its containers keep running under
    containerd's shims; :func:`revive` starts it again."""
    _signal_kubelet(layout, node, signal.SIGKILL)
    record = process.read(layout.pid(kubelet_proc(node)))
    deadline = time.monotonic() + 10
    while record is not None and process.alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)


def revive(launcher: Launcher, node: str) -> None:
    """Start ``node``'s crashed kubelet again with its recorded command line (same
    root dir, certificates and config): it re-registers and reconciles its pods."""
    pid_file = launcher.layout.pid(kubelet_proc(node))
    if process.running(pid_file) is not None:
        return
    record = process.read(pid_file)
    if record is None:
        raise StackError(f"the kubelet of {node} was never started here", step=f"revive {node}")
    launcher.spawn(kubelet_proc(node), record.argv)


def _signal_kubelet(layout: Layout, node: str, sig: int) -> None:
    record = process.running(layout.pid(kubelet_proc(node)))
    if record is None:
        raise StackError(f"the kubelet of {node} is not running", step=f"signal {node}")
    os.kill(record.pid, sig)
