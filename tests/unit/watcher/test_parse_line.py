"""Watch lines parse straight into the slim raw models: events, bookmarks, 410, garbage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.sample_objects import job_pod, watch_line
from services.watcher.stream import JOBS, PODS, Gone, Kind, ResourceStream


def _stream(kind: Kind[Any] = PODS) -> ResourceStream[Any]:
    return ResourceStream(api=None, kind=kind)  # type: ignore[arg-type]


def test_a_pod_line_yields_the_fields_jobreaper_uses() -> None:
    stream = _stream()
    event = stream.parse_line(watch_line(job_pod(7), "MODIFIED"))
    assert event is not None
    assert event.type == "MODIFIED"
    pod = event.obj
    assert pod.metadata.name == "nightly-report-7-x7k2p"
    assert pod.metadata.owner_references[0].kind == "Job"
    assert pod.spec.node_name == "kwok-node-0"
    assert pod.status.container_statuses[0].state.running is not None
    assert stream.resource_version == "100007"


def test_a_bookmark_moves_the_resume_version_and_yields_nothing() -> None:
    stream = _stream()
    line = json.dumps(
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "555"}}}
    ).encode()
    assert stream.parse_line(line) is None
    assert stream.resource_version == "555"
    assert stream.stats.bookmarks == 1


def test_a_410_error_event_raises_gone() -> None:
    line = json.dumps(
        {
            "type": "ERROR",
            "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
        }
    ).encode()
    with pytest.raises(Gone, match="too old"):
        _stream().parse_line(line)


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b'{"type": "MODIFIED"}',
        b'{"type": "EXPLODED", "object": {"metadata": {}}}',
        b'{"type": "ERROR", "object": {"code": 500, "message": "internal"}}',
        b'{"type": "ADDED", "object": [1]}',
    ],
)
def test_a_malformed_line_is_counted_and_skipped(line: bytes) -> None:
    stream = _stream(JOBS)
    assert stream.parse_line(line) is None
    assert stream.stats.malformed == 1
    assert stream.stats.malformed_samples
