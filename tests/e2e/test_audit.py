"""``jobreaper audit`` and ``jobreaper events --follow`` on a real end-to-end kill: the
timeline read back from the topics must show exactly the writes the API server's own
audit log recorded from the executor, and the live tail must print the kill as it
happens."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from services.audit import load_timeline
from services.audit.history import JobNotFound
from tests.e2e.harness import System
from tests.e2e.test_ladder import FAST, kill_now, stranded
from tests.integration.helpers import step_of
from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack


def cli_env(system: System) -> dict[str, str]:
    return {
        **os.environ,
        "JOBREAPER_KAFKA_BOOTSTRAP": system.stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": system.prefix,
    }


async def jobreaper(system: System, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        env=cli_env(system),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def read_until(stream: asyncio.StreamReader, needle: str, timeout: float = 90) -> list[str]:
    lines: list[str] = []

    async def read() -> None:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                pytest.fail(f"stream ended before {needle!r}; got {lines}")
            lines.append(line.rstrip("\n"))
            if needle in line:
                return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        pytest.fail(f"no {needle!r} within {timeout:.0f}s; got {lines}")
    return lines


async def test_the_audit_of_a_force_deleted_pod_matches_the_api_servers_audit_log(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
    tmp_path: Path,
) -> None:
    await system.start(**FAST)
    tail = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "events",
        "--follow",
        "--namespace",
        namespace,
        env=cli_env(system),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert tail.stdout is not None and tail.stderr is not None
        await read_until(tail.stderr, "following")
        await stranded(kube_api, namespace, "stranded", node_loss, node_loss.reserved)
        await kill_now(kube_api, namespace, "stranded")
        await system.job_killed("stranded", timeout=60)
        printed = await read_until(tail.stdout, "killed at")
    finally:
        tail.terminate()
        await tail.wait()
    # events --follow printed the kill as it happened, in order.
    assert "kill started (Killed" in printed[0], printed
    assert any("delete on pod" in line for line in printed), printed
    assert any("force-delete on pod" in line for line in printed), printed
    assert "force-deleted" in printed[-1], printed

    timeline = await load_timeline(system.kafka, namespace, "stranded")
    writes = system.writes()
    assert writes, "the scenario made the executor write"
    expected = sorted((step_of(w), w["objectRef"]["name"]) for w in writes)
    shown = sorted(
        (s.step, s.pod_name)
        for s in timeline.steps
        if s.result and s.result.wrote and s.step not in ("fail-job", "annotate-job")
    )
    assert shown == expected, "every executor write to a pod, and nothing else"
    job_writes = [w for w in system.job_writes() if w["responseStatus"]["code"] < 400]
    failed = [s for s in timeline.steps if s.step == "fail-job" and s.result and s.result.wrote]
    assert len(failed) == len(job_writes) == 1, "the Job's FailureTarget, written once"
    # The Job shown killed once its pod was gone (rule job.show-kill): a write of its own.
    shown_writes = [w for w in system.job_annotation_writes() if w["responseStatus"]["code"] < 400]
    annotated = [s for s in timeline.steps if s.step == "annotate-job" and s.result]
    assert len(shown_writes) == len(annotated) == 1 and annotated[0].result
    assert annotated[0].result.wrote
    assert [s.step for s in timeline.steps if s.step != "fail-job"] == [
        "delete",
        "force-delete",
        "annotate-job",
    ]
    for step in timeline.steps:
        assert step.decision is not None, "each command's DecisionRecorded was found"
        assert step.decision.decided_at == step.decided_at
        assert step.decision.inputs, "with the input positions it had folded"
        assert step.result is not None and step.result.outcome == "applied"
        assert step.result.http_status == 200
        assert step.decide_latency_s >= 0
        assert step.apply_latency_s is not None and step.apply_latency_s >= 0
    (pod,) = timeline.pods
    assert pod.ended == "force-deleted" and pod.node == node_loss.reserved
    assert pod.gone_at is not None and pod.deletion_timestamp is not None
    kinds = {e.kind for e in timeline.entries}
    assert kinds >= {"job", "pod", "decision", "command", "result", "event"}
    assert timeline.killed is not None

    # The CLI: terminal, --json (valid, complete), and the pictures.
    svg, page = tmp_path / "t.svg", tmp_path / "t.html"
    code, out, err = await jobreaper(system, "audit", f"{namespace}/stranded", "--out", str(svg))
    assert code == 0, err
    assert "force-delete" in out and "force-deleted" in out
    code, out, err = await jobreaper(
        system, "audit", f"{namespace}/stranded", "--json", "--out", str(page)
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["uid"] == timeline.uid
    command_ids = {c.command_id for c in await system.commands(shows=True)}
    assert {s["command_id"] for s in document["steps"]} == command_ids
    for s in document["steps"]:
        assert s["decision"]["decided_at"] and s["result"]["applied_at"]
        assert s["result"]["wrote"] is True and s["apply_latency_s"] >= 0
    # The watcher keeps observing after the kill (the Job's own updates): a superset.
    assert {e["source"] for e in document["entries"]} >= {e.source for e in timeline.entries}
    assert [e["ce_type"] for e in document["kill_events"]][-1] == "io.jobreaper.job.killed.v1"
    assert document["pods"][0]["ended"] == "force-deleted"

    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any("force-delete" in t and "applied" in t for t in titles), titles
    assert "http://" not in svg.read_text().replace("http://www.w3.org/2000/svg", "")

    class Check(HTMLParser):
        tags: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)

    parser = Check()
    parser.feed(page.read_text())
    assert "svg" in parser.tags and parser.tags.count("tr") == len(document["entries"]) + 1
    assert "<script" not in page.read_text()

    code, _, err = await jobreaper(system, "audit", f"{namespace}/never-there")
    assert code == 4 and "never appears in the log" in err
    with pytest.raises(JobNotFound):
        await load_timeline(system.kafka, namespace, "stranded", uid="not-a-uid")
