"""Configuration resolution for one Job generation (rule: *config resolution*).

defaults < namespace override < label-selector overrides < the Job's own
annotations. The first three come from :meth:`schemas.config.KillerConfig.resolve`
and are cached per generation and snapshot; the annotations
(``jobreaper.io/pending-timeout-seconds``, ``jobreaper.io/running-timeout-seconds``,
``jobreaper.io/forbid-force-deletion``) are kept parsed on the generation
(``JobGen.ann``) by ``evolve`` and applied by :func:`pending_timeout_us`, the
triggers and the ladder.

Scope (``enforce``: off, shadow, on) resolves differently, most specific last
(:meth:`schemas.config.KillerConfig.enforce_for`, which tools asking about one Job
use too):

    built-in ``off`` < global ``enforce`` < the Job's ``jobreaper.io/enforce`` label
    < a namespace override that sets ``enforce`` < selector overrides that set it

A Job opts in (or out) by itself where the platform team left the choice open
(the global value), and a namespace or selector override that sets ``enforce``
is the platform team's *pin*: the Job's label cannot beat it (``kube-system:
{enforce: off}`` keeps jobreaper out whatever Jobs there say, and a selector on
``tier: critical`` with ``enforce: on`` cannot be escaped by a label). An
invalid label value counts as absent (the watcher warns about it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import TYPE_CHECKING

from schemas.config import ForceDeletePolicy, KillerConfig, KillerSettings

from .guard import GuardSettings
from .state import SECOND, JobGen

if TYPE_CHECKING:
    from schemas.config import ConfigSnapshot


@dataclass(frozen=True, slots=True)
class Effective:
    """Resolved settings, in the units the core computes with."""

    version: int
    delete_method: bool
    """``killMethod: delete``: skip the active-deadline step."""
    delete_timeout_us: int
    force_timeout_us: int
    """0: force deletion disabled."""
    default_pending_timeout_us: int
    """The configured pending timeout (a Job's annotation wins: :func:`pending_timeout_us`);
    0: disabled."""
    enforce: int = 0
    """OFF, SHADOW or ON: the scope for this Job, its label applied."""
    force_policy: int = 0
    """AFTER_TIMEOUT, WHEN_FENCED or NEVER: force deletion on a node not fenced."""
    node_lost_delete_us: int = 0
    """``deleteOnNodeLostAfterSeconds``: the lost-node trigger (``NodeLost``); 0: off."""


AFTER_TIMEOUT = 0
WHEN_FENCED = 1
NEVER = 2
FORCE_POLICIES: tuple[ForceDeletePolicy, ForceDeletePolicy, ForceDeletePolicy] = (
    "afterTimeout",
    "whenFenced",
    "never",
)
_FORCE_POLICY = {name: i for i, name in enumerate(FORCE_POLICIES)}

OFF = 0
SHADOW = 1
ON = 2
_ENFORCE = {"off": OFF, "shadow": SHADOW, "on": ON}


def _effective(version: int, s: KillerSettings) -> Effective:
    return Effective(
        enforce=_ENFORCE[s.enforce],
        version=version,
        delete_method=s.kill_method == "delete",
        delete_timeout_us=s.delete_killing_tasks_timeout_seconds * SECOND,
        force_timeout_us=s.force_delete_task_timeout_seconds * SECOND,
        default_pending_timeout_us=s.default_pending_timeout_seconds * SECOND,
        force_policy=_FORCE_POLICY[s.force_delete_policy],
        node_lost_delete_us=s.delete_on_node_lost_after_seconds * SECOND,
    )


_DEFAULT_CONFIG = KillerConfig()
DEFAULTS = _effective(0, _DEFAULT_CONFIG)
"""Built-in defaults (config version 0: no snapshot folded yet)."""


class Resolver:
    """Effective settings per generation for one snapshot, cached on the generation."""

    __slots__ = (
        "base",
        "config",
        "fence_after_us",
        "force_limit",
        "guard",
        "key",
        "shared",
        "version",
    )

    def __init__(self, snapshot: ConfigSnapshot | None) -> None:
        self.key: object = snapshot if snapshot is not None else _DEFAULT_CONFIG
        if snapshot is None:
            self.version = 0
            self.config = _DEFAULT_CONFIG
            self.base = DEFAULTS
        else:
            self.version = snapshot.version
            self.config = snapshot.config
            self.base = _effective(snapshot.version, snapshot.config)
        self.shared: dict[Effective, Effective] = {self.base: self.base}
        # The cluster-wide keys (no override sets them).
        self.fence_after_us = self.config.fence_unreachable_after_seconds * SECOND
        """A node lost this long counts as fenced; 0: never."""
        self.force_limit = self.config.max_force_deletions_per_second_per_partition
        """Force deletions in any one-second window of this state; 0: no limit."""
        c = self.config
        self.guard = GuardSettings(
            c.mass_disruption_window_seconds * SECOND,
            c.mass_disruption_min_nodes,
            # The decimal the operator wrote, exactly (0.55 is 11/20, not a binary float).
            Fraction(repr(c.mass_disruption_fraction)),
        )
        """The mass-disruption guard's thresholds (``core.guard``)."""

    def for_gen(self, gen: JobGen) -> Effective:
        """Defaults < namespace override < label-selector overrides, for ``gen``; the
        scope as the module docstring says."""
        if gen.eff_key is self.key and isinstance(gen.eff, Effective):
            return gen.eff
        overrides = self.config.has_overrides()
        if overrides:
            eff = _effective(self.version, self.config.resolve(gen.namespace, gen.labels))
        else:
            eff = self.base
        if gen.labels or overrides:  # else the global value, already in ``eff``
            enforce = _ENFORCE[self.config.enforce_for(gen.namespace, gen.labels)]
            if enforce != eff.enforce:
                eff = replace(eff, enforce=enforce)
        # One object per distinct result (an opted-in Job differs from the base in
        # ``enforce`` only): thousands of Jobs share a handful.
        eff = self.shared.setdefault(eff, eff)
        gen.eff = eff
        gen.eff_key = self.key
        return eff


def pending_timeout_us(gen: JobGen, eff: Effective) -> int:
    """The pending timeout of ``gen``'s pods: the Job's annotation wins over the
    configured default; 0 disables."""
    seconds = gen.ann.pending_timeout_s
    if seconds is not None:
        return seconds * SECOND
    return eff.default_pending_timeout_us
