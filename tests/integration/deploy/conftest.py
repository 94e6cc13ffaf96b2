"""Build the deployment tools before any test's timeout runs.

kustomize takes about a minute to build the first time, helm a few minutes,
promtool 5-13 minutes (1117 Go packages; 12 min 46 s measured on the 2-core machine
under other builds); all are cached afterwards (like the stack).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from devtools.stack import build, config
from devtools.stack.errors import StackError
from devtools.stack.util import say_stderr
from tests.integration.helpers import one_process_at_a_time

HERE = Path(__file__).parent


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any(HERE in Path(str(item.path)).parents for item in session.items):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    # A failure is reported by the tests that need the tool (skip or fail).
    for tool in config.TOOLS:
        with (
            capture.global_and_fixture_disabled() if capture else contextlib.nullcontext(),
            contextlib.suppress(StackError),
            one_process_at_a_time(f"build-{tool}"),
        ):
            build.ensure_tool(tool, say_stderr)
