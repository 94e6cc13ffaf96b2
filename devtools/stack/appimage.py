"""The jobreaper image, built without Docker, for the local stack's real node.

The Dockerfile stays the way users with Docker build the image. A machine of this
project has no container engine, so this module makes an image with the same
contract (:data:`CONTRACT`: entry point, user, port, environment, health check)
from what the machine already has, and writes it as a docker-archive tar that
``ctr images import`` loads into the real node's containerd (as ``images.py`` does
for busybox). No new package, no registry:

- **Python**: Debian's ``/usr/bin/python3.11`` and its standard library
  (``/usr/lib/python3.11``, with the ``__pycache__`` Debian compiled), the same
  bookworm the Dockerfile's ``python:3.11-slim-bookworm`` is built on (Debian's
  3.11.2 here, 3.11.14 there; the lock file allows ``>=3.11,<3.12``).
- **Shared libraries**: exactly those ``ldd`` names for the interpreter, its
  ``lib-dynload`` modules and every extension in the virtualenv, copied from the
  machine's Debian at their own paths (merged ``/usr``: ``/lib`` is a link).
- **The virtualenv**: what the Dockerfile's build stage runs, here: ``uv sync
  --locked --no-dev --no-editable`` of a copy of ``pyproject.toml``, ``uv.lock``,
  ``schemas``, ``core``, ``services``, into ``/opt/jobreaper``; its scripts'
  shebangs then name ``/opt/jobreaper/bin/python`` and its modules are compiled
  with ``unchecked-hash`` pycs (the root filesystem is read-only at run time).
- ``/etc/passwd`` and ``/etc/group`` with ``jobreaper`` (10001), ``/tmp``, and the
  machine's CA bundle (``/etc/ssl/certs/ca-certificates.crt``) for Kafka over TLS.

Two layers, as in the Dockerfile: the system (Python + libraries + /etc) and the
virtualenv. Built under ``<cache>/images/<key>/`` where the key hashes every input
(the project's sources and lock, this module, Debian's package database), so an
unchanged tree is a cache hit; the image's tag is the key, so a pod never runs a
stale image under a reused name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.stack import config, realnode
from devtools.stack.errors import StackError
from devtools.stack.layout import Layout
from devtools.stack.util import Say, elapsed, run_logged

REPOSITORY = "jobreaper.local/jobreaper"
PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
VENV = "/opt/jobreaper"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Bump when the way the image is made changes.
RECIPE = "1"
#: What the build reads from the checkout (the Dockerfile's build context).
PROJECT_FILES = ("pyproject.toml", "uv.lock", "README.md", "devtools/pyproject.toml")
PROJECT_DIRS = ("schemas", "core", "services")
#: Parts of the standard library a service never imports (the slim image keeps
#: them; they are left out here to keep the layer small).
STDLIB_LEFT_OUT = ("idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data")


@dataclass(frozen=True)
class Contract:
    """What the image promises its runner: the Dockerfile's final stage, declared once.

    ``tests/integration/deploy/test_image_contract.py`` checks that the Dockerfile
    declares exactly this and that the built archive's config carries it."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str
    exposed_ports: tuple[str, ...]
    #: The environment the Dockerfile sets (PATH: its leading entry, the rest is the base's).
    env: tuple[tuple[str, str], ...]
    healthcheck: tuple[str, ...]
    healthcheck_interval_s: int
    healthcheck_timeout_s: int
    healthcheck_start_period_s: int
    healthcheck_retries: int


HEALTHCHECK_SCRIPT = (
    "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + "
    "os.environ.get('JOBREAPER_HTTP_PORT', '8080') + '/healthz', timeout=2)"
)

CONTRACT = Contract(
    entrypoint=("jobreaper",),
    cmd=("--help",),
    user="10001:10001",
    exposed_ports=("8080/tcp",),
    env=(
        ("PATH", f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("JOBREAPER_HTTP_HOST", "0.0.0.0"),
        ("JOBREAPER_HTTP_PORT", "8080"),
    ),
    healthcheck=("CMD", "python", "-c", HEALTHCHECK_SCRIPT),
    healthcheck_interval_s=15,
    healthcheck_timeout_s=3,
    healthcheck_start_period_s=60,
    healthcheck_retries=3,
)

#: The image also sets what python:3.11-slim sets and the services rely on.
BASE_ENV = (("LANG", "C.UTF-8"),)

PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    "jobreaper:x:10001:10001::/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\njobreaper:x:10001:\n"


@dataclass(frozen=True)
class Image:
    ref: str  # jobreaper.local/jobreaper:<key>
    archive: Path  # the docker-archive tar
    image_id: str  # sha256:... of the config
    size_bytes: int  # uncompressed layers
    built: bool  # False: from the cache


# -- the cache key ------------------------------------------------------------------


def _project_files(root: Path) -> Iterator[Path]:
    for rel in PROJECT_FILES:
        yield root / rel
    for rel in PROJECT_DIRS:
        for path in sorted((root / rel).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def cache_key(root: Path | None = None) -> str:
    root = root or config.repo_root()
    digest = hashlib.sha256(f"{RECIPE}\0".encode())
    digest.update(Path(__file__).read_bytes())
    for path in _project_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    # Any Debian package change (the interpreter, a library) rebuilds.
    with contextlib.suppress(OSError):
        digest.update(Path("/var/lib/dpkg/status").read_bytes())
    return digest.hexdigest()[:12]


def images_dir() -> Path:
    return config.cache_dir() / "images"


# -- the rootfs ---------------------------------------------------------------------


class _Layer:
    """A layer tar written to a file: entries sorted by the caller, owners root,
    mtimes kept for copied system files (Debian's timestamp pycs check them) and 0
    for everything made here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar = tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by close())
        self.names: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, mtime: float = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.mtime = kind, mode, int(mtime)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def dirs(self, name: str) -> None:
        if not name.strip("/"):
            return
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            d = "/".join(parts[:depth])
            if d not in self.names:
                self.names.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))

    def data(self, name: str, payload: bytes, mode: int = 0o644, mtime: float = 0) -> None:
        self.dirs(os.path.dirname(name.strip("/")))
        info = self._info(name, tarfile.REGTYPE, mode, mtime)
        info.size = len(payload)
        self.names.add(info.name)
        self.tar.addfile(info, io.BytesIO(payload))

    def file(self, name: str, source: Path) -> None:
        st = source.stat()
        if name.strip("/") in self.names:
            return
        self.dirs(os.path.dirname(name.strip("/")))
        info = self._info(name, tarfile.REGTYPE, stat.S_IMODE(st.st_mode), st.st_mtime)
        info.size = st.st_size
        self.names.add(info.name)
        with source.open("rb") as f:
            self.tar.addfile(info, f)

    def symlink(self, name: str, target: str) -> None:
        if name.strip("/") in self.names:
            return
        self.dirs(os.path.dirname(name.strip("/")))
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.names.add(info.name)
        self.tar.addfile(info)

    def close(self) -> None:
        self.tar.close()


def _add_system_path(layer: _Layer, path: str) -> None:
    """``path`` as the machine has it: every symbolic link on the way (``/lib`` ->
    ``usr/lib``, ``libssl.so.3`` -> ``libssl.so.3.0.x``), then the file."""
    parent = os.path.dirname(path)
    real_parent = os.path.realpath(parent)
    if real_parent != parent:
        path = os.path.join(real_parent, os.path.basename(path))
    if os.path.islink(path):
        target = os.readlink(path)
        layer.symlink(path, target)
        _add_system_path(layer, os.path.normpath(os.path.join(os.path.dirname(path), target)))
    elif os.path.isfile(path):
        layer.file(path, Path(path))


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def _libraries(objects: list[Path]) -> set[str]:
    """Every shared library ``ldd`` resolves for ``objects`` (absolute paths)."""
    found: set[str] = set()
    for chunk in range(0, len(objects), 200):
        out = subprocess.run(
            ["ldd", *map(str, objects[chunk : chunk + 200])],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        for line in out.stdout.splitlines():
            if "not found" in line:
                raise StackError(f"ldd: {line.strip()}", step="build jobreaper image")
            m = _LDD_LINE.search(line)
            if m:
                found.add(m.group(1))
    return found


def _elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _build_venv(stage: Path, log: Path) -> Path:
    """The Dockerfile's build stage, run here into ``stage/opt/jobreaper``."""
    root = config.repo_root()
    src = stage / "src"
    for rel in PROJECT_FILES:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, src / rel)
    for rel in PROJECT_DIRS:
        shutil.copytree(root / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__"))
    venv = stage / "rootfs" / VENV.lstrip("/")
    uv = shutil.which("uv")
    if uv is None:
        raise StackError("uv is not on PATH", step="build jobreaper image")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_PYTHON=str(PYTHON),
        UV_PYTHON_DOWNLOADS="never",
        UV_LINK_MODE="copy",
        UV_COMPILE_BYTECODE="0",  # compiled below, with the paths the image has
    )
    run_logged(
        [uv, "sync", "--locked", "--no-dev", "--no-editable"],
        step="build jobreaper image: uv sync",
        log=log,
        cwd=src,
        env=env,
        timeout=900,
    )
    # The scripts name the interpreter by the path it had here; in the image it is VENV.
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        text = script.read_bytes()
        if str(venv).encode() in text:
            script.write_bytes(text.replace(str(venv).encode(), VENV.encode()))
    run_logged(
        [
            str(PYTHON),
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(stage / "rootfs"),
            "-p",
            "/",
            str(venv / "lib"),
        ],
        step="build jobreaper image: compile",
        log=log,
        timeout=600,
    )
    return venv


def _venv_layer(layer: _Layer, rootfs: Path, venv: Path) -> None:
    entries = sorted(venv.rglob("*"))
    layer.dirs(VENV)
    for path in entries:
        name = "/" + str(path.relative_to(rootfs))
        if path.is_symlink():
            layer.symlink(name, os.readlink(path))
        elif path.is_dir():
            layer.dirs(name)
        elif path.is_file():
            info_mode = stat.S_IMODE(path.stat().st_mode)
            layer.data(name, path.read_bytes(), info_mode)


def _system_layer(layer: _Layer, venv: Path) -> list[str]:
    """Python, its libraries and /etc; returns the libraries it holds."""
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        layer.symlink(link, target)
    for d in ("dev", "proc", "sys", "etc", "tmp", "usr/sbin", "nonexistent"):
        layer.dirs(d)
    layer.file(str(PYTHON), PYTHON)
    for link in ("/usr/bin/python3", "/usr/bin/python"):
        layer.symlink(link, "python3.11")
    stdlib = sorted(STDLIB.rglob("*"))
    for path in stdlib:
        rel = path.relative_to(STDLIB)
        if (rel.parts and rel.parts[0] in STDLIB_LEFT_OUT) or "site-packages" in rel.parts:
            continue
        if path.is_symlink():
            layer.symlink(str(path), os.readlink(path))
        elif path.is_dir():
            layer.dirs(str(path))
        elif path.is_file():
            layer.file(str(path), path)
    objects = [PYTHON, *sorted((STDLIB / "lib-dynload").glob("*.so"))]
    objects += [p for p in sorted(venv.rglob("*.so*")) if p.is_file() and _elf(p)]
    libraries = sorted(
        lib for lib in _libraries(objects) if not lib.startswith(str(venv.parent.parent))
    )
    for lib in libraries:
        _add_system_path(layer, lib)
    layer.data("/etc/passwd", PASSWD.encode())
    layer.data("/etc/group", GROUP.encode())
    if CA_BUNDLE.is_file():
        layer.data(str(CA_BUNDLE), CA_BUNDLE.read_bytes())
    return libraries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def image_config(diff_ids: list[str]) -> dict[str, object]:
    """The docker image config: :data:`CONTRACT` in Docker's own field names."""
    c = CONTRACT
    second = 1_000_000_000
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": c.user,
            "Env": [f"{k}={v}" for k, v in (*c.env, *BASE_ENV)],
            "Entrypoint": list(c.entrypoint),
            "Cmd": list(c.cmd),
            "ExposedPorts": {port: {} for port in c.exposed_ports},
            "WorkingDir": "/",
            "Healthcheck": {
                "Test": list(c.healthcheck),
                "Interval": c.healthcheck_interval_s * second,
                "Timeout": c.healthcheck_timeout_s * second,
                "StartPeriod": c.healthcheck_start_period_s * second,
                "Retries": c.healthcheck_retries,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "jobreaper devtools: system"},
            {"created": "1970-01-01T00:00:00Z", "created_by": "jobreaper devtools: virtualenv"},
        ],
    }


def read_config(archive: Path) -> dict[str, object]:
    """The image config inside a docker-archive tar."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config_doc: dict[str, object] = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return config_doc


def ensure_image(say: Say) -> Image:
    """The jobreaper image for the current checkout, built unless cached."""
    key = cache_key()
    ref = f"{REPOSITORY}:{key}"
    home = images_dir()
    done = home / key
    archive = done / "image.tar"
    if (done / ".complete").is_file():
        meta = json.loads((done / "image.json").read_text())
        return Image(ref, archive, meta["id"], meta["size"], built=False)
    for tool in ("ldd",):
        if shutil.which(tool) is None:
            raise StackError(f"{tool} is missing", step="build jobreaper image")
    if not PYTHON.is_file():
        raise StackError(f"{PYTHON} is missing (apt-get install python3.11)")
    t0 = time.monotonic()
    tmp = home / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log = tmp / "build.log"
    say(f"  building the jobreaper image {ref} (log: {done / 'build.log'})")
    try:
        venv = _build_venv(tmp, log)
        system = _Layer(tmp / "system.tar")
        libraries = _system_layer(system, venv)
        system.close()
        app = _Layer(tmp / "venv.tar")
        _venv_layer(app, tmp / "rootfs", venv)
        app.close()
        layers = [tmp / "system.tar", tmp / "venv.tar"]
        diff_ids = [_sha256(p) for p in layers]
        config_bytes = json.dumps(image_config(diff_ids), sort_keys=True).encode()
        config_id = hashlib.sha256(config_bytes).hexdigest()
        names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
        manifest = [{"Config": f"{config_id}.json", "RepoTags": [ref], "Layers": names}]
        with tarfile.open(tmp / "image.tar", mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, payload in (
                (f"{config_id}.json", config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
            for name, path in zip(names, layers, strict=True):
                tar.add(path, arcname=name)
        size = sum(p.stat().st_size for p in layers)
        packages = _debian_packages([*libraries, str(PYTHON)])
        meta = {"id": f"sha256:{config_id}", "size": size, "ref": ref, "debian": packages}
        (tmp / "image.json").write_text(json.dumps(meta, indent=2))
        for p in [*layers, tmp / "src"]:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        shutil.rmtree(tmp / "rootfs")
        (tmp / ".complete").write_text("")
        shutil.rmtree(done, ignore_errors=True)
        tmp.rename(done)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in home.iterdir():  # one image per checkout state is enough to keep
        if old.name != key and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    say(f"  built {ref} in {elapsed(t0)} ({size / 2**20:.0f} MiB)")
    return Image(ref, done / "image.tar", f"sha256:{config_id}", size, built=True)


def _debian_packages(paths: list[str]) -> list[str]:
    """The Debian packages the copied files come from (``dpkg -S``), for the record.
    Asked for each path as ldd names it and as merged ``/usr`` resolves it: dpkg
    knows a file by the path its package ships."""
    asked = sorted({p for path in paths for p in (path, os.path.realpath(path))})
    out = subprocess.run(
        ["dpkg", "-S", *asked], capture_output=True, text=True, check=False, timeout=60
    )
    return sorted({line.split(":")[0] for line in out.stdout.splitlines() if ":" in line})


def import_image(layout: Layout, node: str, image: Image) -> bool:
    """Load ``image`` into ``node``'s containerd unless it holds it already (its tag is
    its cache key); True when it was imported."""
    if realnode.ctr(layout, node, "images", "ls", "-q", f"name=={image.ref}").strip():
        return False
    realnode.ctr(layout, node, "images", "import", str(image.archive), timeout=300)
    # Earlier builds' tags go (a running container keeps its snapshot); the kubelet's
    # image GC is off on a real node, so nothing else would remove them.
    for ref in realnode.ctr(layout, node, "images", "ls", "-q").split():
        if ref.startswith(f"{REPOSITORY}:") and ref != image.ref:
            with contextlib.suppress(StackError):
                realnode.ctr(layout, node, "images", "rm", ref)
    return True
