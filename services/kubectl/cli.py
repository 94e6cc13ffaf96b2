"""``kubectl jobreaper``: kill, cancel and look at a Job's kill from the cluster.

Installed as the ``kubectl-jobreaper`` console script: kubectl finds it on the PATH
and runs it for ``kubectl jobreaper ...``. It writes nothing but the Job's
``jobreaper.io/kill-timestamp`` annotation, so a user needs only the right to patch
their Jobs, no access to Kafka (``audit`` excepted: it reads the topics).

Exit codes: 0 done; 1 the API server or Kafka could not be reached or refused; 2 bad
usage (Job reference, time); 3 too late: the kill started (final), nothing changed;
4 no such Job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer

from schemas.annotations import ENFORCE, KILL_TIMESTAMP, parse_enforce, parse_timestamp
from services.audit import cli as audit_cli
from services.kill.request import BadRequest, parse_kill_time
from services.runtime.cli_support import fail
from services.runtime.kube import KubeApiError, KubeConfigError

from .cluster import connect, job_events, job_pods, read_job, set_kill_timestamp
from .status import KILL_STATE, as_json, kill_status, render

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_TOO_LATE = 3
EXIT_NOT_FOUND = 4
CONFLICT_TRIES = 3
"""A 409 (the Job changed between our read and write) is read again and decided again."""

USER_AGENT = "kubectl-jobreaper/0.1.0"

T = TypeVar("T")

KUBECONFIG = typer.Option(
    None, "--kubeconfig", help="Default: $KUBECONFIG, then ~/.kube/config, then in-cluster"
)
NAMESPACE = typer.Option(
    None, "--namespace", "-n", help="The Job's namespace, when JOB has no NAMESPACE/ in front"
)

app = typer.Typer(
    name="kubectl jobreaper",
    help="""Kill a Kubernetes Job with jobreaper, cancel the kill, and see how it went,
from the cluster alone (no access to Kafka needed).

kill and cancel write one annotation on the Job, jobreaper.io/kill-timestamp: the
time at which jobreaper kills it (a time in the past: now). jobreaper then runs its
escalation ladder on the Job's pods (activeDeadlineSeconds, deletion, force
deletion if a pod hangs on a lost node) and fails the Job with a JobReaper reason.
Until the kill starts you may move it (kill again with another --at) or cancel it;
once it started it is final. A kill asked with `jobreaper kill` (through Kafka) is a
kill time of its own: the earlier of the two wins, and each is cancelled its own
way.

You need: get and patch on jobs, list on pods and events in the Job's namespace.

Examples:

\b
  kubectl jobreaper kill batch/nightly-report              # now
  kubectl jobreaper kill batch/nightly-report --at +30m    # in 30 minutes
  kubectl jobreaper kill -n batch nightly-report --at 2026-12-06T20:00:00Z
  kubectl jobreaper cancel batch/nightly-report
  kubectl jobreaper status batch/nightly-report            # state, conditions, Events
  kubectl jobreaper audit batch/nightly-report             # full timeline (reads Kafka)

More: docs/user-guide.md, "The kubectl plugin".""",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _job_ref(job: str, namespace: str | None) -> tuple[str, str]:
    ns, slash, name = job.partition("/")
    if slash:
        if namespace and namespace != ns:
            raise fail(f"{job!r} names namespace {ns}, --namespace says {namespace}", EXIT_USAGE)
        if not ns or not name or "/" in name:
            raise fail(
                f"{job!r}: give the Job as NAMESPACE/NAME (or NAME -n NAMESPACE)", EXIT_USAGE
            )
        return ns, name
    if not namespace:
        raise fail(f"{job!r}: give the Job as NAMESPACE/NAME (or NAME -n NAMESPACE)", EXIT_USAGE)
    return namespace, job


def _run(kubeconfig: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(api)`` on a fresh API client; one-line errors with the exit code."""

    async def main() -> T:
        api = await connect(kubeconfig)
        api.user_agent = USER_AGENT  # the API server's audit log tells its writes apart
        try:
            return await work(api)
        finally:
            await api.close()

    try:
        return asyncio.run(main())
    except KubeConfigError as exc:
        raise fail(str(exc), EXIT_UNREACHABLE) from exc
    except KubeApiError as exc:
        if exc.status == 404:
            raise fail(
                f"no such Job: {exc.path.rsplit('/', 1)[-1]} ({exc.message})", EXIT_NOT_FOUND
            ) from exc
        raise fail(f"the API server refused: {exc}", EXIT_UNREACHABLE) from exc


def _started(job: dict[str, Any]) -> str:
    state = (job["metadata"].get("annotations") or {}).get(KILL_STATE)
    if state:
        return f"the kill already started ({KILL_STATE}={state})"
    return "the kill already started (the Job has jobreaper's FailureTarget condition)"


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


async def _write(
    api: Any, namespace: str, name: str, value: str | None
) -> tuple[str, dict[str, Any]]:
    """Read the Job, decide, write: ("too-late" | "unchanged" | "written", job)."""
    for attempt in range(CONFLICT_TRIES):
        job = await read_job(api, namespace, name)
        annotations = job["metadata"].get("annotations") or {}
        if kill_status(job, [], []).started:
            return "too-late", job
        if annotations.get(KILL_TIMESTAMP) == value:
            return "unchanged", job
        try:
            return "written", await set_kill_timestamp(api, job, KILL_TIMESTAMP, value)
        except KubeApiError as exc:
            if exc.status != 409 or attempt == CONFLICT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


@app.command()
def kill(
    job: str = typer.Argument(..., metavar="[NAMESPACE/]JOB", help="The Job to kill"),
    at: str | None = typer.Option(
        None,
        "--at",
        metavar="TIME",
        help="When: now (the default), relative (+30s, +5m, +1h30m) or RFC 3339 with a "
        "zone (2026-12-06T20:00:00Z). A time more than 2 s in the past is refused.",
    ),
    namespace: str | None = NAMESPACE,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the kubectl command that does the same; write nothing"
    ),
    kubeconfig: str | None = KUBECONFIG,
) -> None:
    """Kill a Job now or at a time: sets its jobreaper.io/kill-timestamp annotation.

    Setting it again with another --at moves the kill (earlier or later) until the
    kill starts; after that nothing changes it (exit 3). The annotation is the
    Job's own kill time: it is kept in the cluster for as long as the Job, however
    far ahead it is.

    Example: kubectl jobreaper kill batch/nightly-report --at +30m
    """
    ns, name = _job_ref(job, namespace)
    now = datetime.now(UTC)
    try:
        kill_at = parse_kill_time(at, now) or now
    except BadRequest as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    value = _rfc3339(kill_at)
    assert parse_timestamp(value) is not None, value  # the form the admission policy takes
    if dry_run:
        typer.echo(f"kubectl annotate job -n {ns} {name} {KILL_TIMESTAMP}={value} --overwrite")
        return
    outcome, found = _run(kubeconfig, lambda api: _write(api, ns, name, value))
    before = (found["metadata"].get("annotations") or {}).get(KILL_TIMESTAMP)
    if outcome == "too-late":
        raise fail(f"{ns}/{name}: {_started(found)}: it is final, nothing changed", EXIT_TOO_LATE)
    enforce = parse_enforce((found["metadata"].get("labels") or {}).get(ENFORCE))
    if enforce in ("off", "shadow"):
        _warn(
            f"the Job is labelled {ENFORCE}={enforce}: jobreaper "
            + ("leaves it alone" if enforce == "off" else "only records what it would do")
        )
    when = (
        "now" if kill_at <= now else f"at {value} (in {round((kill_at - now).total_seconds())} s)"
    )
    if outcome == "unchanged":
        typer.echo(f"{ns}/{name}: already annotated {KILL_TIMESTAMP}={value}")
    else:
        moved = f" (was {before})" if before else ""
        typer.echo(f"{ns}/{name}: kill {when}: annotated {KILL_TIMESTAMP}={value}{moved}")
    typer.echo(f"follow it: kubectl jobreaper status {ns}/{name}")


@app.command()
def cancel(
    job: str = typer.Argument(..., metavar="[NAMESPACE/]JOB", help="The Job not to kill"),
    namespace: str | None = NAMESPACE,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the kubectl command that does the same; write nothing"
    ),
    kubeconfig: str | None = KUBECONFIG,
) -> None:
    """Cancel a kill that has not started: removes the jobreaper.io/kill-timestamp
    annotation. A started kill is final (exit 3, nothing changed).

    Only the annotation's kill: one asked with `jobreaper kill` (through Kafka) is
    cancelled with `jobreaper kill --cancel`. Timeouts (pending, running, the Job's
    activeDeadlineSeconds) are not kills you can cancel here: change the Job's
    annotations or the config.

    Example: kubectl jobreaper cancel batch/nightly-report
    """
    ns, name = _job_ref(job, namespace)
    if dry_run:
        typer.echo(f"kubectl annotate job -n {ns} {name} {KILL_TIMESTAMP}-")
        return
    outcome, found = _run(kubeconfig, lambda api: _write(api, ns, name, None))
    if outcome == "too-late":
        raise fail(f"{ns}/{name}: too late, {_started(found)}: it is final", EXIT_TOO_LATE)
    if outcome == "unchanged":
        typer.echo(f"{ns}/{name}: no {KILL_TIMESTAMP} annotation: no kill of yours to cancel")
        _warn("a kill asked with `jobreaper kill` is cancelled with `jobreaper kill --cancel`")
        return
    typer.echo(f"{ns}/{name}: kill cancelled (removed {KILL_TIMESTAMP})")
    typer.echo(f"check: kubectl jobreaper status {ns}/{name}")


@app.command()
def status(
    job: str = typer.Argument(..., metavar="[NAMESPACE/]JOB", help="The Job"),
    namespace: str | None = NAMESPACE,
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
    all_events: bool = typer.Option(
        False, "--all-events", help="Every Event of the Job, not only jobreaper's"
    ),
    kubeconfig: str | None = KUBECONFIG,
) -> None:
    """What the cluster shows of a Job's kill: jobreaper's annotations on it (the
    kill time you set, and the kill-state, trigger, due and killed times jobreaper
    writes), its FailureTarget/Failed condition, its pods and the Events.

    kill-state: due (a kill time is set, in the future), killing (the kill started:
    final), killed (every pod ended), cancelled (a due kill no longer will happen).
    No kill-state: no kill time set and no kill started (timeouts kill without
    notice), or a jobreaper that does not write it.

    Example: kubectl jobreaper status batch/nightly-report -o json
    """
    if output not in ("text", "json"):
        raise fail(f"--output {output!r}: text or json", EXIT_USAGE)
    ns, name = _job_ref(job, namespace)

    async def read(api: Any) -> tuple[dict[str, Any], list[Any], list[Any]]:
        found = await read_job(api, ns, name)
        pods, events = await asyncio.gather(job_pods(api, found), job_events(api, found))
        return found, pods, events

    found, pods, events = _run(kubeconfig, read)
    now = datetime.now(UTC)
    seen = kill_status(found, pods, events)
    if output == "json":
        typer.echo(json.dumps(as_json(seen, now), indent=2, sort_keys=True))
        return
    for line in render(seen, now, all_events=all_events):
        typer.echo(line)


app.command("audit")(audit_cli.audit)


def main() -> None:
    app(prog_name="kubectl jobreaper")
