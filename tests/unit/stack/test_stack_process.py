"""Unit tests of the stack manager's pieces that need no stack: pid files, build keys, PKI."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.stack import build, config, process
from devtools.stack.certs import ensure_pki
from devtools.stack.errors import StackError
from devtools.stack.layout import Layout, State, load_state, save_state
from devtools.stack.util import run_logged


def test_spawned_process_is_found_and_stopped(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    pid_file = tmp_path / "run" / "sleeper.pid"
    record = process.spawn("sleeper", [sleep, "60"], pid_file=pid_file, log=tmp_path / "s.log")
    assert process.running(pid_file) == record
    assert process.rss_bytes(record) > 0
    assert process.stop(pid_file, timeout=5)
    assert not process.alive(record)
    assert not pid_file.exists()
    assert not process.stop(pid_file)  # nothing left to stop


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    """A pid file whose start time or executable no longer match is not ours."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    pid_file = tmp_path / "sleeper.pid"
    record = process.spawn("sleeper", [sleep, "60"], pid_file=pid_file, log=tmp_path / "s.log")
    try:
        for forged in (
            replace(record, start_ticks=record.start_ticks + 1),
            replace(record, exe="/usr/bin/some-other-program"),
        ):
            forged_file = tmp_path / "forged.pid"
            forged_file.write_text(json.dumps(forged.__dict__))
            assert process.running(forged_file) is None
            assert not process.stop(forged_file)
            assert process.alive(record), "stop() signalled a process that is not ours"
    finally:
        process.stop(pid_file, timeout=5)


def test_run_logged_failure_is_one_line_with_step_and_log(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    with pytest.raises(StackError) as info:
        run_logged(
            ["sh", "-c", "echo first; echo 'the real error' >&2; exit 3"], step="do X", log=log
        )
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("do X: exit status 3: the real error")
    assert f"(log: {log})" in message


def test_build_key_follows_the_pinning_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(
        config.repo_root() / "stack", repo / "stack", ignore=shutil.ignore_patterns("*_test.go")
    )
    monkeypatch.setenv("JOBREAPER_REPO", str(repo))
    monkeypatch.setenv("JOBREAPER_CACHE_DIR", str(tmp_path / "cache"))
    config.versions.cache_clear()
    try:
        before = build.build_for("etcd")
        assert before.key.startswith(f"etcd-{before.version}-")
        assert before.path.parent == tmp_path / "cache" / "builds"
        assert not before.complete
        main = repo / "stack" / "go" / "etcd" / "main.go"
        main.write_text(main.read_text() + "\n// changed\n")
        assert build.build_for("etcd").key != before.key
        assert build.build_for("kwok").key == build.build_for("kwok").key
    finally:
        config.versions.cache_clear()


def test_versions_come_from_the_pinning_files() -> None:
    v = config.versions()
    assert v.kube.startswith("v1.") and v.etcd.startswith("v3.6.") and v.kwok.startswith("v0.")
    assert v.kafka.startswith("3.")


def test_state_round_trip(tmp_path: Path) -> None:
    layout = Layout("unit", tmp_path / "unit")
    state = State(name="unit", ports={"kafka": 1234}, nodes=["kwok-node-0"], up=True, lost=["x"])
    save_state(layout, state)
    assert load_state(layout) == state


def test_invalid_stack_names_are_refused() -> None:
    for bad in ("", "../x", "A", "x" * 41, "a b"):
        with pytest.raises(StackError):
            config.check_stack_name(bad)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_pki_identities(tmp_path: Path) -> None:
    start = time.monotonic()
    pki = ensure_pki(tmp_path / "pki", tmp_path / "pki.log")
    assert pki.complete
    assert time.monotonic() - start < 30

    def subject(path: Path) -> str:
        out = subprocess.run(
            ["openssl", "x509", "-in", str(path), "-noout", "-subject"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    assert "O = system:masters" in subject(pki.client_crt("admin"))
    assert "system:kube-controller-manager" in subject(pki.client_crt("kube-controller-manager"))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki.ca_crt), str(pki.serving_crt)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # A second call reuses the PKI.
    mtime = pki.ca_crt.stat().st_mtime_ns
    ensure_pki(tmp_path / "pki", tmp_path / "pki.log")
    assert pki.ca_crt.stat().st_mtime_ns == mtime
