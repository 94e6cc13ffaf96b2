"""The ``jobreaper-dev`` command: the development tools' command groups.

Nothing imports this module; it only imports the tools.
"""

from __future__ import annotations

import typer

from devtools.demo.cli import demo
from devtools.stack.cli import app as stack_app

app = typer.Typer(
    name="jobreaper-dev",
    help="jobreaper's development tools: the local stack and the live demo (from a checkout).",
    no_args_is_help=True,
    add_completion=False,
)

app.add_typer(stack_app, name="stack", help="The local stack: Kafka, Kubernetes, kwok.")
app.command("demo")(demo)


def main() -> None:
    app()
