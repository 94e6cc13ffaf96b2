"""``jobreaper replay``'s answers to bad input: one line, exit 2, before any Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "yesterday"], "--from 'yesterday' is not an RFC 3339 time"),
        (["--to", "2026-01-01T00:00:00"], "has no timezone"),
        (
            ["--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"],
            "--from is after --to",
        ),
        (["--partition", "-1"], "never negative"),
        (["--config", "/nonexistent/whatif.json"], "cannot read /nonexistent/whatif.json"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], says: str) -> None:
    result = CliRunner().invoke(app, ["replay", *args, "--kafka", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_an_invalid_what_if_config_is_refused_as_config_validate_does(tmp_path: Path) -> None:
    path = tmp_path / "whatif.json"
    path.write_text('{"forceDeleteTaskTimeoutSecond": 1}')
    result = CliRunner().invoke(app, ["replay", "--config", str(path), "--kafka", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert 'did you mean "forceDeleteTaskTimeoutSeconds"' in result.output
