"""``jobreaper config``: run the config service, and read or change the configuration.

``get``, ``set``, ``validate`` and ``diff`` talk to the service's HTTP API
(``--url``, env ``JOBREAPER_CONFIG_URL``); ``get --topic`` and ``history``
read the ``config`` topic itself (Kafka settings as for every service).
``set`` sends a Kubernetes bearer token (``--token-file``, env
``JOBREAPER_CONFIG_TOKEN``, else the kubeconfig's user, else a pod's
ServiceAccount token); the service records that token's user as the author.

Exit codes: 0 done; 1 the service or Kafka could not be reached (or answered
something unexpected); 2 bad usage or an unreadable file; 3 the
configuration is invalid (every problem is printed with its JSON path);
4 conflict: the configuration changed since the version you based yours on;
5 this service does not accept the change (a standby, or its writer is a
ConfigMap or a file); 6 not authenticated (401) or not allowed (403).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import typer
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.topics import CONFIG
from services.runtime.cli_support import (
    BOOTSTRAP_HELP,
    HTTP_PORT_HELP,
    KUBECONFIG_HELP,
    PREFIX_HELP,
    KubeConfigError,
    fail,
    load_settings,
)
from services.runtime.kafka import read_topics_to_end
from services.runtime.kube import kubeconfig_bearer_token, load_api_client
from services.runtime.messages import CODEC
from services.runtime.service import serve
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

from .api import head_json, snapshot_json
from .service import ConfigService
from .settings import ConfigServiceSettings
from .validation import validate_text
from .versioning import Head

app = typer.Typer(
    help="The dynamic configuration: run the service; get, set, validate, diff, history.",
    no_args_is_help=True,
)

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_CONFLICT = 4
EXIT_REFUSED = 5
EXIT_DENIED = 6

TOKEN_ENV = "JOBREAPER_CONFIG_TOKEN"
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

URL_OPTION = typer.Option(
    "http://127.0.0.1:8081",
    "--url",
    envvar="JOBREAPER_CONFIG_URL",
    help="The config service's API (env: JOBREAPER_CONFIG_URL)",
)


# -- the service ------------------------------------------------------------------


@app.command("run")
def run(
    source: str | None = typer.Option(
        None, help="The writer: configmap, file or http (env: JOBREAPER_CONFIG_SOURCE)"
    ),
    configmap: str | None = typer.Option(
        None, help="NAMESPACE/NAME of the ConfigMap (default default/jobreaper-config)"
    ),
    file: str | None = typer.Option(None, help="JSON file to poll (source=file)"),
    api_port: int | None = typer.Option(
        None, help="Port of the /config API (env: JOBREAPER_CONFIG_API_PORT, default 8081)"
    ),
    no_lease: bool = typer.Option(
        False, "--no-lease", help="No Lease election (one replica, no Kubernetes needed)"
    ),
    kubeconfig: str | None = typer.Option(None, help=KUBECONFIG_HELP),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
    http_port: int | None = typer.Option(None, help=HTTP_PORT_HELP),
) -> None:
    """Validate changes from one source and publish them as versioned snapshots.

    Every replica serves GET /config; the holder of the Lease (and of the Kafka
    transactional id) is the one writer.
    """
    kafka, service = load_settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        kubeconfig=kubeconfig,
        http_port=http_port,
    )
    overrides: dict[str, Any] = {}
    if source is not None:
        overrides["source"] = source
    if configmap is not None:
        namespace, slash, name = configmap.rpartition("/")
        if not slash or not namespace or not name:
            raise fail(f"--configmap {configmap!r}: give NAMESPACE/NAME", EXIT_USAGE)
        overrides.update(configmap_namespace=namespace, configmap_name=name)
    if file is not None:
        overrides["file"] = file
    if api_port is not None:
        overrides["api_port"] = api_port
    if no_lease:
        overrides["lease"] = False
    try:
        settings = ConfigServiceSettings(**overrides)
    except ValueError as exc:
        raise fail(f"invalid settings: {exc}", EXIT_USAGE) from exc

    async def main() -> None:
        api = await load_api_client(service.kubeconfig) if settings.needs_kubernetes else None
        try:
            await serve(ConfigService(kafka, settings, api=api), service, "config")
        finally:
            if api is not None:
                await api.close()

    try:
        asyncio.run(main())
    except KubeConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    except KafkaError as exc:
        raise fail(f"Kafka: {exc}", EXIT_UNREACHABLE) from exc


# -- talking to the service -----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def call(
    url: str,
    method: str,
    path: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to the service; raises :class:`typer.Exit` when it cannot be reached."""
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method=method, headers=headers or {}
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(
            f"cannot reach the config service at {url}: {reason} (set --url or "
            "JOBREAPER_CONFIG_URL)",
            EXIT_UNREACHABLE,
        ) from exc
    try:
        body = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        body = {"error": raw.decode(errors="replace")[:300]}
    if not isinstance(body, dict):
        body = {"error": f"unexpected answer {body!r}"[:300]}
    return Answer(status, body, got)


def read_file(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from exc


def print_problems(body: dict[str, Any]) -> None:
    errors = body.get("errors") or []
    noun = "problem" if len(errors) == 1 else "problems"
    typer.echo(f"invalid configuration: {len(errors)} {noun}", err=True)
    for issue in errors:
        typer.echo(f"  {issue.get('path')}: {issue.get('message')}", err=True)
    print_warnings(body)


def print_warnings(body: dict[str, Any]) -> None:
    for issue in body.get("warnings") or []:
        typer.echo(f"  warning: {issue.get('path')}: {issue.get('message')}", err=True)


def unexpected(answer: Answer) -> typer.Exit:
    message = answer.body.get("error") or answer.body
    if answer.status in (405, 503):
        return fail(f"{message}", EXIT_REFUSED)
    return fail(f"HTTP {answer.status}: {message}", EXIT_UNREACHABLE)


@app.command("get")
def get(
    url: str = URL_OPTION,
    topic: bool = typer.Option(False, "--topic", help="Read the config topic instead of the API"),
    as_json: bool = typer.Option(
        False, "--json", help="Print version, author, diff and config as one JSON object"
    ),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """Print the configuration in force (JSON on stdout, its version on stderr)."""
    if topic:
        snapshots = _read_snapshots(kafka_bootstrap, topic_prefix)
        newest = max(snapshots, key=lambda s: s.version) if snapshots else None
        body: dict[str, Any] = head_json(Head.of(newest))
    else:
        answer = call(url, "GET", "/config")
        if answer.status != 200:
            raise unexpected(answer)
        body = answer.body
    if as_json:
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    typer.echo(json.dumps(body.get("config"), indent=2, sort_keys=True))
    who = f" by {body['author']}" if body.get("author") else ""
    when = f" at {body['changed_at']}" if body.get("changed_at") else ""
    typer.echo(
        f"version {body.get('version')}{who}{when} ({body.get('source') or 'defaults'})", err=True
    )


@dataclass(frozen=True)
class Credentials:
    token: str | None
    origin: str
    """Where the token came from (or why there is none), for error messages."""


def credentials(token_file: str | None, kubeconfig: str | None) -> Credentials:
    """The bearer token ``set`` sends: ``--token-file``, else ``$JOBREAPER_CONFIG_TOKEN``,
    else the kubeconfig's current user, else this pod's ServiceAccount token."""
    if token_file:
        from_file = read_file(token_file).decode(errors="replace").strip()
        if not from_file:
            raise fail(f"the token file {token_file} is empty", EXIT_USAGE)
        return Credentials(from_file, f"the token file {token_file}")
    if os.environ.get(TOKEN_ENV, "").strip():
        return Credentials(os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    token: str | None
    try:
        token = asyncio.run(kubeconfig_bearer_token(kubeconfig))
    except KubeConfigError as exc:
        typer.echo(f"jobreaper: warning: {exc}; sending no token", err=True)
        token = None
    if token:
        return Credentials(token, f"the current user of the kubeconfig {where}")
    if os.path.exists(SERVICE_ACCOUNT_TOKEN):
        with open(SERVICE_ACCOUNT_TOKEN) as handle:
            token = handle.read().strip()
        if token:
            return Credentials(token, f"this pod's ServiceAccount token {SERVICE_ACCOUNT_TOKEN}")
    return Credentials(
        None, f"no token: none in --token-file, ${TOKEN_ENV} or the kubeconfig {where}"
    )


def denied(answer: Answer, creds: Credentials) -> typer.Exit:
    """A 401 or 403, with what was sent and how to fix it."""
    message = str(answer.body.get("error") or answer.body)
    sent = f"sent: {creds.origin}" if creds.token else creds.origin
    if answer.status == 401:
        sent += (
            f"; give a Kubernetes bearer token with --token-file FILE or ${TOKEN_ENV} "
            "(e.g. kubectl create token SERVICEACCOUNT > FILE)"
        )
    return fail(f"HTTP {answer.status}: {message} ({sent})", EXIT_DENIED)


@app.command("set")
def set_config(
    file: str = typer.Argument(..., help="JSON file with the whole configuration ('-': stdin)"),
    url: str = URL_OPTION,
    version: int | None = typer.Option(
        None, "--version", help="The version your change is based on (If-Match); default: current"
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite whatever is current (If-Match: *)"
    ),
    token_file: str | None = typer.Option(
        None,
        "--token-file",
        envvar="JOBREAPER_CONFIG_TOKEN_FILE",
        help="File holding a Kubernetes bearer token (kubectl create token SA > FILE; env: "
        f"JOBREAPER_CONFIG_TOKEN_FILE). Else ${TOKEN_ENV}, else the kubeconfig's user.",
    ),
    kubeconfig: str | None = typer.Option(
        None,
        "--kubeconfig",
        envvar="JOBREAPER_KUBECONFIG",
        help="Kubeconfig whose user's token to send (default: $KUBECONFIG, ~/.kube/config)",
    ),
    author: str | None = typer.Option(None, "--author", hidden=True),
    retries: int = typer.Option(5, help="Attempts while the service has no writer (503)"),
) -> None:
    """Publish a new configuration (needs a service with source=http).

    The service authenticates the token you send (a TokenReview) and checks that its
    user may update configs.jobreaper.io (a SubjectAccessReview); that user is
    recorded as the author.
    """
    if author is not None:
        raise fail(
            "--author is gone: the author recorded is the user of the token you send "
            "(--token-file, $JOBREAPER_CONFIG_TOKEN or your kubeconfig), as the API server "
            "names it",
            EXIT_USAGE,
        )
    if file == "-" and token_file == "-":
        raise fail("the configuration and the token cannot both come from stdin", EXIT_USAGE)
    data = read_file(file)
    creds = credentials(token_file, kubeconfig)
    if force:
        if_match = "*"
    elif version is not None:
        if_match = f'"{version}"'
    else:
        current = call(url, "GET", "/config")
        if current.status != 200:
            raise unexpected(current)
        if_match = current.headers.get("ETag") or f'"{current.body.get("version")}"'
        typer.echo(f"based on version {current.body.get('version')} (the current one)", err=True)
    headers = {"If-Match": if_match}
    if creds.token:
        headers["Authorization"] = f"Bearer {creds.token}"
    for attempt in range(max(1, retries)):
        answer = call(url, "PUT", "/config", data=data, headers=headers)
        if answer.status != 503 or attempt == retries - 1:
            break
        time.sleep(min(1.0, float(answer.headers.get("Retry-After", "1") or 1)))
    body = answer.body
    if answer.status == 200:
        if body.get("published"):
            typer.echo(f"published version {body.get('version')}")
            for line in body.get("diff") or []:
                typer.echo(f"  {line}")
        else:
            typer.echo(f"unchanged: version {body.get('version')} already says this")
        print_warnings(body)
        return
    if answer.status == 422:
        print_problems(body)
        raise typer.Exit(EXIT_INVALID)
    if answer.status == 409:
        raise fail(str(body.get("error")), EXIT_CONFLICT)
    if answer.status in (401, 403):
        raise denied(answer, creds)
    raise unexpected(answer)


def _validate_remote(url: str, data: bytes) -> dict[str, Any]:
    answer = call(url, "POST", "/config/validate", data=data)
    if answer.status == 422:
        print_problems(answer.body)
        raise typer.Exit(EXIT_INVALID)
    if answer.status != 200:
        raise unexpected(answer)
    return answer.body


@app.command("validate")
def validate(
    file: str = typer.Argument(..., help="JSON file ('-': stdin)"),
    url: str = URL_OPTION,
    local: bool = typer.Option(False, "--local", help="Validate here, without the service"),
) -> None:
    """Check a configuration without publishing it: every problem, with its JSON path."""
    data = read_file(file)
    if local:
        report = validate_text(data)
        body: dict[str, Any] = {
            "errors": [i.as_json() for i in report.errors],
            "warnings": [i.as_json() for i in report.warnings],
        }
        if not report.ok:
            print_problems(body)
            raise typer.Exit(EXIT_INVALID)
        typer.echo("valid")
        print_warnings(body)
        return
    body = _validate_remote(url, data)
    typer.echo(f"valid (against version {body.get('version')})")
    print_warnings(body)


@app.command("diff")
def diff_command(
    file: str = typer.Argument(..., help="JSON file ('-': stdin)"),
    url: str = URL_OPTION,
) -> None:
    """What publishing this file would change in the configuration in force."""
    body = _validate_remote(url, read_file(file))
    lines = body.get("diff") or []
    if not lines:
        typer.echo(f"no change against version {body.get('version')}")
    else:
        typer.echo(f"against version {body.get('version')}:")
        for line in lines:
            typer.echo(f"  {line}")
    print_warnings(body)


# -- reading the topic -------------------------------------------------------------


def _read_snapshots(bootstrap: str | None, prefix: str | None) -> list[ConfigSnapshot]:
    overrides = {k: v for k, v in {"bootstrap": bootstrap, "topic_prefix": prefix}.items() if v}
    settings = KafkaSettings(**overrides)  # type: ignore[arg-type]
    topic = TopicNames(settings.topic_prefix)(CONFIG)
    out: list[ConfigSnapshot] = []

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            message = CODEC.decode(record.headers, record.value, CONFIG).message
        except DecodeError:
            return
        if isinstance(message, ConfigSnapshot):
            out.append(message)

    try:
        asyncio.run(read_topics_to_end(settings, [topic], keep, client_id="jobreaper-config-cli"))
    except KafkaError as exc:
        raise fail(f"cannot read {topic} from Kafka at {settings.bootstrap}: {exc}") from exc
    return out


@app.command("history")
def history(
    limit: int = typer.Option(20, min=1, help="Show the newest N versions"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """The versions on the config topic, oldest first, with who changed what.

    The topic is compacted: old versions go once Kafka compacts it (the newest stays).
    """
    snapshots = _read_snapshots(kafka_bootstrap, topic_prefix)
    seen: dict[int, int] = {}
    for snapshot in snapshots:
        seen[snapshot.version] = seen.get(snapshot.version, 0) + 1
    for snapshot in snapshots[-limit:]:
        if as_json:
            typer.echo(json.dumps(snapshot_json(snapshot), sort_keys=True))
            continue
        when = snapshot.changed_at.isoformat().replace("+00:00", "Z")
        typer.echo(f"v{snapshot.version}  {when}  {snapshot.author or '?'}  {snapshot.source}")
        for line in snapshot.diff or ("(no change summary)",):
            typer.echo(f"    {line}")
    if not snapshots:
        typer.echo("no version published yet: the built-in defaults (version 0) are in force")
    duplicated = sorted(v for v, n in seen.items() if n > 1)
    if duplicated:
        raise fail(f"versions published more than once: {duplicated}", EXIT_CONFLICT)
