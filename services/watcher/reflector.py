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

It also keeps, per object, when its newest record went to the log (the
record's timestamp for what the log held at start, else when the reflector
handed the observation out), so that an object whose record is getting old
can be published again (``refreshed``, :meth:`Reflector.refresh`) before the
topic's retention deletes it.

This module does no I/O; :mod:`services.watcher.service` drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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

    def __init__(
        self,
        object_type: type[Any],
        known: Iterable[Observation] = (),
        published_at: Mapping[str, float] | None = None,
        convert: Converter | None = None,
    ) -> None:
        """``known``: what the log holds; ``published_at``: per uid, the timestamp
        (epoch seconds) of its newest record. A known object without one counts as
        published long ago (refreshed at the first chance). ``convert``: instead of the
        kind's converter (the pods': one that knows the claims' access modes)."""
        self._convert = convert or CONVERTERS[object_type]
        self.store: dict[str, Observation] = {obs.uid: obs for obs in known}
        times = published_at or {}
        self.published_at: dict[str, float] = {uid: times.get(uid, 0.0) for uid in self.store}
        """Per uid in ``store``: when its newest record was written (epoch seconds)."""
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
            self.published_at.pop(obj.metadata.uid, None)
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
        self.published_at[observation.uid] = now.timestamp()
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
            self.published_at[uid] = now.timestamp()
            out.append(observation)
        for uid in [uid for uid in self.store if uid not in seen]:
            gone = self.store.pop(uid)
            self.published_at.pop(uid, None)
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

    # -- refreshing -------------------------------------------------------------

    def due(self, cutoff: float) -> list[tuple[float, str]]:
        """(published at, uid) of every object whose newest record was written at or
        before ``cutoff`` (epoch seconds)."""
        return [(at, uid) for uid, at in self.published_at.items() if at <= cutoff]

    def oldest(self) -> float | None:
        """When the oldest of the objects' newest records was written (None: no object)."""
        return min(self.published_at.values(), default=None)

    def refresh(self, uid: str, cutoff: float, now: float) -> Observation | None:
        """The newest observation of ``uid`` again, as ``refreshed``, if its record was
        still written at or before ``cutoff`` (it may have changed or gone since it was
        found due); it then counts as published at ``now``.

        Same ``resource_version`` and ``observed_at`` as the original: it says the same
        thing, so a consumer that folded the original drops it as a duplicate."""
        at = self.published_at.get(uid)
        if at is None or at > cutoff:
            return None
        self.published_at[uid] = now
        return self.store[uid].model_copy(update={"change": "refreshed"})
