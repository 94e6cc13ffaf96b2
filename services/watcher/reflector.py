"""What the log knows about each object, and the changes that update it.

The reflector keeps, per object uid, the last observation it handed to the
publisher. Because the publisher delivers every observation in order (or
the whole cycle starts over from the log), that store is the log's view of
the cluster. Watch events and re-lists are turned into observations by
comparing with it:

* a watch event whose content equals the stored one is noise and dropped;
* a re-list (first start, or after ``410 Gone``) yields ``added`` for objects
  the log never saw, ``synthetic-modified`` for objects that changed while
  we were not watching, and ``synthetic-deleted`` for objects the log still
  holds but the cluster no longer has. After a re-list the log converges to
  the cluster.

This module does no I/O; :mod:`services.watcher.service` drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.observations import Change, NodeObserved

from . import wire
from .convert import (
    MalformedObject,
    Observation,
    job_observation,
    node_observation,
    pod_observation,
    same_content,
)

Converter = Callable[[Any, Change, datetime, str | None], Observation | None]

CONVERTERS: dict[type[Any], Converter] = {
    wire.Pod: pod_observation,
    wire.Job: job_observation,
    wire.Node: node_observation,
}


@dataclass
class ReflectorStats:
    observed: int = 0
    dropped_unchanged: int = 0
    malformed: int = 0


class Reflector:
    """The store of one kind of object in one scope."""

    def __init__(self, object_type: type[Any], known: Iterable[Observation] = ()) -> None:
        self._convert = CONVERTERS[object_type]
        self.store: dict[str, Observation] = {obs.uid: obs for obs in known}
        self.stats = ReflectorStats()
        self.malformed_reasons: list[str] = []

    def _observe(
        self, obj: Any, change: Change, now: datetime, version: str | None = None
    ) -> Observation | None:
        self.stats.observed += 1
        try:
            return self._convert(obj, change, now, version)
        except MalformedObject as exc:
            self.stats.malformed += 1
            if len(self.malformed_reasons) < 5:
                self.malformed_reasons.append(str(exc))
            return None

    def on_event(self, event_type: str, obj: Any, now: datetime) -> Observation | None:
        """A watch event -> the observation to publish, or None (noise, not ours)."""
        if event_type == "DELETED":
            known = self.store.pop(obj.metadata.uid, None)
            if known is None:
                return None  # never published (a pod of no Job), so nothing to retract
            return self._observe(obj, "deleted", now)
        change: Change = "added" if event_type == "ADDED" else "modified"
        observation = self._observe(obj, change, now)
        if observation is None:
            return None
        known = self.store.get(observation.uid)
        if known is not None and same_content(known, observation):
            self.stats.dropped_unchanged += 1
            return None
        self.store[observation.uid] = observation
        return observation

    def on_list(self, items: Iterable[Any], list_version: str, now: datetime) -> list[Observation]:
        """A full list -> the observations that bring the log up to it."""
        out: list[Observation] = []
        seen: set[str] = set()
        for obj in items:
            uid = obj.metadata.uid
            seen.add(uid)
            known = self.store.get(uid)
            change: Change = "added" if known is None else "synthetic-modified"
            observation = self._observe(obj, change, now)
            if observation is None:
                continue
            if known is not None and same_content(known, observation):
                continue
            self.store[uid] = observation
            out.append(observation)
        for uid in [uid for uid in self.store if uid not in seen]:
            gone = self.store.pop(uid)
            out.append(
                gone.model_copy(
                    update={
                        "change": "synthetic-deleted",
                        "observed_at": now,
                        "resource_version": list_version,
                        **({"status": "gone"} if isinstance(gone, NodeObserved) else {}),
                    }
                )
            )
        return out
