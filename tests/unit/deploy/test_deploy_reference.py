"""docs/deploy.md's reference (settings, metrics, topics) is what the code says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_deploy_doc_reference_is_current() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "reference.py"), "--check", "docs/deploy.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_the_reference_names_every_setting_class_field() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "reference.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    for variable in (
        "JOBREAPER_KAFKA_BOOTSTRAP",
        "JOBREAPER_HTTP_PORT",
        "JOBREAPER_WATCHER_NAMESPACES",
        "JOBREAPER_KILLER_GROUP_ID",
        "JOBREAPER_EXECUTOR_EVENTS",
        "JOBREAPER_CONFIG_SOURCE",
        "jobreaper_executor_kill_latency_seconds",
        "jobreaper_config_changes_total",
    ):
        assert f"`{variable}`" in out
