"""Which records are alerts, and the JSON a webhook gets (pure).

Alerts, on ``kill.events`` and ``kill.results``:

* ``force-deletion-forbidden``: every ``ForceDeletionForbidden`` (the killer emits one
  per pod);
* ``force-deletion-held``: a ``ForceDeletionHeld`` that waits for a fence (a person
  must fence the node or look; one per pod); one held by the rate limit is not an
  alert (it goes when a slot frees, within seconds);
* ``force-deletion-paused`` / ``force-deletion-resumed``: the mass-disruption guard
  tripped / lifted (``ForceDeletionPaused``/``Resumed``, one each per tripping: the
  killer's partition 0 raises them); the pods it holds are not alerted one by one;
* ``forbidden``: a ``CommandApplied`` with outcome ``forbidden`` (403: jobreaper lacks a
  permission), on the step's first attempt and every ``remind_every``-th after;
* ``failing``: a ``CommandApplied`` with outcome ``failed`` whose command attempt is
  ``failing_after`` (each attempt already spent the executor's own retry budget), and
  every ``remind_every``-th after.

Stateless on purpose: whether a record is an alert depends on the record alone, so a
restarted notifier, or a second replica, decides the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.cloudevents import Envelope
from schemas.commands import CommandApplied
from schemas.events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    ForceDeletionPaused,
    ForceDeletionResumed,
)
from services.runtime.kill_events import describe, event_json


@dataclass(frozen=True)
class Alert:
    id: str
    """Stable across re-deliveries (the CloudEvent id): receivers deduplicate on it."""
    kind: str
    namespace: str
    job: str
    pod: str
    text: str
    envelope: Envelope

    def payload(self) -> dict[str, Any]:
        """Slack-compatible (``text``) plus the structured fields and the event itself."""
        return {
            "text": self.text,
            "alert_id": self.id,
            "kind": self.kind,
            "namespace": self.namespace,
            "job": self.job,
            "pod": self.pod,
            "event": event_json(self.envelope),
        }


def _due(attempt: int, first: int, every: int) -> bool:
    return attempt >= first and (attempt - first) % every == 0


def _of(pod_name: str | None) -> str:
    """`` of pod P``; nothing for a Job-level step (``fail-job``)."""
    return "" if pod_name is None else f" of pod {pod_name}"


def alert_for(envelope: Envelope, *, failing_after: int, remind_every: int) -> Alert | None:
    m = envelope.message
    if isinstance(m, ForceDeletionForbidden):
        kind, text = "force-deletion-forbidden", describe(m)
    elif isinstance(m, ForceDeletionHeld) and m.waits_for in ("fence", "volume"):
        kind, text = "force-deletion-held", describe(m)
    elif isinstance(m, ForceDeletionPaused | ForceDeletionResumed):
        kind = (
            "force-deletion-paused"
            if isinstance(m, ForceDeletionPaused)
            else "force-deletion-resumed"
        )
        return Alert(
            id=envelope.id,
            kind=kind,
            namespace="",
            job="",
            pod="",
            text=f":rotating_light: jobreaper: {describe(m)}",
            envelope=envelope,
        )
    elif isinstance(m, CommandApplied) and m.outcome == "forbidden":
        if not _due(m.attempt, 1, remind_every):
            return None
        kind = "forbidden"
        text = (
            f"{m.namespace}/{m.job_name}: {m.step}{_of(m.pod_name)} refused (HTTP "
            f"{m.http_status}, attempt {m.attempt}): jobreaper lacks a permission. {m.message}"
        )
    elif isinstance(m, CommandApplied) and m.outcome == "failed":
        if not _due(m.attempt, failing_after, remind_every):
            return None
        kind = "failing"
        text = (
            f"{m.namespace}/{m.job_name}: {m.step}{_of(m.pod_name)} keeps failing "
            f"(attempt {m.attempt}, last HTTP {m.http_status}): {m.message}"
        )
    else:
        return None
    return Alert(
        id=envelope.id,
        kind=kind,
        namespace=m.namespace,
        job=m.job_name,
        pod=m.pod_name or "",
        text=f":rotating_light: jobreaper: {text}",
        envelope=envelope,
    )
