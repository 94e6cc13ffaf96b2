"""The two ways the image is made keep one contract: the Dockerfile (users with
Docker) and ``devtools/stack/appimage.py`` (the local stack, no container engine).

``appimage.CONTRACT`` declares the entry point, command, user, port, environment and
health check once; the Dockerfile's final stage must declare exactly that, and the
image the builder writes must carry it in its config. A change to either side
without the other fails here. (That the built image runs as promised, uid 10001 on
a read-only root, is checked on the real node: tests/e2e/test_in_cluster.py.)
"""

from __future__ import annotations

import json
import re
import shlex
import tarfile
from typing import Any

import pytest

from devtools.stack import appimage
from devtools.stack.util import say_stderr
from tests.integration.deploy.test_deploy_dockerfile import _stages

C = appimage.CONTRACT


def _final_stage() -> dict[str, Any]:
    """The final stage's ENV (in order), USER, EXPOSE, ENTRYPOINT, CMD, HEALTHCHECK."""
    found: dict[str, Any] = {"ENV": {}, "EXPOSE": []}
    for line in _stages()[-1]:
        instruction, _, rest = line.partition(" ")
        rest = rest.strip()
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                found["ENV"][key] = value
        elif instruction == "EXPOSE":
            found["EXPOSE"] += [p if "/" in p else f"{p}/tcp" for p in rest.split()]
        elif instruction in ("ENTRYPOINT", "CMD"):
            found[instruction] = json.loads(rest)
        elif instruction == "USER":
            found["USER"] = rest
        elif instruction == "HEALTHCHECK":
            options, _, command = rest.partition(" CMD ")
            found["HEALTHCHECK"] = {
                "options": dict(re.findall(r"--([a-z-]+)=(\S+)", options)),
                "cmd": ["CMD", *json.loads(command)],
            }
    return found


def test_the_dockerfile_declares_the_contract() -> None:
    stage = _final_stage()
    assert tuple(stage["ENTRYPOINT"]) == C.entrypoint
    assert tuple(stage["CMD"]) == C.cmd
    assert stage["USER"] == C.user
    assert tuple(stage["EXPOSE"]) == C.exposed_ports
    contract_env = dict(C.env)
    assert set(stage["ENV"]) == set(contract_env), "the same variables"
    for key, value in stage["ENV"].items():
        if key == "PATH":  # "/opt/jobreaper/bin:$PATH": the venv first, then the base's
            assert value == "/opt/jobreaper/bin:$PATH"
            assert contract_env["PATH"].startswith("/opt/jobreaper/bin:")
        else:
            assert value == contract_env[key], key
    health = stage["HEALTHCHECK"]
    assert tuple(health["cmd"]) == C.healthcheck
    assert health["options"] == {
        "interval": f"{C.healthcheck_interval_s}s",
        "timeout": f"{C.healthcheck_timeout_s}s",
        "start-period": f"{C.healthcheck_start_period_s}s",
        "retries": str(C.healthcheck_retries),
    }


def test_the_contract_check_can_fail() -> None:
    """The parser reads what the Dockerfile says: a changed user is seen."""
    stage = _final_stage()
    assert stage["USER"] != "0:0" and stage["ENV"]["JOBREAPER_HTTP_PORT"] == "8080"


@pytest.fixture(scope="module")
def built() -> appimage.Image:
    if not appimage.PYTHON.is_file():
        pytest.skip(f"{appimage.PYTHON} is missing: the image is made from Debian's python3.11")
    return appimage.ensure_image(say_stderr)


def test_the_built_image_carries_the_contract(built: appimage.Image) -> None:
    config = appimage.read_config(built.archive)
    runtime = config["config"]
    assert isinstance(runtime, dict)
    assert tuple(runtime["Entrypoint"]) == C.entrypoint
    assert tuple(runtime["Cmd"]) == C.cmd
    assert runtime["User"] == C.user
    assert tuple(runtime["ExposedPorts"]) == C.exposed_ports
    env = dict(e.split("=", 1) for e in runtime["Env"])
    assert {k: env[k] for k, _ in C.env} == dict(C.env)
    assert tuple(runtime["Healthcheck"]["Test"]) == C.healthcheck
    assert runtime["Healthcheck"]["Interval"] == C.healthcheck_interval_s * 10**9


def test_the_built_image_holds_the_virtualenv_and_its_user(built: appimage.Image) -> None:
    """What the entry point and the user need is in the layers: the ``jobreaper``
    script naming the image's interpreter, Python, and uid 10001 in /etc/passwd."""

    with tarfile.open(built.archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        names: dict[str, bytes | None] = {}
        for layer_name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer_name)) as layer:
                for member in layer:
                    wanted = member.name in (
                        "opt/jobreaper/bin/jobreaper",
                        "etc/passwd",
                        "opt/jobreaper/pyvenv.cfg",
                    )
                    data = layer.extractfile(member) if wanted and member.isfile() else None
                    names[member.name] = data.read() if data else None
    script = names["opt/jobreaper/bin/jobreaper"]
    assert script is not None and script.startswith(b"#!/opt/jobreaper/bin/python\n")
    assert b"jobreaper:x:10001:10001:" in (names["etc/passwd"] or b"")
    assert "usr/bin/python3.11" in names
    assert not [n for n in names if n.startswith("opt/jobreaper/") and "/pytest/" in n]
    assert not [n for n in names if "/devtools/" in n], "the development tools in the image"
