"""kwok's stages (``stack/kwok/stages.yaml``) against kwok's own stage engine: the Go
tests in ``stack/go/kwok`` say which stage a pod matches and after what delay
(docs/stack.md, "Pods on a managed node"). Run here so that a change of the stages
that breaks their contract fails ``./dev test``; Go's build cache makes a second
run take seconds (the first compiles kwok's lifecycle package: about 2 minutes)."""

from __future__ import annotations

import subprocess

import pytest

from devtools.stack import build, config

pytestmark = pytest.mark.stack


def test_the_stages_play_their_contract_in_kwoks_engine() -> None:
    done = subprocess.run(
        ["go", "test", "-count=1", "./..."],
        cwd=config.stack_sources() / "go" / "kwok",
        env=build.go_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ok" in done.stdout, done.stdout
