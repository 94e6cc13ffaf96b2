"""The mass-disruption guard (rule *force.guard*): pure functions of the node states.

A node partitioned away from the control plane looks exactly like a dead one:
its Ready condition goes Unknown, its pods hang in deletion. Force-deleting them
is safe only if the node is really down; when many nodes of one zone go silent
together, a network partition is the likelier story, and force deletion would
start replacements beside processes that still run (split brain, kubernetes#35235).
The node lifecycle controller stops evicting in such a zone for the same reason
(``--unhealthy-zone-threshold`` 0.55, with more than 2 nodes not ready).

A zone (the ``topology.kubernetes.io/zone`` label; ``""`` for nodes without one,
the whole cluster when no node has it) is **tripped** when the most recent losses
(not ready, unreachable) of at least ``massDisruptionMinNodes`` of its nodes, and
of at least ``massDisruptionFraction`` of them, began within
``massDisruptionWindowSeconds`` of each other, and one node of those is still
*silent*: lost and not fenced by an administrator (a deleted Node, the
out-of-service taint: known to be down). A loss observed at or before the newest
``ForceResumeRequested`` for its zone (or for all) does not count (an operator said
those may go). Deleted Nodes are not counted at all.

So it lifts only when **every** node of the mass loss is back (or fenced, deleted,
or resumed), not as soon as fewer than the threshold are still away: a partition
that heals node by node must not force-delete the pods of the nodes still cut off.

The answer depends on each node's folded state only (when its latest loss began,
whether it is still lost, fenced, its zone), never on the order in which
observations of different nodes were folded, nor on ``now``: every killer
partition, rebuild and replay that folded the same node observations decides the
same guard.
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
    """The loss that reached the threshold (in the earliest window that has a node
    still silent)."""
    silent: tuple[str, ...]
    """The zone's nodes still silent (lost, not fenced, not resumed), sorted by name."""
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
    onsets: dict[str, list[tuple[int, str, bool]]] = {}
    for name, node in nodes.items():
        if node.gone:
            continue
        zone = node.zone
        members[zone] = members.get(zone, 0) + 1
        onset = node.onset_us
        if onset is None:
            continue
        resumed = resumed_until(resumes, zone)
        if resumed is not None and onset <= resumed:
            continue
        silent = node.lost_us is not None and node.fenced_us is None
        onsets.setdefault(zone, []).append((onset, name, silent))
    out: dict[str, Trip] = {}
    for zone, losses in onsets.items():
        size = members[zone]
        need = needed(settings, size)
        if len(losses) < need or not any(silent for _, _, silent in losses):
            continue
        losses.sort()
        # silent_before[i]: how many of losses[:i] are still silent (a prefix sum).
        silent_before = [0]
        for _, _, silent in losses:
            silent_before.append(silent_before[-1] + silent)
        first = 0
        for last in range(len(losses)):
            while losses[last][0] - losses[first][0] >= window:
                first += 1
            if last - first + 1 >= need and silent_before[last + 1] > silent_before[first]:
                names = tuple(sorted(name for _, name, silent in losses if silent))
                out[zone] = Trip(zone, losses[last][0], names, size)
                break
    return out
