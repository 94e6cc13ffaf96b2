"""The alerting rules through a real promtool (built from its Go module, cached like
the stack's tools): ``promtool check rules`` accepts the PrometheusRule's groups,
and ``promtool test rules`` runs the alerts' unit tests
(deploy/kubernetes/monitoring/tests/alerts.test.yaml). A broken expression and a
wrong expectation are refused, so these checks can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.stack import build
from devtools.stack.errors import StackError
from devtools.stack.util import say_stderr
from tests.monitoring_sources import RULE_TESTS, rule_groups


@pytest.fixture(scope="module")
def promtool() -> Path:
    try:
        built = build.ensure_tool("promtool", say_stderr)
    except StackError as e:
        pytest.fail(f"promtool cannot be built: {e}", pytrace=False)
    return built.bin(build.tool_binary("promtool"))


def _run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, check=False, timeout=120, cwd=cwd
    )


def _write_rules(path: Path, groups: list[dict[str, Any]], *, annotations: bool) -> None:
    if not annotations:
        groups = [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in groups
        ]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))


def test_promtool_accepts_the_rules_and_their_templates(promtool: Path, tmp_path: Path) -> None:
    _write_rules(tmp_path / "rules.yaml", rule_groups(), annotations=True)
    done = _run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in rule_groups())
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_promtool_refuses_a_broken_expression(promtool: Path, tmp_path: Path) -> None:
    groups = rule_groups()
    groups[0]["rules"][0]["expr"] = "sum by (namespace (jobreaper_executor_commands_total"
    _write_rules(tmp_path / "rules.yaml", groups, annotations=True)
    done = _run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_the_alerts_unit_tests_pass(promtool: Path, tmp_path: Path) -> None:
    """Annotations are text for people (checked above); the tests compare labels."""
    _write_rules(tmp_path / "rules.yaml", rule_groups(), annotations=False)
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yaml")
    done = _run(promtool, "test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_expectation_fails_the_unit_tests(promtool: Path, tmp_path: Path) -> None:
    _write_rules(tmp_path / "rules.yaml", rule_groups(), annotations=False)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    case = next(c for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    case["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(tests))
    done = _run(promtool, "test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr
