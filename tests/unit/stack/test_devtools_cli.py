"""The development tools have a command of their own; the product's command has none of them."""

from __future__ import annotations

from typer.testing import CliRunner

from devtools.cli import app as dev_app
from services.cli import app as product_app


def test_jobreaper_has_no_stack_and_no_demo() -> None:
    for command in ("stack", "demo"):
        result = CliRunner().invoke(product_app, [command, "--help"])
        assert result.exit_code == 2, result.output
        assert "No such command" in result.output


def test_jobreaper_dev_has_the_stack_and_the_demo() -> None:
    for args in (["stack", "up", "--help"], ["stack", "restart", "--help"], ["demo", "--help"]):
        result = CliRunner().invoke(dev_app, args)
        assert result.exit_code == 0, result.output
