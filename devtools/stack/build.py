"""Fetch and build the stack's components, cached by version and input hash.

A build lives in ``<cache>/builds/<component>-<version>-<hash>/`` where the
hash covers the files that pin it (wrapper ``go.mod``/``go.sum``/``main.go``,
the Kafka pom) and the build recipe. It is built in a temporary folder and
renamed into place when complete, so a failed or interrupted build is never
mistaken for a cached one. Go's own caches are left at their defaults
(``go env GOMODCACHE GOCACHE``: ``~/go/pkg/mod`` and ``~/.cache/go-build``), so
a rebuild after a version bump reuses every unchanged package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.stack import config
from devtools.stack.errors import StackError
from devtools.stack.util import Say, elapsed, require_tool, run_logged

#: Bump when the way a component is built changes (flags, layout).
RECIPE = "1"

_INPUTS: dict[str, tuple[str, ...]] = {
    "kafka": ("kafka/pom.xml",),
    "kube": ("go/kube/go.mod", "go/kube/go.sum"),
    "etcd": ("go/etcd/go.mod", "go/etcd/go.sum", "go/etcd/main.go"),
    "kwok": ("go/kwok/go.mod", "go/kwok/go.sum"),
    "kubelet": ("go/kubelet/go.mod", "go/kubelet/go.sum"),
    "kustomize": ("go/kustomize/go.mod", "go/kustomize/go.sum"),
    "helm": ("go/helm/go.mod", "go/helm/go.sum"),
    "promtool": ("go/promtool/go.mod", "go/promtool/go.sum"),
}

_GO_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "kube": tuple((b, f"k8s.io/kubernetes/cmd/{b}") for b in config.KUBE_BINARIES),
    "etcd": (("etcd", "."),),
    "kwok": (("kwok", "sigs.k8s.io/kwok/cmd/kwok"),),
    "kubelet": (("kubelet", "k8s.io/kubernetes/cmd/kubelet"),),
    "kustomize": (("kustomize", "sigs.k8s.io/kustomize/kustomize/v5"),),
    "helm": (("helm", "helm.sh/helm/v3/cmd/helm"),),
    "promtool": (("promtool", "github.com/prometheus/prometheus/cmd/promtool"),),
}

#: Go build tags per component. promtool: ``remove_all_sd`` leaves out Prometheus's
#: service discoveries (AWS, Azure, GCE...) that checking rules never uses: 1117
#: packages to compile instead of 1364 (``go list -deps``; docs/stack.md).
_GO_TAGS: dict[str, tuple[str, ...]] = {"promtool": ("remove_all_sd",)}


@dataclass(frozen=True)
class Build:
    component: str
    version: str
    key: str
    path: Path

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def lib(self) -> Path:
        return self.path / "lib"

    @property
    def complete(self) -> bool:
        return (self.path / ".complete").is_file()


def build_for(component: str) -> Build:
    """The (possibly not yet built) build of ``component`` for the current sources."""
    src = config.stack_sources()
    version = config.versions().of(component)
    digest = hashlib.sha256(f"{component}\0{version}\0{RECIPE}\0".encode())
    for rel in _INPUTS[component]:
        digest.update(rel.encode() + b"\0" + (src / rel).read_bytes() + b"\0")
    if component in _GO_TAGS:  # only there, so that no other build's key changes
        digest.update(b"tags\0" + ",".join(_GO_TAGS[component]).encode() + b"\0")
    key = f"{component}-{version}-{digest.hexdigest()[:12]}"
    return Build(component, version, key, config.builds_dir() / key)


def ensure_tool(tool: str, say: Say) -> Build:
    """One of :data:`config.TOOLS` built (or the cached build); raises StackError."""
    if tool not in config.TOOLS:
        raise StackError(f"unknown tool {tool!r}: one of {', '.join(config.TOOLS)}")
    build = build_for(tool)
    if not build.complete:
        require_tool("go", f"Go builds {tool} (Go 1.24 or newer)")
        _build(build, say)
    return build


def tool_binary(tool: str) -> str:
    """The file name of a tool's binary in its build's ``bin/``."""
    return _GO_PACKAGES[tool][0][0]


def log_path(build: Build, step: str) -> Path:
    return config.builds_dir() / "logs" / f"{build.key}.{step}.log"


def ensure_builds(say: Say, components: tuple[str, ...] = config.COMPONENTS) -> dict[str, Build]:
    """Every component built (cached ones are reused); raises StackError on failure."""
    builds = {c: build_for(c) for c in components}
    missing = [b for b in builds.values() if not b.complete]
    if missing:
        # Check every tool first: fail in a second, not after a 10-minute build.
        if any(b.component == "kafka" for b in missing):
            require_tool("mvn", "Maven fetches the Kafka jars (apt-get install maven)")
        if any(b.component != "kafka" for b in missing):
            require_tool("go", "Go builds Kubernetes, etcd and kwok (Go 1.24 or newer)")
    for build in missing:
        _build(build, say)
    return builds


def _build(build: Build, say: Say) -> None:
    builds_dir = config.builds_dir()
    builds_dir.mkdir(parents=True, exist_ok=True)
    tmp = builds_dir / f"{build.key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    start = time.monotonic()
    say(f"building {build.component} {build.version} into {build.path}")
    try:
        if build.component == "kafka":
            _build_kafka(build, tmp, say)
        else:
            _build_go(build, tmp, say)
        (tmp / ".complete").write_text(f"{build.key} built in {elapsed(start)}\n")
        if build.path.exists():  # a concurrent build won; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(build.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"built {build.component} {build.version} in {elapsed(start)}")


def _build_kafka(build: Build, tmp: Path, say: Say) -> None:
    pom = config.stack_sources() / "kafka" / "pom.xml"
    log = log_path(build, "mvn")
    log.unlink(missing_ok=True)
    start = time.monotonic()
    say(f"  fetching Kafka {build.version} jars with Maven (log: {log})")
    run_logged(
        [
            "mvn",
            "-B",
            "-ntp",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp / 'lib'}",
        ],
        step=f"fetch Kafka {build.version} jars (mvn dependency:copy-dependencies)",
        log=log,
        timeout=1800,
    )
    jars = list((tmp / "lib").glob(f"kafka_2.13-{build.version}.jar"))
    if not jars:
        raise StackError(
            f"Maven finished but kafka_2.13-{build.version}.jar is missing",
            step="fetch Kafka jars",
            log=log,
        )
    say(f"  fetched Kafka jars in {elapsed(start)}")


def go_env() -> dict[str, str]:
    """The environment every go command of the stack runs with (builds, the stage tests)."""
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"  # never download a toolchain
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -buildvcs=false -mod=readonly").strip()
    return env


def _ldflags(build: Build) -> str:
    flags = ["-s", "-w"]
    if build.component in ("kube", "kubelet"):
        major, minor = build.version.lstrip("v").split(".")[:2]
        pkg = "k8s.io/component-base/version"
        flags += [
            f"-X {pkg}.gitVersion={build.version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    if build.component == "helm":
        # As helm's Makefile stamps them: its version (unstamped: only "v3.19"), and the
        # Kubernetes version `helm template` and `lint` assume, from its client-go
        # (unstamped: 1.20, which a chart's kubeVersion >= 1.30 refuses).
        client_go = config.go_requirement("helm", "k8s.io/client-go")
        minor = client_go.lstrip("v").split(".")[1]
        flags.append(f"-X helm.sh/helm/v3/internal/version.version={build.version}")
        for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def _build_go(build: Build, tmp: Path, say: Say) -> None:
    module_dir = config.stack_sources() / "go" / build.component
    env = go_env()
    log = log_path(build, "download")
    log.unlink(missing_ok=True)
    start = time.monotonic()
    say(f"  downloading Go modules for {build.component} (log: {log})")
    run_logged(
        ["go", "mod", "download"],
        step=f"download Go modules for {build.component} {build.version}",
        log=log,
        cwd=module_dir,
        env=env,
        timeout=1800,
    )
    say(f"  downloaded Go modules in {elapsed(start)}")
    for binary, package in _GO_PACKAGES[build.component]:
        log = log_path(build, binary)
        log.unlink(missing_ok=True)
        start = time.monotonic()
        say(f"  building {binary} (log: {log})")
        run_logged(
            [
                "go",
                "build",
                "-trimpath",
                *(
                    ["-tags", ",".join(_GO_TAGS[build.component])]
                    if build.component in _GO_TAGS
                    else []
                ),
                "-ldflags",
                _ldflags(build),
                "-o",
                str(tmp / "bin" / binary),
                package,
            ],
            step=f"build {binary} {build.version}",
            log=log,
            cwd=module_dir,
            env=env,
            timeout=3600,
        )
        _check_binary(tmp / "bin" / binary, build, log)
        say(f"  built {binary} in {elapsed(start)}")


def _check_binary(path: Path, build: Build, log: Path) -> None:
    """The binary runs and (for Kubernetes) reports the stamped version."""
    # helm has no --version flag: its `version --short` prints the stamped version.
    args = ["version", "--short"] if build.component == "helm" else ["--version"]
    try:
        out = subprocess.run(
            [str(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as e:
        raise StackError(f"{path} does not run: {e}", step=f"check {path.name}", log=log) from None
    text = out.stdout + out.stderr
    with log.open("a") as f:
        f.write(f"$ {path} {' '.join(args)}\n{text}")
    if build.component in ("kube", "kubelet", "helm") and build.version not in text:
        raise StackError(
            f"{path.name} {' '.join(args)} does not report {build.version}: {text.strip()[:200]}",
            step=f"check {path.name}",
            log=log,
        )


def clean_builds(keep: set[str]) -> list[Path]:
    """Remove cached builds whose key is not in ``keep``; returns what was removed."""
    removed: list[Path] = []
    root = config.builds_dir()
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if entry.name == "logs" or entry.name in keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
