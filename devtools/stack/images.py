"""Container images for a real node, made here without any registry or Docker.

Each image is one layer holding Debian's static busybox (``/bin/busybox``) and
its applet links, written as a docker-archive tar (``manifest.json``, a config
JSON with ``rootfs.diff_ids``, ``layer.tar``) that ``ctr images import`` reads.
The tars are byte-for-byte reproducible (fixed mtimes, sorted entries), so the
image ids only change when busybox does.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from devtools.stack.errors import StackError

BUSYBOX = Path("/bin/busybox")

#: The pause image: PID 1 of every pod sandbox. It exits on SIGTERM (a plain
#: ``sleep`` as PID 1 would ignore it) and reaps nothing else: the sandbox holds no
#: other process.
PAUSE_IMAGE = "jobreaper.local/pause:1"
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"

#: The workload image tests run (``imagePullPolicy: Never``): busybox's ``sh``,
#: ``sleep``, ``trap`` and friends.
WORKLOAD_IMAGE = "jobreaper.local/busybox:1"


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]


IMAGES = (
    ImageSpec(PAUSE_IMAGE, ("/bin/sh", "-c", PAUSE_SCRIPT), ()),
    ImageSpec(WORKLOAD_IMAGE, (), ("/bin/sh",)),
)


def _applets(busybox: Path) -> list[str]:
    """The applet paths busybox installs (``bin/sh``, ``usr/bin/env``, ...)."""
    try:
        out = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise StackError(f"{busybox} --list-full failed: {e}", step="build images") from None
    return sorted({line.strip().lstrip("/") for line in out.stdout.splitlines() if line.strip()})


def _layer(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(info)

        for d in ("bin", "dev", "etc", "proc", "sbin", "sys", "usr", "usr/bin", "usr/sbin"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
        for applet in _applets(busybox):
            if applet == "bin/busybox" or "/" not in applet:
                continue
            info = tarfile.TarInfo(applet)
            info.type, info.mode, info.mtime = tarfile.SYMTYPE, 0o777, 0
            info.linkname = "/bin/busybox"
            tar.addfile(info)
    return buf.getvalue()


def docker_archive(spec: ImageSpec, dest: Path, busybox: Path = BUSYBOX) -> str:
    """Write ``spec`` as a docker-archive tar at ``dest``; return the image id (sha256:...)."""
    if not busybox.is_file():
        raise StackError(
            f"{busybox} is missing (apt-get install busybox-static)", step="build images"
        )
    layer = _layer(busybox)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": list(spec.entrypoint) or None,
            "Cmd": list(spec.cmd) or None,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "jobreaper devtools"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    layer_name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
    manifest = [{"Config": f"{config_id}.json", "RepoTags": [spec.ref], "Layers": [layer_name]}]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in (
            (f"{config_id}.json", config_bytes),
            (layer_name, layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(str(name))
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))
    tmp.replace(dest)
    return f"sha256:{config_id}"
