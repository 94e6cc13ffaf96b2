"""Bounded records: a message about many pods or ids is written as *parts*.

Kafka refuses a record larger than the producer's ``max.request.size`` and the
broker's ``message.max.bytes`` (both 1 MiB by default; a topic may lower it with
``max.message.bytes``). An event listing every pod of a 20,000-pod Job, or a
decision record listing 40,000 ids, is larger than that; the transaction that
carries it aborts, and a killer that rebuilds and decides the same again
retries for ever. So ``KillStarted``, ``JobKilled`` and ``DecisionRecorded``
carry ``part`` and ``parts`` (1 and 1, and left out of the JSON, when one
record holds everything): the lists of one event are split, in order, over
``parts`` records, each with the same other fields; concatenating the lists of
parts 1..``parts`` gives the whole event.

A part holds at most ``MAX_PODS_PER_PART`` pods (``MAX_IDS_PER_DECISION_PART``
ids for decision records) **and** its JSON is kept under ``PART_TARGET_BYTES``
(counted from the actual names, so names longer than Kubernetes allows, which
only a forged record could carry, make smaller parts rather than a record
Kafka refuses).

Worst case with names Kubernetes accepts (a pod name is a DNS subdomain, at most
253 ASCII characters; a uid 36): a ``PodRef`` is ``{"name":"<253>","uid":"<36>"},``
= 310 bytes, a ``PodEnding`` ``{"name":"<253>","uid":"<36>","ended":"force-deleted"},``
= 334 bytes; 1,000 of them are 334,000 bytes, plus the other fields (namespace and
Job name up to 63 characters, a reason) and the CloudEvents headers, about 0.32 MiB:
a third of the 1 MiB default, and the byte bound (512 KiB) is never what splits them.
A decision record id is 32 hex digits, 35 bytes in its JSON list: 10,000 ids are
350,000 bytes (``tests/unit/test_parts.py`` encodes the largest parts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

KAFKA_DEFAULT_MAX_BYTES: Final = 1_048_576
"""Kafka's default ``max.request.size`` (producer) and, within a few bytes,
``message.max.bytes`` (broker): the largest record it takes unless configured."""

MAX_PODS_PER_PART: Final = 1_000
"""Pods (``pods`` plus ``already_done`` of ``KillStarted``; ``pods`` of
``JobKilled``) in one record."""

MAX_IDS_PER_DECISION_PART: Final = 10_000
"""Ids (``command_ids`` plus ``event_ids``) in one ``DecisionRecorded`` record."""

PART_TARGET_BYTES: Final = 512 * 1024
"""A part's JSON stays under this (half the default limit, leaving room for the
headers and for a broker configured a little lower), however long the names."""

ENTRY_OVERHEAD: Final = 48
"""Bytes of a list entry besides its strings: ``{"name":"","uid":"","ended":"force-deleted"},``
is 45 (a ``PodRef`` needs less)."""

T = TypeVar("T")


def json_bytes(text: str) -> int:
    """The length in bytes of ``text`` as a JSON string's content (UTF-8, escapes
    counted, quotes not): what pydantic writes."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text)
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2


def pod_entry_bytes(name: str, uid: str) -> int:
    """An upper bound of one pod's entry in a list of ``PodRef`` or ``PodEnding``."""
    return json_bytes(name) + json_bytes(uid) + ENTRY_OVERHEAD


def split(
    items: Sequence[T],
    cost: Callable[[T], int],
    *,
    max_items: int,
    max_bytes: int,
) -> list[Sequence[T]]:
    """``items`` in order, cut into consecutive slices of at most ``max_items`` items
    whose ``cost`` adds up to at most ``max_bytes`` (a slice always takes at least one
    item). Deterministic: the same items, the same slices. No items: one empty slice."""
    if len(items) <= max_items and sum(cost(item) for item in items) <= max_bytes:
        return [items]
    slices: list[Sequence[T]] = []
    start = 0
    size = 0
    for index, item in enumerate(items):
        c = cost(item)
        if index > start and (index - start >= max_items or size + c > max_bytes):
            slices.append(items[start:index])
            start, size = index, 0
        size += c
    slices.append(items[start:])
    return slices


def is_one(value: int) -> bool:
    """``exclude_if`` of ``part``/``parts``: a record that holds the whole message is
    written as before parts existed (byte for byte, so its derived id is unchanged)."""
    return value == 1


__all__ = [
    "ENTRY_OVERHEAD",
    "KAFKA_DEFAULT_MAX_BYTES",
    "MAX_IDS_PER_DECISION_PART",
    "MAX_PODS_PER_PART",
    "PART_TARGET_BYTES",
    "is_one",
    "json_bytes",
    "pod_entry_bytes",
    "split",
]
