"""``jobreaper-dev demo`` end to end, as a person (or CI) runs it: a real process that starts
the services as real processes on the test stack and plays every scenario."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from tests.integration.lossy_nodes import reserved

pytestmark = [
    pytest.mark.stack,
    # Its scenarios must end within the demo's own 150 s bound, with its services as
    # processes: in the concurrent pass (beside a 12,000-pod Job and 200 force
    # deletions) its killer once waited 90 s on Kafka's ListOffsets (timeouts, retried)
    # and two scenarios missed the bound. Alone, as a user runs it.
    pytest.mark.exclusive("the demo's scenarios are timed by the demo itself"),
]

OUTCOMES = {
    "finishes": "completed by itself; jobreaper issued no command",
    "kill-now": "killed: set-active-deadline applied",
    "kill-later": "killed: set-active-deadline applied",
    "node-lost": "force-delete applied .*; pod force-deleted",
}


async def test_the_demo_plays_every_scenario_to_its_end(
    stack: StackInfo, kube_api: client.ApiClient, topic_prefix: str, tmp_path: Path
) -> None:
    if stack.stack_dir is None or len(stack.nodes) < 2:
        pytest.skip("the demo loses a node: it needs a stack started by devtools.stack")
    # The demo pins its pods to the first node, and the node-lost one to the last, which
    # it loses: that node is reserved for this test (tests/integration/lossy_nodes.py).
    async with reserved(kube_api, stack, stack.nodes[-1]):
        await _play_the_demo(stack, topic_prefix, tmp_path / "audit-node-lost.svg")


async def _play_the_demo(stack: StackInfo, topic_prefix: str, picture: Path) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        **stack.env(),
        # Its own topics and groups: nothing of other tests is read or acted on.
        "JOBREAPER_KAFKA_TOPIC_PREFIX": topic_prefix,
        "JOBREAPER_KILLER_GROUP_ID": f"demo-killer-{run}",
        "JOBREAPER_EXECUTOR_GROUP_ID": f"demo-executor-{run}",
        "JOBREAPER_EXECUTOR_TRANSACTIONAL_ID_PREFIX": f"demo-executor-{run}",
        "JOBREAPER_CONFIG_TRANSACTIONAL_ID": f"demo-config-{run}",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        # not a TTY: plain output. --picture: how docs/pictures/ is made (its README)
        [sys.executable, "-m", "devtools", "demo", "--from-env", "--picture", str(picture)],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "summary:" in done.stdout, "plain output when stdout is not a terminal"
    summary = done.stdout.split("summary:", 1)[1]
    for job, outcome in OUTCOMES.items():
        assert re.search(rf"^  ok +{job}: .*{outcome}", summary, re.MULTILINE), summary
    for step in ("stopping the services", "restoring node", "deleting namespace"):
        assert step in done.stdout, f"cleanup: {step}"
    # The picture of the node-lost Job's timeline: SVG, with the ladder's steps applied.
    root = ET.parse(picture).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    titles = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title"))
    for step in ("set-active-deadline", "delete", "force-delete"):
        assert f"{step}" in titles, (step, titles)
