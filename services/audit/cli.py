"""``jobreaper audit`` and ``jobreaper events``: read the kill history back.

Exit codes: 0 done; 1 Kafka could not be read; 2 bad usage; 4 the Job is not
in the log (never observed, or no Job of that name has the uid asked for).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from aiokafka.errors import KafkaError
from rich.console import Console

from services.runtime.cli_support import BOOTSTRAP_HELP, PREFIX_HELP, fail
from services.runtime.settings import KafkaSettings

from .follow import follow, print_json, print_line
from .history import JobNotFound, load_timeline
from .jsonout import timeline_json
from .picture import render_html, render_svg
from .terminal import render_terminal

EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 4


def kafka_settings(bootstrap: str | None, prefix: str | None) -> KafkaSettings:
    overrides = {k: v for k, v in {"bootstrap": bootstrap, "topic_prefix": prefix}.items() if v}
    return KafkaSettings(**overrides)  # type: ignore[arg-type]


def audit(
    target: str = typer.Argument(..., metavar="NAMESPACE/JOB", help="The Job, e.g. batch/nightly"),
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of tables"),
    out: Path | None = typer.Option(
        None, "--out", help="Also write a picture: FILE.svg, or FILE.html (picture + table)"
    ),
    uid: str | None = typer.Option(
        None, "--uid", help="Which Job object, when several had this name (default: the latest)"
    ),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """The whole kill timeline of one Job, read from the topics alone.

    Observations of the Job and its pods, kill requests, every decision (with the
    `now` and config version it used), command and result, the kill events, and
    how each pod ended; latencies are due -> decided and due -> applied. Works
    after the Job and its pods are gone, for as long as Kafka keeps the records.

    Example: jobreaper audit batch/nightly --out nightly.html
    """
    namespace, slash, job = target.partition("/")
    if not slash or not namespace or not job or "/" in job:
        raise fail(f"{target!r}: give NAMESPACE/JOB", EXIT_USAGE)
    if out is not None and out.suffix.lower() not in (".svg", ".html", ".htm"):
        raise fail(f"--out {out}: the file name must end in .svg or .html", EXIT_USAGE)
    kafka = kafka_settings(kafka_bootstrap, topic_prefix)
    try:
        timeline = asyncio.run(load_timeline(kafka, namespace, job, uid))
    except JobNotFound as exc:
        raise fail(str(exc), EXIT_NOT_FOUND) from exc
    except KafkaError as exc:
        raise fail(f"cannot read Kafka at {kafka.bootstrap}: {exc}", EXIT_UNREACHABLE) from exc
    if as_json:
        typer.echo(json.dumps(timeline_json(timeline), indent=2, sort_keys=True))
    else:
        render_terminal(timeline, Console())
    if out is not None:
        svg = out.suffix.lower() == ".svg"
        out.write_text(render_svg(timeline) if svg else render_html(timeline))
        typer.echo(f"wrote {out}", err=True)


def events(
    follow_: bool = typer.Option(
        False, "--follow", "-f", help="Keep following (required: there is no other mode yet)"
    ),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only this namespace"),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest retained event, not at the end"
    ),
    as_json: bool = typer.Option(False, "--json", help="One CloudEvent JSON object per line"),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """Print the public kill events (kill.events) as they are committed.

    One line per event (or --json: {id, type, source, time, data}). Events of a
    type this build does not know are skipped with a note on stderr. The code
    (services/audit/follow.py) is the reference subscriber to copy.
    """
    if not follow_:
        raise fail("events needs --follow (see jobreaper audit for one Job's history)", EXIT_USAGE)
    kafka = kafka_settings(kafka_bootstrap, topic_prefix)
    try:
        asyncio.run(
            follow(
                kafka,
                print_json if as_json else print_line,
                namespace=namespace,
                from_beginning=from_beginning,
            )
        )
    except KeyboardInterrupt:
        return
    except LookupError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    except KafkaError as exc:
        raise fail(f"cannot read Kafka at {kafka.bootstrap}: {exc}", EXIT_UNREACHABLE) from exc
