"""The real node's pieces that need no root and no containerd: the images made without
a registry, the names on the host, the state file."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from devtools.stack import images, realnode
from devtools.stack.api import freeze_kubelet
from devtools.stack.errors import StackError
from devtools.stack.layout import Layout, State, info_from, load_state, process_names, save_state


@pytest.fixture
def fake_busybox(tmp_path: Path) -> Path:
    """A stand-in for /bin/busybox: lists two applets, like ``busybox --list-full``."""
    path = tmp_path / "busybox"
    path.write_text("#!/bin/sh\nprintf 'bin/sh\\nusr/bin/env\\nbin/busybox\\n'\n")
    path.chmod(0o755)
    return path


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {
            m.name: (tar.extractfile(m) or io.BytesIO()).read()
            for m in tar.getmembers()
            if m.isfile()
        }


def test_an_image_is_a_docker_archive_ctr_can_import(tmp_path: Path, fake_busybox: Path) -> None:
    spec = images.ImageSpec("jobreaper.local/test:1", ("/bin/sh", "-c", "true"), ())
    image_id = images.docker_archive(spec, tmp_path / "a.tar", fake_busybox)
    files = _members(tmp_path / "a.tar")
    (manifest,) = json.loads(files["manifest.json"])
    assert manifest["RepoTags"] == ["jobreaper.local/test:1"]
    config = json.loads(files[manifest["Config"]])
    assert image_id == "sha256:" + hashlib.sha256(files[manifest["Config"]]).hexdigest()
    (layer_name,) = manifest["Layers"]
    layer = files[layer_name]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c", "true"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        entries = {m.name: m for m in tar.getmembers()}
    assert entries["bin/busybox"].isfile() and entries["bin/busybox"].mode == 0o755
    assert entries["bin/sh"].issym() and entries["bin/sh"].linkname == "/bin/busybox"
    assert entries["usr/bin/env"].issym()
    assert entries["tmp"].isdir() and entries["tmp"].mode == 0o1777


def test_an_image_is_reproducible_byte_for_byte(tmp_path: Path, fake_busybox: Path) -> None:
    spec = images.IMAGES[0]
    first = images.docker_archive(spec, tmp_path / "1.tar", fake_busybox)
    second = images.docker_archive(spec, tmp_path / "2.tar", fake_busybox)
    assert first == second
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()


def test_without_busybox_the_error_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="apt-get install busybox-static"):
        images.docker_archive(images.IMAGES[1], tmp_path / "x.tar", tmp_path / "missing")


@pytest.mark.parametrize("name", ["a", "dev", "x" * 40, "realnode", "test"])
def test_bridge_names_fit_a_linux_interface_name(tmp_path: Path, name: str) -> None:
    layout = Layout(name, tmp_path)
    assert len(realnode._bridge(layout, 0)) <= 15  # IFNAMSIZ - 1


def test_two_stacks_get_different_bridges_and_subnets(tmp_path: Path) -> None:
    a, b = Layout("dev", tmp_path / "a"), Layout("realnode", tmp_path / "b")
    assert realnode._bridge(a, 0) != realnode._bridge(b, 0)
    assert realnode._subnet(a, 0) != realnode._subnet(b, 0)


def test_the_state_names_the_real_node_and_its_processes(tmp_path: Path) -> None:
    layout = Layout("rn", tmp_path)
    state = State(name="rn", nodes=["kwok-node-0"], real_nodes=realnode.node_names(1))
    state.ports.update(kafka=1, apiserver=2)
    save_state(layout, state)
    loaded = load_state(layout)
    assert loaded is not None and loaded.real_nodes == ["real-node-0"]
    assert process_names(loaded)[-2:] == ["containerd-real-node-0", "kubelet-real-node-0"]
    info = info_from(layout, loaded)
    assert info.real_nodes == ("real-node-0",)
    assert info.env()["JOBREAPER_REAL_NODES"] == "real-node-0"


def test_a_state_file_from_before_real_nodes_still_loads(tmp_path: Path) -> None:
    layout = Layout("old", tmp_path)
    layout.state.write_text(json.dumps({"name": "old", "nodes": ["kwok-node-0"], "up": True}))
    loaded = load_state(layout)
    assert loaded is not None and loaded.real_nodes == []
    loaded.ports.update(kafka=1, apiserver=2)
    assert process_names(loaded)[-1] == "kwok-kwok-node-0"
    assert "JOBREAPER_REAL_NODES" not in info_from(layout, loaded).env()


def test_freezing_a_node_that_is_not_real_is_refused_with_the_real_ones(tmp_path: Path) -> None:
    layout = Layout("rn", tmp_path)
    state = State(name="rn", nodes=["kwok-node-0"], ports={"kafka": 1, "apiserver": 2}, up=True)
    with pytest.raises(StackError, match=r"'kwok-node-0' is not a real node \(real nodes: \[\]\)"):
        freeze_kubelet(info_from(layout, state), "kwok-node-0")
