"""Versions, ETags and the publish decision (pure).

The head is the newest snapshot on the ``config`` topic (version 0: none
yet, the built-in defaults). A validated candidate is

- ``stale`` when the writer named a version (``If-Match``) that is not the
  head's: somebody changed it since it was read (HTTP 409);
- ``unchanged`` when its canonical digest equals the head's: nothing is
  published (re-reading the same ConfigMap, a reformatted file);
- ``publish`` otherwise, as version ``head + 1``.

Only one writer holds the transactional id at a time and it reads the topic
to its end after taking it, so ``head + 1`` is never a version that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.config import ConfigSnapshot, KillerConfig

from .diff import diff, digest

ANY: Literal["*"] = "*"
IfMatch = frozenset[int] | Literal["*"]


@dataclass(frozen=True)
class Head:
    """The configuration in force: the newest snapshot (or the defaults, version 0)."""

    version: int
    config: KillerConfig
    digest: str
    snapshot: ConfigSnapshot | None = None

    @classmethod
    def of(cls, snapshot: ConfigSnapshot | None) -> Head:
        if snapshot is None:
            config = KillerConfig()
            return cls(0, config, digest(config))
        # Recomputed, not trusted from the record: older writers left it empty.
        return cls(snapshot.version, snapshot.config, digest(snapshot.config), snapshot)

    @property
    def etag(self) -> str:
        return etag(self.version)

    def fold(self, snapshot: ConfigSnapshot) -> Head:
        """The head after reading ``snapshot``: only a newer version replaces it."""
        return Head.of(snapshot) if snapshot.version > self.version else self


def etag(version: int) -> str:
    return f'"{version}"'


class BadIfMatch(ValueError):
    """An ``If-Match`` header that names no version."""


def parse_if_match(header: str | None) -> IfMatch | None:
    """``"5"``, ``W/"5"``, ``5``, a comma-separated list of them, or ``*``; None when absent."""
    if header is None or not header.strip():
        return None
    if header.strip() == ANY:
        return ANY
    versions: set[int] = set()
    for part in header.split(","):
        token = part.strip()
        if token.startswith("W/"):
            token = token[2:]
        token = token.strip('"').strip()
        if token.startswith("v"):
            token = token[1:]
        if not (token.isascii() and token.isdigit()) or len(token) > 18:
            raise BadIfMatch(
                f'If-Match {header!r} names no version; send the ETag of GET /config, e.g. "7"'
            )
        versions.add(int(token))
    return frozenset(versions)


Action = Literal["publish", "unchanged", "stale"]


@dataclass(frozen=True)
class Plan:
    action: Action
    version: int
    """The version to publish; for ``unchanged`` and ``stale``, the head's."""
    diff: tuple[str, ...] = ()
    digest: str = ""


def plan(head: Head, candidate: KillerConfig, if_match: IfMatch | None = None) -> Plan:
    """What to do with a validated candidate (see the module docstring)."""
    if if_match is not None and if_match != ANY and head.version not in if_match:
        return Plan("stale", head.version)
    candidate_digest = digest(candidate)
    if candidate_digest == head.digest:
        return Plan("unchanged", head.version, digest=candidate_digest)
    return Plan("publish", head.version + 1, diff(head.config, candidate), candidate_digest)


def make_snapshot(
    plan: Plan, config: KillerConfig, *, author: str, source: str, at: datetime
) -> ConfigSnapshot:
    if plan.action != "publish":
        raise ValueError(f"nothing to publish: the plan is {plan.action}")
    return ConfigSnapshot(
        version=plan.version,
        config=config,
        author=author,
        source=source,
        changed_at=at,
        diff=plan.diff,
        digest=plan.digest,
    )
