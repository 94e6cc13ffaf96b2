"""Folding recorded records into a core state the way a killer partition did.

Shared by the replay (which reproduces the recorded decisions) and the what-if
(which folds only the inputs). The skip rules are the live killer's: an
undecodable record is skipped (the killer dead-letters it), a ``ConfigSnapshot``
whose version is not newer than the newest one folded is ignored, and the
global topics contribute only ``NodeObserved`` and ``ConfigSnapshot``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from core import GlobalInputs, KillerState, evolve, new_state
from schemas.cloudevents import DecodeError
from schemas.config import ConfigSnapshot
from schemas.decisions import InputPosition
from schemas.observations import NodeObserved
from schemas.requests import ForceResumeRequested

from .history import GLOBAL_TOPICS, RANK, Rec, Stream, decode

Key = tuple[str, int]


class CoreRefused(DecodeError):
    """A record the core raised on: the killer dead-letters it and never folds it again."""

    kind = "core-error"


def positions(inputs: Iterable[InputPosition]) -> dict[Key, int]:
    return {(i.topic, i.partition): i.offset for i in inputs}


def _order(rec: Rec) -> tuple[int, int, int]:
    # The killer saw records roughly in append order; the producer timestamps are
    # the best record of it (ties: globals first, then the Job topics in a fixed order).
    return (rec.timestamp_ms, RANK.get(rec.topic, 99), rec.offset)


class Folder:
    """A core state and, per topic-partition, how far it has folded."""

    def __init__(
        self,
        streams: Mapping[Key, Stream],
        *,
        accept: Callable[[Rec, Any], bool] | None = None,
    ) -> None:
        self.streams = dict(streams)
        self.accept = accept
        """Extra filter (the what-if folds only inputs); None: every message."""
        self.cursor: dict[Key, int] = dict.fromkeys(self.streams, 0)
        self.announces = any(
            topic not in GLOBAL_TOPICS and partition == 0 for topic, partition in self.streams
        )
        """As the killer: partition 0 raises the guard's alerts."""
        self.state: KillerState = new_state()
        self.state.announces = self.announces
        self.globals = GlobalInputs()
        """What the killer remembers of the nodes and config topics so far."""
        self.last: Rec | None = None
        self.folded = 0
        self.undecodable = 0

    # -- the two ways a killer builds a state --------------------------------------

    def rebuild(self, rebuilt_from: Mapping[Key, int]) -> None:
        """What the killer's ``_rebuild`` does: a new state seeded with what the
        killer remembers of the nodes and config below ``rebuilt_from`` (not their
        whole history: see ``GlobalInputs``), then the Job-keyed topics again from
        offset 0."""
        remembered = GlobalInputs()
        globals_ = {k: s for k, s in self.streams.items() if k[0] in GLOBAL_TOPICS}
        start = dict.fromkeys(globals_, 0)
        for rec in self._merged(globals_, start, self._ends(globals_, start, rebuilt_from)):
            message = decode(rec)
            if isinstance(message, NodeObserved | ConfigSnapshot | ForceResumeRequested):
                remembered.fold(message)  # in arrival order, as the killer did
        self.state = new_state()
        self.state.announces = self.announces
        self.state = remembered.seed(self.state)
        self.globals = remembered
        for key, stream in self.streams.items():
            if key[0] in GLOBAL_TOPICS:
                self.cursor[key] = _index_of(stream, rebuilt_from.get(key, 0))
            else:
                self.cursor[key] = 0

    def fold_to(self, upto: Mapping[Key, int]) -> None:
        """Fold every record not folded yet with an offset below ``upto`` of its
        topic-partition (a topic-partition not named: nothing more)."""
        ends = self._ends(self.streams, self.cursor, upto)
        for rec in self._merged(self.streams, self.cursor, ends):
            self._fold(rec)
        self.cursor.update(ends)

    def fold(self, rec: Rec) -> None:
        """Fold one record (the next of its topic-partition)."""
        key = (rec.topic, rec.partition)
        self.cursor[key] = _index_of_next(self.streams[key], rec, self.cursor[key])
        self._fold(rec)

    def _fold(self, rec: Rec) -> None:
        message = rec.message if rec.message is not None else decode(rec)
        if isinstance(message, DecodeError):
            self.undecodable += 1
            return
        if rec.topic in GLOBAL_TOPICS:
            if not isinstance(message, NodeObserved | ConfigSnapshot | ForceResumeRequested):
                return
            if not self.globals.fold(message) and isinstance(message, ConfigSnapshot):
                return  # compaction and replays can show an older snapshot again
            # (a stale node observation is folded and counted: evolve ignores it)
        if self.accept is not None and not self.accept(rec, message):
            return
        try:
            evolve(self.state, message)
        except Exception as exc:  # as the killer does (Killer._refuse), which also rebuilds
            # its state without the record: its next decision names a new state, and
            # the walk rebuilds then, skipping the record as undecodable from now on.
            rec.message = CoreRefused(f"evolve raised {type(exc).__name__}: {exc}")
            self.undecodable += 1
            return
        self.folded += 1
        self.last = rec

    # -- merging ---------------------------------------------------------------------

    def pending(self, upto: Mapping[Key, int]) -> Iterator[Rec]:
        """The records :meth:`fold_to` would fold, in that order, without folding."""
        return self._merged(self.streams, self.cursor, self._ends(self.streams, self.cursor, upto))

    @staticmethod
    def _ends(
        streams: Mapping[Key, Stream], start: Mapping[Key, int], upto: Mapping[Key, int]
    ) -> dict[Key, int]:
        """Per stream, the index just past its last record below ``upto``."""
        ends = {}
        for key, stream in streams.items():
            limit = upto.get(key, 0)
            i = start.get(key, 0)
            if i < len(stream) and stream[i].offset < limit:
                # Usually every record up to the limit: offsets are dense but for
                # transaction markers, so look there first.
                j = min(len(stream), i + (limit - stream[i].offset))
                while j > i and stream[j - 1].offset >= limit:
                    j -= 1
                ends[key] = j
        return ends

    @staticmethod
    def _merged(
        streams: Mapping[Key, Stream], start: Mapping[Key, int], ends: Mapping[Key, int]
    ) -> Iterator[Rec]:
        parts = [streams[key][start.get(key, 0) : j] for key, j in ends.items()]
        parts = [part for part in parts if part]
        if not parts:
            return iter(())
        if len(parts) == 1:
            return iter(parts[0])
        return heapq.merge(*parts, key=_order)


def _index_of(stream: Stream, offset: int) -> int:
    """The index of the first record at or after ``offset``."""
    lo, hi = 0, len(stream)
    while lo < hi:
        mid = (lo + hi) // 2
        if stream[mid].offset < offset:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _index_of_next(stream: Stream, rec: Rec, hint: int) -> int:
    # Records are folded in stream order, so the record is almost always at ``hint``.
    if hint < len(stream) and stream[hint] is rec:
        return hint + 1
    return _index_of(stream, rec.offset + 1)


__all__ = ["Folder", "Key", "positions"]
