"""docker-compose.yml (issue 9) is a valid Compose file, shaped as docs/deploy.md says.

What ``docker compose config`` would do, without the docker compose CLI (whose build
from Go modules took 2-31 minutes): read the YAML as compose does (YAML 1.2
scalars, merge keys), interpolate ``${VAR:-default}`` and friends, validate the
result against the Compose Specification's JSON Schema (the copy compose itself
embeds, vendored and pinned in ``compose-spec/``), then make the cross-reference
checks compose makes after the schema (compose-go ``loader/validate.go``) for what
this file uses, and the project's own checks. Every check is also shown to fail on
a broken copy of the file.

Running the services from the file's commands and environments on the local stack
is ``tests/integration/deploy/test_deploy_compose.py``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SPEC = Path(__file__).parent / "compose-spec" / "compose-spec.json"
#: compose-go v2.9.1's schema/compose-spec.json (see compose-spec/README.md).
SPEC_SHA256 = "89f4bdc4ba651ff024118917a7cdb67d9d78c1af4bab9b12ec2fc85f5b7d90d3"
JOBREAPER_SERVICES = ("watcher", "killer", "executor", "config")
KUBECONFIG_TARGET = "/etc/jobreaper/kubeconfig"


# --- reading the file as compose does ------------------------------------------------


class _ComposeYamlLoader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, compose (go-yaml v3) YAML 1.2: there ``no``, ``on``,
    ``yes`` are strings, not booleans, ``80:80`` is a string, not a base-60 integer,
    and a date is a string. Only the 1.2 forms of booleans and numbers are kept."""


_ComposeYamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ComposeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ComposeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"),
    list("-+0123456789"),
)
_ComposeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


class InterpolationError(ValueError):
    pass


# $$ | ${...} | $NAME | ${ unclosed (refused). As in compose-go's template pattern,
# a $ followed by anything else is kept as it is.
_DOLLAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[_A-Za-z][_A-Za-z0-9]*)|(?P<open>\{))"
)
_BRACED = re.compile(r"(?P<name>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<word>.*))?", re.DOTALL)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (compose-go ``template``), without nesting:
    ``${A:-${B}}`` is refused here rather than substituted wrongly."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")  # unset: "" (compose warns)
        if match["open"]:
            raise InterpolationError(f"unclosed ${{ in {text!r}")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise InterpolationError(f"invalid interpolation format for {text!r}")
        name, op, word = braced["name"], braced["op"], braced["word"] or ""
        if "$" in word:
            raise InterpolationError(f"nested interpolation in {text!r}: not supported here")
        value = env.get(name)
        if op is None:
            return value or ""
        if op == ":-":
            return value or word
        if op == "-":
            return word if value is None else value
        if op == ":?":
            if not value:
                raise InterpolationError(f"required variable {name} is missing a value: {word}")
            return value
        if op == "?":
            if value is None:
                raise InterpolationError(f"required variable {name} is missing a value: {word}")
            return value
        if op == ":+":
            return word if value else ""
        return "" if value is None else word  # "+"

    return _DOLLAR.sub(one, text)


def _interpolated(node: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str):  # compose-go turns such keys into strings
                raise TypeError(f"{path}: key {key!r} is not a string")
        return {k: _interpolated(v, env, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolated(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load(text: str, env: Mapping[str, str] | None = None) -> Any:
    """The file as compose validates it: parsed, merge keys applied, interpolated
    with ``env`` only (not this process's environment, so the test does not depend
    on who runs it; compose would also read a ``.env`` file: there is none)."""
    return _interpolated(yaml.load(text, Loader=_ComposeYamlLoader), env or {}, "")


# --- the Compose Specification's schema ----------------------------------------------


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SPEC.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Of a ``oneOf``'s failures, the deepest (as compose reports it), not
    "is not valid under any of the given schemas"."""
    if not error.context:
        return error
    return max(
        (_most_specific(e) for e in error.context),
        key=lambda e: len(e.absolute_path) + (e.validator == "additionalProperties"),
    )


def schema_errors(compose: Any) -> list[str]:
    """Every place the file breaks the schema, as ``path: message``."""
    return sorted(
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in map(_most_specific, _validator().iter_errors(compose))
    )


# --- normalising what compose accepts in several forms -------------------------------


def _command(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _environment(value: Any) -> dict[str, str | None]:
    def text(v: Any) -> str | None:
        if v is None or isinstance(v, str):
            return v
        return str(v).lower() if isinstance(v, bool) else str(v)

    if isinstance(value, list):
        pairs = [item.split("=", 1) for item in value]
        return {p[0]: (p[1] if len(p) == 2 else None) for p in pairs}
    return {k: text(v) for k, v in (value or {}).items()}


def _depends_on(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, list):  # short syntax
        return {name: {"condition": "service_started", "required": True} for name in value}
    return {k: {"required": True, **v} for k, v in (value or {}).items()}


def _healthcheck_test(value: Any) -> list[str]:
    return ["CMD-SHELL", value] if isinstance(value, str) else [str(v) for v in value]


def _is_path(source: str) -> bool:
    return source[:1] in (".", "/", "~")


def _mounts(volumes: Any) -> dict[str, dict[str, Any]]:
    """Volumes by target: ``{"type", "source", "read_only"}``, from either syntax."""
    mounts: dict[str, dict[str, Any]] = {}
    for volume in volumes or ():
        if isinstance(volume, dict):
            entry = {
                "type": volume.get("type"),
                "source": volume.get("source"),
                "read_only": bool(volume.get("read_only", False)),
            }
            target = volume["target"]
        else:
            parts = volume.split(":")
            if len(parts) > 3:
                raise ValueError(f"volume {volume!r}: too many ':' for this test's parser")
            source, target, mode = ("", parts[0], "") if len(parts) == 1 else (*parts, "")[:3]
            entry = {
                "type": "bind" if _is_path(source) else "volume",
                "source": source,
                "read_only": "ro" in mode.split(","),
            }
        if target in mounts:
            raise AssertionError(f"target {target} mounted twice")
        mounts[target] = entry
    return mounts


# --- what compose checks after the schema, and the project's checks ------------------


def check_consistency(compose: Any) -> None:
    """compose-go's ``checkConsistency``, for what this file uses."""
    services = compose["services"]
    for name, service in services.items():
        where = f"services.{name}"
        assert service.get("image") or service.get("build"), f"{where}: no image nor build"
        for dependency in _depends_on(service.get("depends_on")):
            assert dependency in services, f"{where} depends on undefined service {dependency}"
        for network in service.get("networks") or ():
            assert network in (compose.get("networks") or {}), f"{where}: undefined network"
        health = service.get("healthcheck") or {}
        if health.get("test"):
            first = _healthcheck_test(health["test"])[0]
            assert first in ("CMD", "CMD-SHELL", "NONE"), f"{where}: healthcheck.test {first}"
        mounts = _mounts(service.get("volumes"))  # a target mounted twice raises
        for tmpfs in service.get("tmpfs") or ():
            tmpfs = tmpfs if isinstance(tmpfs, str) else str(tmpfs)
            assert tmpfs.split(":")[0] not in mounts, f"{where}: {tmpfs} mounted twice"
        for target, mount in mounts.items():
            if mount["type"] == "volume" and mount["source"]:
                assert mount["source"] in (compose.get("volumes") or {}), (
                    f"{where}: {target} refers to undefined volume {mount['source']}"
                )
        for kind in ("configs", "secrets"):
            for ref in service.get(kind) or ():
                source = ref if isinstance(ref, str) else ref["source"]
                assert source in (compose.get(kind) or {}), f"{where}: undefined {kind} {source}"
    # No dependency cycle.
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dependency in _depends_on(services[name].get("depends_on")):
                visit(dependency, (*path, name))
            done.add(name)

    for name in services:
        visit(name, ())


def check_project(compose: Any) -> None:
    """What docs/deploy.md says of the file."""
    services = compose["services"]
    assert set(services) == {"kafka", "topics", *JOBREAPER_SERVICES}, sorted(services)

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9."), kafka["image"]
    env = _environment(kafka.get("environment"))
    assert env.get("KAFKA_PROCESS_ROLES") == "broker,controller", "Kafka is not in KRaft mode"
    assert (kafka.get("healthcheck") or {}).get("test"), "kafka has no health check"

    topics = services["topics"]
    assert _command(topics["command"])[:2] == ["topics", "create"], topics["command"]
    depends = _depends_on(topics.get("depends_on"))
    assert depends.get("kafka", {}).get("condition") == "service_healthy", "topics: kafka"
    assert topics.get("restart") == "no", f"topics restart {topics.get('restart')!r}"

    for name in JOBREAPER_SERVICES:
        service = services[name]
        assert _command(service["command"]) == [name, "run"], (name, service["command"])
        depends = _depends_on(service.get("depends_on"))
        assert depends.get("kafka", {}).get("condition") == "service_healthy", (name, "kafka")
        assert depends.get("topics", {}).get("condition") == "service_completed_successfully", (
            name,
            "topics",
        )
        health = (service.get("healthcheck") or {}).get("test") or []
        assert "/readyz" in " ".join(_healthcheck_test(health)), (name, "health check")
        assert service.get("read_only") is True, (name, "read_only")
        assert service.get("cap_drop") == ["ALL"], (name, "cap_drop")
        user = str(service.get("user", ""))
        assert user and not user.startswith("0"), (name, f"user {user!r}")
        env = _environment(service.get("environment"))
        assert env.get("JOBREAPER_KAFKA_CREATE_TOPICS") == "false", (name, "creates topics")
        mounts = _mounts(service.get("volumes"))
        if name in ("watcher", "executor", "killer"):  # the killer: the API server's clock
            assert mounts.get(KUBECONFIG_TARGET, {}).get("read_only") is True, (name, "kubeconfig")
        else:  # the killer needs no Kubernetes; the config service reads a file here
            assert KUBECONFIG_TARGET not in mounts, (name, "kubeconfig mounted")


def check(text: str, env: Mapping[str, str] | None = None) -> Any:
    """All of it; returns the loaded file."""
    compose = load(text, env)
    errors = schema_errors(compose)
    assert not errors, "\n".join(errors)
    check_consistency(compose)
    check_project(compose)
    return compose


# --- tests ---------------------------------------------------------------------------


def test_the_vendored_schema_is_the_pinned_one() -> None:
    assert hashlib.sha256(SPEC.read_bytes()).hexdigest() == SPEC_SHA256


def test_the_compose_file_is_valid_and_as_described() -> None:
    compose = check(COMPOSE_FILE.read_text())
    # The defaults of the interpolated values.
    watcher = compose["services"]["watcher"]
    assert watcher["user"] == "10001:10001"
    assert watcher["image"] == "jobreaper:0.1.0"
    assert _mounts(watcher["volumes"])[KUBECONFIG_TARGET]["source"] == "~/.kube/config"


def test_the_variables_documented_for_a_laptop_are_substituted() -> None:
    env = {"JOBREAPER_UID": "1000", "JOBREAPER_GID": "1001", "JOBREAPER_KUBECONFIG_FILE": "/k"}
    compose = check(COMPOSE_FILE.read_text(), env)
    for name in ("watcher", "executor", "killer"):
        service = compose["services"][name]
        assert service["user"] == "1000:1001"
        assert _mounts(service["volumes"])[KUBECONFIG_TARGET]["source"] == "/k"


def _loaded() -> Any:
    return load(COMPOSE_FILE.read_text())


def _set(path: str, value: Any) -> Callable[[Any], None]:
    *parents, last = path.split(".")

    def mutate(compose: Any) -> None:
        node = compose
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[Any], None]:
    *parents, last = path.split(".")

    def mutate(compose: Any) -> None:
        node = compose
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(
            _set("services.kafka.ports", "not-a-list"), "services.kafka.ports: ", id="ports"
        ),
        pytest.param(
            _set("service", {}),
            "(top): 'service' does not match any of the regexes",
            id="unknown-top-level-key",
        ),
        pytest.param(
            _set("services.watcher.depends_on.topics.condition", "service_finished"),
            "services.watcher.depends_on.topics.condition: 'service_finished' is not one of",
            id="unknown-condition",
        ),
        pytest.param(
            _set("services.killer.restrat", "always"),
            "services.killer: 'restrat' does not match any of the regexes",
            id="typo",
        ),
        pytest.param(_set("services.config.read_only", ["yes"]), "read_only", id="type"),
        pytest.param(_set("volumes", ["kafka-data"]), "volumes: ", id="volumes-list"),
        pytest.param(
            _set("services.kafka.healthcheck.interval", 10),
            "services.kafka.healthcheck.interval: 10 is not of type 'string'",
            id="duration-type",
        ),
    ],
)
def test_the_schema_refuses_a_broken_file(mutate: Callable[[Any], None], error: str) -> None:
    compose = _loaded()
    mutate(compose)
    errors = schema_errors(compose)
    assert any(error in e for e in errors), errors


def test_the_schema_reads_the_yaml_as_compose_does() -> None:
    """``restart: no`` unquoted is the string "no" for compose (YAML 1.2): accepted.
    Read as YAML 1.1 (PyYAML's default) it would be ``False`` and refused."""
    text = COMPOSE_FILE.read_text().replace('restart: "no"', "restart: no")
    assert text != COMPOSE_FILE.read_text()
    assert check(text)["services"]["topics"]["restart"] == "no"
    assert schema_errors(yaml.safe_load(text))  # what the loader above is for
    ports = load("p: [80:80, 1:30, on, 2024-01-01, 0x1F, 1.5, true]")["p"]
    assert ports == ["80:80", "1:30", "on", "2024-01-01", 31, 1.5, True]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-d}:${B:-e}", {"A": "1"}, "1:e"),
        ("${A}", {}, ""),
        ("$A/x", {"A": "a"}, "a/x"),
        ("$${A}", {"A": "a"}, "${A}"),
        ("${A:+set}", {"A": "a"}, "set"),
        ("${A:+set}", {}, ""),
        ("${A+set}", {"A": ""}, "set"),
        ("${A:?must}", {"A": "a"}, "a"),
        ("~/.kube/config", {}, "~/.kube/config"),
        ("a$ b$1", {}, "a$ b$1"),
    ],
)
def test_interpolation(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


@pytest.mark.parametrize(
    ("text", "env"),
    [("${A:?must}", {}), ("${A?must}", {}), ("${A:-${B}}", {}), ("${}", {}), ("${A", {})],
)
def test_interpolation_refuses(text: str, env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, env)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(
            _set("services.topics.depends_on", {"kafkaa": {"condition": "service_healthy"}}),
            "depends on undefined service kafkaa",
            id="undefined-dependency",
        ),
        pytest.param(
            _set("services.kafka.depends_on", {"topics": {"condition": "service_started"}}),
            "dependency cycle",
            id="cycle",
        ),
        pytest.param(_delete("volumes"), "undefined volume kafka-data", id="undefined-volume"),
        pytest.param(
            _set("services.kafka.healthcheck.test", ["RUN", "true"]),
            "healthcheck.test RUN",
            id="healthcheck-test",
        ),
        pytest.param(
            _set("services.config.volumes", ["./a:/tmp", "./b:/tmp"]),
            "mounted twice",
            id="mounted-twice",
        ),
        pytest.param(
            _set("services.killer.volumes", ["./a:/tmp"]), "/tmp mounted twice", id="tmpfs-and-bind"
        ),
        pytest.param(_delete("services.killer.image"), None, id="build-only-is-fine"),
    ],
)
def test_the_consistency_checks_refuse_a_broken_file(
    mutate: Callable[[Any], None], error: str | None
) -> None:
    compose = _loaded()
    mutate(compose)
    assert not schema_errors(compose)  # the schema alone would accept it
    if error is None:
        check_consistency(compose)
        return
    with pytest.raises(AssertionError, match=re.escape(error)):
        check_consistency(compose)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(_set("services.notify", {"image": "x"}), "notify", id="extra-service"),
        pytest.param(_set("services.kafka.image", "apache/kafka:4.0.0"), "kafka:4", id="kafka"),
        pytest.param(
            _set("services.kafka.environment.KAFKA_PROCESS_ROLES", "broker"), "KRaft", id="kraft"
        ),
        pytest.param(_delete("services.kafka.healthcheck"), "no health check", id="kafka-health"),
        pytest.param(_set("services.topics.command", "topics list"), "topics", id="topics-cmd"),
        pytest.param(
            _set("services.topics.depends_on.kafka.condition", "service_started"),
            "topics: kafka",
            id="topics-waits-for-kafka",
        ),
        pytest.param(_set("services.topics.restart", "on-failure"), "on-failure", id="one-shot"),
        pytest.param(_set("services.killer.command", ["watcher", "run"]), "killer", id="cmd"),
        pytest.param(
            _set("services.executor.command", "executor run"), None, id="string-command-is-fine"
        ),
        pytest.param(
            _set("services.watcher.depends_on.kafka.condition", "service_started"),
            "'watcher', 'kafka'",
            id="waits-for-kafka",
        ),
        pytest.param(
            _set("services.config.depends_on", ["kafka", "topics"]),
            "'config', 'kafka'",
            id="short-depends-on",
        ),
        pytest.param(
            _set("services.executor.depends_on.topics.condition", "service_healthy"),
            "'executor', 'topics'",
            id="waits-for-topics",
        ),
        pytest.param(
            _set("services.killer.healthcheck.test", ["CMD", "true"]),
            "health check",
            id="readyz",
        ),
        pytest.param(_set("services.watcher.read_only", False), "read_only", id="read-only"),
        pytest.param(_set("services.config.cap_drop", ["NET_RAW"]), "cap_drop", id="cap-drop"),
        pytest.param(_set("services.executor.user", "0:0"), "user '0:0'", id="root"),
        pytest.param(_delete("services.killer.user"), "user ''", id="no-user"),
        pytest.param(
            _set("services.watcher.environment.JOBREAPER_KAFKA_CREATE_TOPICS", "true"),
            "creates topics",
            id="creates-topics",
        ),
        pytest.param(
            _set("services.config.environment", ["JOBREAPER_KAFKA_CREATE_TOPICS=false"]),
            None,
            id="environment-list-is-fine",
        ),
        pytest.param(
            _set("services.watcher.volumes", ["/k:/etc/jobreaper/kubeconfig"]),
            "'watcher', 'kubeconfig'",
            id="kubeconfig-writable",
        ),
        pytest.param(
            _set("services.executor.volumes", []), "'executor', 'kubeconfig'", id="no-kubeconfig"
        ),
        pytest.param(
            _set(
                "services.config.volumes",
                [{"type": "bind", "source": "/k", "target": KUBECONFIG_TARGET, "read_only": True}],
            ),
            "'config', 'kubeconfig mounted'",
            id="config-kubeconfig",
        ),
    ],
)
def test_the_project_checks_refuse_a_broken_file(
    mutate: Callable[[Any], None], error: str | None
) -> None:
    compose = _loaded()
    mutate(compose)
    assert not schema_errors(compose)  # valid Compose, not what this project wants
    if error is None:
        check_project(compose)
        return
    with pytest.raises(AssertionError, match=re.escape(error)):
        check_project(compose)


def test_a_broken_file_fails_the_whole_check() -> None:
    """The one call the file's test makes: a schema error stops it."""
    text = COMPOSE_FILE.read_text().replace(
        "condition: service_completed_successfully", "condition: service_finished"
    )
    with pytest.raises(AssertionError, match="service_finished"):
        check(text)
