"""``jobreaper kill``: ask jobreaper to kill a Job, now or at a time, or
(``--cancel``) not to kill it after all.

Exit codes: 0 published; 1 Kafka could not be reached; 2 bad usage (Job
reference, time).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import typer
from aiokafka.errors import KafkaError
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from schemas.annotations import KILL_TIMESTAMP
from services.runtime.cli_support import BOOTSTRAP_HELP, KUBECONFIG_HELP, PREFIX_HELP, fail
from services.runtime.kube import KubeConfigError, load_api_client
from services.runtime.settings import KafkaSettings, ServiceSettings

from .request import (
    BadRequest,
    build_cancel,
    build_request,
    parse_job_ref,
    parse_kill_time,
    publish_request,
)
from .scope import newest_config, scope_warning

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2


def kill(
    job: str = typer.Argument(..., metavar="NAMESPACE/JOB", help="The Job to kill"),
    at: str | None = typer.Option(
        None,
        "--at",
        metavar="TIME",
        help="When: RFC 3339 with a zone (2026-11-23T17:00:00Z), relative (+30s, +5m, "
        "+1h30m) or now (the default). A past time is an error, and so is one more than "
        "half the retention of kill.requests ahead (3.5 days by default): annotate the "
        "Job with jobreaper.io/kill-timestamp instead.",
    ),
    cancel: bool = typer.Option(
        False,
        "--cancel",
        help="Cancel the requested kill of the Job instead, if it has not started "
        "(a started kill is final). Leaves the jobreaper.io/kill-timestamp annotation "
        "alone: remove that with kubectl annotate.",
    ),
    reason: str = typer.Option("", "--reason", help="Free text, recorded in the kill events"),
    uid: str | None = typer.Option(
        None, "--uid", help="Only the Job object with this uid (not a later one of the same name)"
    ),
    by: str | None = typer.Option(
        None, "--by", metavar="WHO", help="Who asks (default: user@host)"
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Look the Job up in the cluster first and warn if it is not there, or if "
        "the config and its labels leave it out of scope (or in shadow mode)",
    ),
    kubeconfig: str | None = typer.Option(None, help=KUBECONFIG_HELP),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """Ask jobreaper to kill a Job: publishes a KillRequested on kill.requests.

    The killer then runs the escalation ladder on the Job's pods at the kill
    time: it lowers each pod's activeDeadlineSeconds, deletes the pod if it is
    still there after deleteKillingTasksTimeoutSeconds, and force-deletes it if
    its deletion hangs for forceDeleteTaskTimeoutSeconds.

    Until the kill starts, a newer request replaces the time of an earlier one
    (later or earlier), and --cancel cancels it; once the killer decided the
    kill, it is final. A jobreaper.io/kill-timestamp annotation is a kill time
    of its own: the earlier of it and the requested one wins.

    Without --uid the request is for the Job that has this name now; a Job
    created later under the same name is not affected.

    Examples:

      jobreaper kill batch/nightly-report

      jobreaper kill batch/nightly-report --at +5m --reason "replaced by v2"

      jobreaper kill batch/etl --at 2026-11-23T22:00:00Z --by oncall

      jobreaper kill batch/etl --cancel
    """
    now = datetime.now(UTC)
    try:
        namespace, name = parse_job_ref(job)
        if cancel and at is not None:
            raise BadRequest(
                "--cancel takes no --at: to move a kill, request the new time (it replaces "
                "the old one if the kill has not started)"
            )
        kill_at = None if cancel else parse_kill_time(at, now)
        request = (
            build_cancel(namespace, name, now=now, reason=reason, job_uid=uid, requested_by=by)
            if cancel
            else build_request(
                namespace,
                name,
                now=now,
                kill_at=kill_at,
                reason=reason,
                job_uid=uid,
                requested_by=by,
            )
        )
    except BadRequest as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    overrides = {
        k: v for k, v in {"bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix}.items() if v
    }
    kafka = KafkaSettings(**overrides)  # type: ignore[arg-type]
    if check:
        for warning in asyncio.run(_check_job(kubeconfig, kafka, namespace, name, uid, cancel)):
            typer.echo(f"warning: {warning}", err=True)
    try:
        published = asyncio.run(
            publish_request(kafka, request, warn=lambda w: typer.echo(f"warning: {w}", err=True))
        )
    except BadRequest as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    except (KafkaError, TimeoutError, OSError) as exc:
        raise fail(
            f"could not publish to Kafka at {kafka.bootstrap}: {exc or type(exc).__name__} "
            "(set --kafka or JOBREAPER_KAFKA_BOOTSTRAP)",
            EXIT_UNREACHABLE,
        ) from exc
    if cancel:
        typer.echo(
            f"kill cancellation requested: {namespace}/{name} (a requested kill that has "
            "not started will not happen; a started one is final)"
        )
    else:
        when = (
            "now"
            if kill_at is None
            else f"at {_rfc3339(kill_at)} (in {round((kill_at - now).total_seconds())} s)"
        )
        typer.echo(f"kill requested: {namespace}/{name} {when}")
    typer.echo(f"  request id  {request.request_id}")
    typer.echo(
        f"  published   {published.topic} partition {published.partition} offset {published.offset}"
    )
    typer.echo("follow it:")
    typer.echo(f"  jobreaper events --follow --namespace {namespace}")
    typer.echo(f"  jobreaper audit {namespace}/{name}")


async def _check_job(
    kubeconfig: str | None,
    kafka: KafkaSettings,
    namespace: str,
    name: str,
    uid: str | None,
    cancel: bool = False,
) -> list[str]:
    """Warnings: the Job is not (or no longer) there, or out of scope (not for
    ``cancel``), or (``cancel``) still carries a kill-timestamp annotation, which a
    cancellation leaves alone. Never
    fails the request: the killer acts on what it has observed, which the cluster may
    not show yet, and on the config it has, which may change."""
    path = kubeconfig or ServiceSettings().kubeconfig
    try:
        api = await load_api_client(path)
    except KubeConfigError as exc:
        return [f"could not check that the Job exists: {exc}"]
    try:
        found = await asyncio.wait_for(
            client.BatchV1Api(api).read_namespaced_job(name, namespace), 10
        )
    except ApiException as exc:
        if exc.status == 404:
            return [
                f"no Job {namespace}/{name} in the cluster now; the request is published "
                "anyway, but it only applies to a Job of that name that existed when it was made"
            ]
        return [f"could not check that the Job exists: HTTP {exc.status} {exc.reason}"]
    except (TimeoutError, OSError) as exc:
        return [f"could not check that the Job exists: {exc or type(exc).__name__}"]
    finally:
        await api.close()
    if uid and found.metadata.uid != uid:
        return [
            f"Job {namespace}/{name} has uid {found.metadata.uid}, not {uid}: the request "
            "will not apply to it"
        ]
    if cancel:
        # Whether the Job is in scope does not matter to a cancellation.
        annotated = (found.metadata.annotations or {}).get(KILL_TIMESTAMP)
        if not annotated:
            return []
        return [
            f"Job {namespace}/{name} is annotated {KILL_TIMESTAMP}={annotated}, which this "
            "does not cancel; remove it (if the kill has not started) with: kubectl annotate "
            f"job -n {namespace} {name} {KILL_TIMESTAMP}-"
        ]
    try:
        snapshot = await asyncio.wait_for(newest_config(kafka), 15)
    except (KafkaError, TimeoutError, OSError) as exc:
        return [f"could not read the config to check the Job's scope: {exc or type(exc).__name__}"]
    warning = scope_warning(snapshot, namespace, name, found.metadata.labels or {})
    return [warning] if warning else []


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
