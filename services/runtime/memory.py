"""Garbage-collector settings for long-running consumers.

A consumer that keeps what it decodes (the killer's state, the watcher's
reflector) makes CPython's cyclic collector run every 700 allocations and
rescan an ever larger heap: measured with ``bench/bench_codec.py --keep``,
decoding observations that are kept costs 2-3x the decoding alone. jobreaper's
objects form almost no reference cycles (plain models and dataclasses), so
collecting far less often frees the same memory at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

GC_THRESHOLDS = (50_000, 20, 10)
"""Young generation every 50,000 net allocations (CPython's default: 700)."""


def tune_gc() -> None:
    """Collect less often; call once at process start."""
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """For a batch tool that holds what it reads until it ends (replay, audit):
    no cyclic collection at all inside the block. Reference counting still
    frees everything that is dropped; only garbage in reference cycles waits
    for the end of the block, and jobreaper's models make almost none."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
