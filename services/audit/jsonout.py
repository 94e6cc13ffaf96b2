"""``audit --json``: the whole timeline as one JSON document, for machines.

Times are RFC 3339 UTC; latencies are seconds. Kill events and requests are
the messages as on the topic (``ce_type`` added), so nothing is lost.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from schemas.cloudevents import format_time

from .timeline import Step, Timeline


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _step(step: Step) -> dict[str, Any]:
    out = _plain(asdict(step))
    out["decide_latency_s"] = round(step.decide_latency_s, 6)
    latency = step.apply_latency_s
    out["apply_latency_s"] = None if latency is None else round(latency, 6)
    if step.result is not None:
        out["result"]["wrote"] = step.result.wrote
    return dict(out)


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    return {
        "namespace": timeline.namespace,
        "job": timeline.job,
        "uid": timeline.uid,
        "other_uids": [{"uid": u, "first_seen": format_time(at)} for u, at in timeline.others],
        "pods": [_plain(asdict(p)) for p in timeline.pods],
        "requests": [
            {"ce_type": r.CE_TYPE, **r.model_dump(mode="json")} for r in timeline.requests
        ],
        "steps": [_step(s) for s in timeline.steps],
        "kill_events": [
            {"ce_type": e.CE_TYPE, **e.model_dump(mode="json")} for e in timeline.kill_events
        ],
        "entries": [_plain(asdict(e)) for e in timeline.entries],
    }
