"""The mass-disruption guard (rule *force.guard*): pure functions of the node states.

A node partitioned away from the control plane looks exactly like a dead one:
its Ready condition goes Unknown, its pods hang in deletion. Force-deleting them
is safe only if the node is really down; when many nodes of one zone go silent
together, a network partition is the likelier story, and force deletion would
start replacements beside processes that still run (split brain, kubernetes#35235).
The node lifecycle controller stops evicting in such a zone for the same reason
(``--unhealthy-zone-threshold`` 0.55, with more than 2 nodes not ready).

A zone (the ``topology.kubernetes.io/zone`` label; ``""`` for nodes without one,
the whole cluster when no node has it) is **tripped** when at least
``massDisruptionMinNodes`` of its nodes, and at least ``massDisruptionFraction``
of them, are *silent* and turned silent within ``massDisruptionWindowSeconds`` of
each other. Silent: lost (not ready, unreachable), not fenced by an administrator
(a deleted Node, the out-of-service taint: those are known to be down), and lost
after the newest ``ForceResumeRequested`` for its zone (an operator said those
may go). Deleted Nodes are not counted at all.

The answer depends on each node's folded state only (when it was lost, fenced,
its zone), never on the order in which observations of different nodes were
folded, nor on ``now``: every killer partition, rebuild and replay that folded the
same node observations decides the same guard. It lifts when the nodes return
(or are fenced, or deleted) or an operator resumes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from .state import NodeState

EVERY_ZONE = "*"
"""The key of a resume for every zone (``ForceResumeRequested.zone`` None); a zone
name cannot be ``*`` (label values are alphanumeric at both ends)."""


@dataclass(frozen=True, slots=True)
class GuardSettings:
    window_us: int
    """0: the guard is off."""
    min_nodes: int
    fraction: Fraction


@dataclass(frozen=True, slots=True)
class Trip:
    """A tripped zone."""

    zone: str
    tripped_us: int
    """The loss of the silent node that reached the threshold (the earliest such)."""
    silent: tuple[str, ...]
    """Every silent node of the zone, sorted by name."""
    zone_nodes: int


def needed(settings: GuardSettings, zone_nodes: int) -> int:
    """How many silent nodes trip a zone of ``zone_nodes`` nodes: the count and the
    fraction both (exact arithmetic: 0.55 * 20 is 11, not 11.000000000000002)."""
    f = settings.fraction
    by_fraction = -(-(f.numerator * zone_nodes) // f.denominator)
    return max(settings.min_nodes, by_fraction)


def resumed_until(resumes: Mapping[str, int], zone: str) -> int | None:
    """The newest resume that covers ``zone`` (its own, or one for every zone)."""
    own = resumes.get(zone)
    every = resumes.get(EVERY_ZONE)
    if own is None:
        return every
    if every is None:
        return own
    return own if own > every else every


def trips(
    nodes: Mapping[str, NodeState], settings: GuardSettings, resumes: Mapping[str, int]
) -> dict[str, Trip]:
    """The tripped zones (see the module doc), by zone."""
    window = settings.window_us
    if window <= 0:
        return {}
    members: dict[str, int] = {}
    silent: dict[str, list[tuple[int, str]]] = {}
    for name, node in nodes.items():
        if node.gone:
            continue
        zone = node.zone
        members[zone] = members.get(zone, 0) + 1
        lost = node.lost_us
        if lost is None or node.fenced_us is not None:
            continue
        resumed = resumed_until(resumes, zone)
        if resumed is not None and lost <= resumed:
            continue
        silent.setdefault(zone, []).append((lost, name))
    out: dict[str, Trip] = {}
    for zone, losses in silent.items():
        size = members[zone]
        need = needed(settings, size)
        if len(losses) < need:
            continue
        losses.sort()
        first = 0
        for last in range(len(losses)):
            while losses[last][0] - losses[first][0] >= window:
                first += 1
            if last - first + 1 >= need:
                names = tuple(sorted(name for _, name in losses))
                out[zone] = Trip(zone, losses[last][0], names, size)
                break
    return out
