"""``jobreaper replay``: re-run the pure core over the recorded topics.

Without ``--config``: the regression guard. Every recorded decision is re-made
and compared, byte for byte, with the commands and kill events the killer
recorded; exit 1 on any divergence. With ``--config FILE``: what-if, the same
history under another configuration (docs/replay.md: the model and its limits).
A single command, registered in services/cli.py as ``replay``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import typer
from aiokafka.errors import KafkaError

from services.config.validation import validate_text
from services.runtime.cli_support import BOOTSTRAP_HELP, PREFIX_HELP, fail
from services.runtime.memory import no_cycle_collection
from services.runtime.settings import KafkaSettings

from .history import History, read_history
from .report import render_replay, render_what_if, replay, what_if
from .walk import Window
from .whatif import snapshot_for

EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise fail(f"{option} {value!r} is not an RFC 3339 time", EXIT_USAGE) from exc
    if at.tzinfo is None:
        raise fail(f"{option} {value!r} has no timezone (e.g. 2026-01-02T03:04:05Z)", EXIT_USAGE)
    return at


def _read(kafka: KafkaSettings, partitions: list[int] | None) -> History:
    try:
        return asyncio.run(read_history(kafka, partitions))
    except KafkaError as exc:
        message = f"cannot read the topics from Kafka at {kafka.bootstrap}: {exc}"
        raise fail(message, EXIT_UNREADABLE) from exc


def main(
    start: str | None = typer.Option(
        None, "--from", help="Compare decisions made at or after this RFC 3339 time"
    ),
    end: str | None = typer.Option(
        None, "--to", help="Compare decisions made at or before this RFC 3339 time"
    ),
    partition: list[int] | None = typer.Option(
        None, "--partition", "-p", help="Only this Job-keyed partition (repeatable)"
    ),
    config: str | None = typer.Option(
        None, "--config", help="What-if: a KillerConfig JSON file (as `config validate` takes)"
    ),
    detail: bool = typer.Option(False, "--detail", help="What-if: every Job and step"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object"),
    kafka_bootstrap: str | None = typer.Option(None, "--kafka", help=BOOTSTRAP_HELP),
    topic_prefix: str | None = typer.Option(None, "--topic-prefix", help=PREFIX_HELP),
) -> None:
    """Replay the recorded history through the pure core.

    Every decision the killer recorded on kill.decisions is re-made: the same input
    records folded (up to the recorded positions, the killer's own past output
    included, rebuilds reproduced), decide() called with the recorded `now`, and
    its commands and kill events compared with the recorded ones, ids and JSON
    bytes. --from/--to limit which decisions are compared; everything before is
    still folded. Exit 0: no divergence; 1: divergence (the first one is shown with
    the last input folded before it); 2: bad input; 3: Kafka unreadable.

    With --config FILE: what would that configuration have done with the same
    observations and requests? Decides at the recorded instants and at its own
    timers; a hypothetical command counts as applied when decided. Prints, per
    namespace, kills earlier/later (p50/max), force deletions added/avoided and
    commands added/removed; --detail lists every Job.
    """
    window = Window(_time(start, "--from"), _time(end, "--to"))
    if window.start and window.end and window.start > window.end:
        raise fail("--from is after --to", EXIT_USAGE)
    if any(p < 0 for p in partition or []):
        raise fail("a partition number is never negative", EXIT_USAGE)
    snapshot_config = None
    if config is not None:
        try:
            with open(config, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise fail(f"cannot read {config}: {exc.strerror or exc}", EXIT_USAGE) from exc
        verdict = validate_text(data)
        if not verdict.ok or verdict.config is None:
            raise fail(f"{config}: {verdict.summary()}", EXIT_USAGE)
        snapshot_config = verdict.config
    given = {"bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix}
    overrides = {k: v for k, v in given.items() if v}
    kafka = KafkaSettings(**overrides)  # type: ignore[arg-type]
    # The whole history is held until the end: collecting cycles would only
    # rescan it again and again (see services/runtime/memory.py).
    with no_cycle_collection():
        history = _read(kafka, partition or None)
        if snapshot_config is not None:
            snapshot = snapshot_for(snapshot_config, history, f"file:{config}")
            what = what_if(history, snapshot, partition or None)
            if as_json:
                typer.echo(json.dumps(what.as_json(detail), indent=2))
            else:
                typer.echo(render_what_if(what, detail))
            return
        result = replay(history, partition or None, window)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        typer.echo(render_replay(result))
    if result.divergences:
        raise typer.Exit(EXIT_DIVERGED)
