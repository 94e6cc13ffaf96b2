"""The ``jobreaper`` command: wires the services' command groups together.

Nothing imports this module; it only imports the services.
"""

from __future__ import annotations

import typer

from services.audit import cli as audit_cli
from services.config.cli import app as config_app
from services.executor.cli import app as executor_app
from services.kill.cli import kill
from services.kill.force import app as force_app
from services.killer.cli import app as killer_app
from services.notify.cli import notify
from services.replay.cli import main as replay_main
from services.runtime.topics_cli import app as topics_app
from services.watcher.cli import app as watcher_app

app = typer.Typer(
    name="jobreaper",
    help="jobreaper: Kubernetes Jobs die when they should, with a replayable record of why.",
    no_args_is_help=True,
    add_completion=False,
)

# Command groups are registered here, one line each.
app.add_typer(topics_app, name="topics")
app.add_typer(watcher_app, name="watcher")
app.add_typer(executor_app, name="executor")
app.add_typer(killer_app, name="killer")
app.add_typer(config_app, name="config")
app.add_typer(force_app, name="force")
app.command("kill")(kill)
app.command("audit")(audit_cli.audit)
app.command("events")(audit_cli.events)
app.command("notify")(notify)
app.command("replay")(replay_main)


def main() -> None:
    app()
