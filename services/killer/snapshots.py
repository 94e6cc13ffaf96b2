"""Killer snapshots: one partition's folded state and the log positions it reflects.

A snapshot file is::

    MAGIC (8 bytes) | header length (4 bytes, big endian) | header (JSON)
    | sha256 of the header (32 bytes) | payload

The header says what the payload is (format version, a digest of the code
that defines the state, topic prefix, partition, partition count, the next
offset folded of each Job-keyed topic-partition, when it was written, and
the payload's length and sha256). The payload is a pickle of
:class:`~core.KillerState`: the files are written and read
only by the killer itself (never accept a snapshot directory others can
write to: unpickling runs code). Pickle keeps the object graph (pods point
at their generation, timers at both) without a schema of our own, and is the
fastest way to save and restore it in Python.

Everything that makes a file unusable raises :class:`SnapshotRejected` with
a short ``reason`` (a metric label): the caller then replays the partition
from the log, which is always correct.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import io
import json
import operator
import os
import pickle
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pydantic

import core
import schemas
from core import KillerState
from core import settings as core_settings
from core import state as core_state

MAGIC: Final = b"JRKSNAP\n"
FORMAT_VERSION: Final = 1
"""The file layout (magic, header fields). Bump when either changes."""

_LENGTH_BYTES: Final = 4
_DIGEST_BYTES: Final = 32
_MAX_HEADER: Final = 1 << 20


class SnapshotRejected(Exception):
    """A snapshot that must not be used; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@functools.cache
def state_digest() -> str:
    """Who can read a payload: the source of the core and the schemas (the pickled
    classes and the meaning of every field), Python's and pydantic's versions.

    Any change to them makes older snapshots incompatible: they are skipped and
    the partition is replayed from the log. A rolling upgrade thus costs one full
    replay per partition, never a state misread by different code.
    """
    digest = hashlib.sha256()
    digest.update(f"python {sys.version_info[:2]} pydantic {pydantic.VERSION}\n".encode())
    for package in (core, schemas):
        root = Path(package.__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    digest.update(Path(__file__).read_bytes())  # the pickling below
    return digest.hexdigest()


# -- pickling -------------------------------------------------------------------------
#
# The default pickling of a slotted dataclass builds a dict of its slots per
# object (and restores it with one setattr per slot): about ten times slower
# than a tuple of the fields restored by the dataclass's ``__init__``. The
# object is created first and initialised from its state afterwards, so the
# cycles of the state (a pod and its generation) pickle fine.


def _init(obj: Any, fields: tuple[Any, ...]) -> None:
    obj.__init__(*fields)


def _reducer(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    names = [f.name for f in dataclasses.fields(cls)]
    # attrgetter of several names returns a tuple, in C; of one name, the value.
    get: Callable[[Any], Any] = (
        operator.attrgetter(*names) if len(names) > 1 else lambda obj: (getattr(obj, names[0]),)
    )

    def reduce(obj: Any) -> tuple[Any, ...]:
        return (object.__new__, (cls,), get(obj), None, None, _init)

    return reduce


def _dispatch_table() -> dict[type, Callable[[Any], tuple[Any, ...]]]:
    table: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
    for module in (core_state, core_settings):
        for cls in vars(module).values():
            if (
                isinstance(cls, type)
                and cls.__module__ == module.__name__
                and dataclasses.is_dataclass(cls)
                and "__slots__" in vars(cls)
                and all(f.init for f in dataclasses.fields(cls))
            ):
                table[cls] = _reducer(cls)
    return table


_DISPATCH: Final = _dispatch_table()
_gc_lock = threading.Lock()
_gc_pausers = 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic GC off while (un)pickling: creating a million objects triggers
    collections that walk the whole heap again and again (3x slower measured).
    Process-wide, counted, so that overlapping users do not re-enable it early."""
    global _gc_pausers
    with _gc_lock:
        _gc_pausers += 1
        if _gc_pausers == 1:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0:
                gc.enable()


@dataclass(frozen=True)
class SnapshotHeader:
    prefix: str
    partition: int
    job_partitions: int
    positions: Mapping[str, int]
    """Design topic name -> the next offset to fold in this partition."""
    created_at: datetime
    payload_bytes: int
    payload_sha256: str
    global_positions: Mapping[str, int]
    """``topic/partition`` -> next offset of ``k8s.nodes`` and ``config`` folded at the
    time (informational: those are read whole again at every start)."""
    format: int = FORMAT_VERSION
    core: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": self.format,
                "core": self.core,
                "prefix": self.prefix,
                "partition": self.partition,
                "job_partitions": self.job_partitions,
                "positions": dict(self.positions),
                "global_positions": dict(self.global_positions),
                "created_at": self.created_at.isoformat(),
                "payload_bytes": self.payload_bytes,
                "payload_sha256": self.payload_sha256,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotHeader:
        try:
            data = json.loads(raw)
            return cls(
                format=int(data["format"]),
                core=str(data["core"]),
                prefix=str(data["prefix"]),
                partition=int(data["partition"]),
                job_partitions=int(data["job_partitions"]),
                positions={str(k): int(v) for k, v in data["positions"].items()},
                global_positions={str(k): int(v) for k, v in data["global_positions"].items()},
                created_at=datetime.fromisoformat(data["created_at"]),
                payload_bytes=int(data["payload_bytes"]),
                payload_sha256=str(data["payload_sha256"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SnapshotRejected("unreadable", f"header: {exc}") from exc


def dump_state(state: KillerState) -> bytes:
    """The payload. The caller guarantees nobody mutates ``state`` meanwhile."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    with _gc_paused():
        pickler.dump(state)
    return buffer.getvalue()


def load_state(payload: bytes) -> KillerState:
    try:
        with _gc_paused():
            state = pickle.loads(payload)  # our own files, checksummed (module doc)
    except Exception as exc:  # any unpickling error means: do not use it
        raise SnapshotRejected("unreadable", f"payload: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, KillerState):
        raise SnapshotRejected("unreadable", f"payload is a {type(state).__name__}")
    return state


def encode(header: SnapshotHeader, payload: bytes) -> bytes:
    raw = header.to_json()
    return (
        MAGIC
        + len(raw).to_bytes(_LENGTH_BYTES, "big")
        + raw
        + hashlib.sha256(raw).digest()
        + payload
    )


def make_header(
    *,
    prefix: str,
    partition: int,
    job_partitions: int,
    positions: Mapping[str, int],
    global_positions: Mapping[str, int],
    payload: bytes,
    created_at: datetime | None = None,
) -> SnapshotHeader:
    return SnapshotHeader(
        prefix=prefix,
        partition=partition,
        job_partitions=job_partitions,
        positions=dict(positions),
        global_positions=dict(global_positions),
        created_at=created_at or datetime.now(UTC),
        payload_bytes=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        core=state_digest(),
    )


def decode(
    data: bytes, *, prefix: str, partition: int, job_partitions: int
) -> tuple[SnapshotHeader, bytes]:
    """Check a file's bytes; return its header and (checksummed) payload."""
    start = len(MAGIC) + _LENGTH_BYTES
    if len(data) < start:
        raise SnapshotRejected("truncated", f"{len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise SnapshotRejected("unreadable", "not a killer snapshot (magic)")
    length = int.from_bytes(data[len(MAGIC) : start], "big")
    if length > _MAX_HEADER:
        raise SnapshotRejected("unreadable", f"header length {length}")
    body = start + length + _DIGEST_BYTES
    if len(data) < body:
        raise SnapshotRejected("truncated", "in the header")
    raw = data[start : start + length]
    if hashlib.sha256(raw).digest() != data[start + length : body]:
        raise SnapshotRejected("checksum", "header sha256 differs")
    header = SnapshotHeader.from_json(raw)
    if header.format != FORMAT_VERSION:
        raise SnapshotRejected("incompatible", f"format {header.format} != {FORMAT_VERSION}")
    if header.core != state_digest():
        raise SnapshotRejected("incompatible", "written by a different core (digest)")
    if (header.prefix, header.partition, header.job_partitions) != (
        prefix,
        partition,
        job_partitions,
    ):
        raise SnapshotRejected(
            "mismatch",
            f"for prefix {header.prefix!r} partition {header.partition}/"
            f"{header.job_partitions}, wanted {prefix!r} {partition}/{job_partitions}",
        )
    payload = data[body:]
    if len(payload) < header.payload_bytes:
        raise SnapshotRejected("truncated", f"{len(payload)} of {header.payload_bytes} bytes")
    if len(payload) > header.payload_bytes:
        raise SnapshotRejected("unreadable", "trailing bytes")
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise SnapshotRejected("checksum", "payload sha256 differs")
    return header, payload


def check_positions(
    header: SnapshotHeader, starts: Mapping[str, int], ends: Mapping[str, int]
) -> None:
    """Every recorded position must lie in the log as it is now: at or after its
    start (retention has not removed records the snapshot did not fold) and at
    or before its end (the topic was not re-created or truncated)."""
    for topic, end in ends.items():
        if topic not in header.positions:
            raise SnapshotRejected("mismatch", f"no position for {topic}")
        position = header.positions[topic]
        if position > end:
            raise SnapshotRejected("outside-log", f"{topic} at {position} > end {end}")
        if position < starts.get(topic, 0):
            raise SnapshotRejected(
                "outside-log", f"{topic} at {position} < log start {starts[topic]}"
            )


class SnapshotStore:
    """A directory of snapshot files, one per (topic prefix, partition), plus the
    previous one (kept so that a damaged newest file still leaves a recent state)."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix

    def path(self, partition: int) -> Path:
        # A topic prefix is made of [a-zA-Z0-9._-] (Kafka topic name rules).
        return self.directory / f"killer.{self.prefix}p{partition}.snap"

    def candidates(self, partition: int) -> list[Path]:
        """Newest first."""
        newest = self.path(partition)
        return [p for p in (newest, newest.with_suffix(".prev")) if p.exists()]

    def write(self, header: SnapshotHeader, payload: bytes) -> int:
        """Atomically: a temporary file, fsync, rename over the newest (which becomes
        the previous one), fsync the directory. Returns the bytes written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = encode(header, payload)
        target = self.path(header.partition)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if target.exists():
                os.replace(target, target.with_suffix(".prev"))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return len(data)

    def read(
        self, path: Path, *, partition: int, job_partitions: int
    ) -> tuple[SnapshotHeader, bytes]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SnapshotRejected("unreadable", str(exc)) from exc
        return decode(data, prefix=self.prefix, partition=partition, job_partitions=job_partitions)
