"""The killer's dynamic configuration and its versioned snapshots.

Key names follow Furiko's execution config (``JobExecutionConfig``) and are
the JSON names (aliases); the Python attribute names are snake_case::

    {
      "killMethod": "activeDeadline",
      "deleteKillingTasksTimeoutSeconds": 180,
      "forceDeleteTaskTimeoutSeconds": 900,
      "defaultPendingTimeoutSeconds": 900,
      "enforce": "off",
      "overrides": {
        "namespaces": {"batch": {"deleteKillingTasksTimeoutSeconds": 60}},
        "selectors": [
          {"matchLabels": {"tier": "critical"}, "settings": {"forceDeleteTaskTimeoutSeconds": 0}}
        ]
      }
    }

Resolution for one Job, most specific last: defaults < namespace override <
label-selector overrides (matching the Job's labels; fewer labels first, then
list order) < the Job's own annotations (applied by the killer core).
``enforce`` (the scope) is the exception: the Job's ``jobreaper.io/enforce``
label sits between the global value and the overrides (see ``core.settings``). Only
basic validation lives here (types, no negatives, unknown keys, alias
conflicts); the config service adds richer checks before publishing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from .annotations import ENFORCE, parse_enforce
from .base import Message, UtcDatetime
from .topics import CONFIG

Enforce = Literal["off", "shadow", "on"]
"""Whether jobreaper acts on a Job: ``off`` (not at all: no trigger, no step, not
even a stuck deletion's force deletion), ``shadow`` (decides as ``on`` but every
command is marked ``shadow``: the executor writes nothing and records
``would-apply``), ``on`` (acts)."""

ENFORCE_ALIAS = "enforce"
_SCOPES: dict[str, Enforce] = {"off": "off", "shadow": "shadow", "on": "on"}

ForceDeletePolicy = Literal["afterTimeout", "whenFenced", "never"]
"""What force deletion does for a pod stuck in deletion on a node that is **not
fenced** (a fenced node: its Node object deleted, the
``node.kubernetes.io/out-of-service`` taint, or unreachable past
``fenceUnreachableAfterSeconds``): ``afterTimeout`` force-deletes at
``deletionTimestamp + forceDeleteTaskTimeoutSeconds`` (Furiko's; the default),
``whenFenced`` waits for a fence, ``never`` never force-deletes, fenced or not
(Kubernetes' pod garbage collector still force-deletes the pods of an
out-of-service or deleted node). On a fenced node ``afterTimeout`` and
``whenFenced`` force-delete at once. docs/config.md says why the default."""

KillMethod = Literal["activeDeadline", "delete"]
"""``activeDeadline``: first lower the pod's ``activeDeadlineSeconds`` (the kubelet kills it,
the pod object stays); ``delete``: go straight to API deletion (Furiko v0.2+)."""

Seconds = Annotated[int, Field(ge=0, strict=True)]
"""Whole seconds, not negative; ``0`` has a per-key meaning (see each key)."""

FORCE_DELETE_ALIAS_OLD = "forceDeleteKillingTasksTimeoutSeconds"
FORCE_DELETE_ALIAS = "forceDeleteTaskTimeoutSeconds"

CONFIG_KEY = "killer"
"""The record key of every ``ConfigSnapshot`` (the ``config`` topic is compacted)."""


def _reject_both_force_aliases(data: Any) -> Any:
    if isinstance(data, Mapping) and FORCE_DELETE_ALIAS in data and FORCE_DELETE_ALIAS_OLD in data:
        raise ValueError(
            f"give either {FORCE_DELETE_ALIAS} or its old name {FORCE_DELETE_ALIAS_OLD}, not both"
        )
    return data


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class KillerSettings(_Body):
    """The effective settings for one Job (also the global defaults)."""

    kill_method: KillMethod = Field("activeDeadline", alias="killMethod")
    delete_killing_tasks_timeout_seconds: Seconds = Field(
        180, alias="deleteKillingTasksTimeoutSeconds"
    )
    """Wait after the first kill attempt before API deletion; 0: delete at once."""
    force_delete_task_timeout_seconds: Seconds = Field(
        900,
        validation_alias=AliasChoices(
            FORCE_DELETE_ALIAS, FORCE_DELETE_ALIAS_OLD, "force_delete_task_timeout_seconds"
        ),
        serialization_alias=FORCE_DELETE_ALIAS,
    )
    """Wait after a pod's ``deletionTimestamp`` before force deletion; 0 disables force
    deletion. The old name ``forceDeleteKillingTasksTimeoutSeconds`` is accepted."""
    default_pending_timeout_seconds: Seconds = Field(900, alias="defaultPendingTimeoutSeconds")
    """Pending timeout for Jobs that set none; 0 disables."""
    force_delete_policy: ForceDeletePolicy = Field("afterTimeout", alias="forceDeletePolicy")
    """Force deletion on a node that is not fenced (see ``ForceDeletePolicy``)."""
    delete_on_node_lost_after_seconds: Seconds = Field(0, alias="deleteOnNodeLostAfterSeconds")
    """The lost-node trigger (``NodeLost``): a pod whose node has been not ready or
    unreachable this long is deleted (gracefully; then force-deleted as
    ``forceDeletePolicy`` and the fences say) without killing its Job, which replaces it
    as its ``backoffLimit`` allows; 0 (the default): off, Kubernetes' taint-based
    eviction (300 s by default) applies. docs/config.md says why off."""
    enforce: Enforce = "off"
    """Scope: ``off`` by default (opt-in). A Job's own ``jobreaper.io/enforce`` label
    beats the global value but not a namespace or selector override that sets it
    (the platform team's pin, e.g. ``kube-system: off``): see ``core.settings``."""

    _check_aliases = model_validator(mode="before")(_reject_both_force_aliases)


class KillerSettingsPatch(_Body):
    """A partial set of keys, for an override: unset keys fall through."""

    kill_method: KillMethod | None = Field(None, alias="killMethod")
    delete_killing_tasks_timeout_seconds: Seconds | None = Field(
        None, alias="deleteKillingTasksTimeoutSeconds"
    )
    force_delete_task_timeout_seconds: Seconds | None = Field(
        None,
        validation_alias=AliasChoices(
            FORCE_DELETE_ALIAS, FORCE_DELETE_ALIAS_OLD, "force_delete_task_timeout_seconds"
        ),
        serialization_alias=FORCE_DELETE_ALIAS,
    )
    default_pending_timeout_seconds: Seconds | None = Field(
        None, alias="defaultPendingTimeoutSeconds"
    )
    force_delete_policy: ForceDeletePolicy | None = Field(None, alias="forceDeletePolicy")
    delete_on_node_lost_after_seconds: Seconds | None = Field(
        None, alias="deleteOnNodeLostAfterSeconds"
    )
    enforce: Enforce | None = None

    _check_aliases = model_validator(mode="before")(_reject_both_force_aliases)

    def set_keys(self) -> dict[str, Any]:
        """The keys this patch sets (attribute names)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class SelectorOverride(_Body):
    """Settings for Jobs whose labels contain all of ``matchLabels``."""

    match_labels: dict[str, str] = Field(alias="matchLabels", min_length=1)
    settings: KillerSettingsPatch

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


class Overrides(_Body):
    namespaces: dict[str, KillerSettingsPatch] = Field(default_factory=dict)
    """Per namespace."""
    selectors: tuple[SelectorOverride, ...] = ()
    """Per label selector; more specific than a namespace override."""


GLOBAL_ONLY: frozenset[str] = frozenset(
    {
        "overrides",
        "fence_unreachable_after_seconds",
        "max_force_deletions_per_second_per_partition",
        "mass_disruption_window_seconds",
        "mass_disruption_min_nodes",
        "mass_disruption_fraction",
    }
)
"""The keys of ``KillerConfig`` that are not per-Job settings (no override sets them)."""


class KillerConfig(KillerSettings):
    """The whole dynamic configuration: defaults plus overrides, and the cluster-wide
    keys no override sets (they are about nodes and the API server, not a Job)."""

    fence_unreachable_after_seconds: Seconds = Field(0, alias="fenceUnreachableAfterSeconds")
    """A node not ready or unreachable for this long counts as fenced (its pods are
    force-deleted at once, whatever ``forceDeletePolicy``, except ``never``); 0: never
    (only a deleted Node or the ``node.kubernetes.io/out-of-service`` taint fences)."""
    max_force_deletions_per_second_per_partition: Seconds = Field(
        20, alias="maxForceDeletionsPerSecondPerPartition"
    )
    """At most this many force deletions decided in any one-second window by one killer
    partition (the killer is partitioned by Job: the cluster-wide bound is this times
    the partitions of ``k8s.objects``, 6 by default, so 120/s); 0: no limit."""
    mass_disruption_window_seconds: Seconds = Field(120, alias="massDisruptionWindowSeconds")
    """The mass-disruption guard (``core.guard``): nodes of one
    ``topology.kubernetes.io/zone`` that turned silent (not ready, unreachable) within
    this many seconds of each other count together; 0 turns the guard off."""
    mass_disruption_min_nodes: Annotated[int, Field(ge=1, strict=True)] = Field(
        3, alias="massDisruptionMinNodes"
    )
    """The guard trips when at least this many nodes of a zone turned silent within the
    window **and** ..."""
    mass_disruption_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.55, alias="massDisruptionFraction"
    )
    """... they are at least this fraction of the zone's nodes (the node lifecycle
    controller's ``--unhealthy-zone-threshold``, 0.55, and its "more than 2")."""
    overrides: Overrides = Field(default_factory=Overrides)

    def defaults(self) -> KillerSettings:
        """The global defaults, without overrides."""
        return KillerSettings.model_validate(self.model_dump(exclude=set(GLOBAL_ONLY)))

    def resolve(self, namespace: str, labels: Mapping[str, str]) -> KillerSettings:
        """Effective settings for a Job in ``namespace`` with ``labels`` (before the
        Job's own annotations, which the killer core applies)."""
        values = self.model_dump(exclude=set(GLOBAL_ONLY))
        ns_patch = self.overrides.namespaces.get(namespace)
        if ns_patch is not None:
            values.update(ns_patch.set_keys())
        matching = [
            (len(sel.match_labels), index, sel)
            for index, sel in enumerate(self.overrides.selectors)
            if sel.matches(labels)
        ]
        for _, _, sel in sorted(matching, key=lambda item: (item[0], item[1])):
            values.update(sel.settings.set_keys())
        return KillerSettings.model_validate(values)

    def pinned_enforce(self, namespace: str, labels: Mapping[str, str]) -> Enforce | None:
        """The ``enforce`` a namespace or selector override sets for this Job (the most
        specific one, as :meth:`resolve` orders them), or None when none sets it."""
        pinned: Enforce | None = None
        ns_patch = self.overrides.namespaces.get(namespace)
        if ns_patch is not None and ns_patch.enforce is not None:
            pinned = ns_patch.enforce
        matching = [
            (len(sel.match_labels), index, sel)
            for index, sel in enumerate(self.overrides.selectors)
            if sel.settings.enforce is not None and sel.matches(labels)
        ]
        for _, _, sel in sorted(matching, key=lambda item: (item[0], item[1])):
            pinned = sel.settings.enforce
        return pinned

    def enforce_for(self, namespace: str, labels: Mapping[str, str]) -> Enforce:
        """The scope of a Job in ``namespace`` with ``labels``: a namespace or selector
        override that sets ``enforce`` (a pin), else the Job's own
        ``jobreaper.io/enforce`` label (an invalid value counts as absent), else the
        global value. The one definition: the killer core (``core.settings``) and the
        tools that ask about one Job (``jobreaper kill``) both call it."""
        pinned = self.pinned_enforce(namespace, labels)
        if pinned is not None:
            return pinned
        label = _SCOPES.get(parse_enforce(labels.get(ENFORCE)) or "")
        return self.enforce if label is None else label

    def has_overrides(self) -> bool:
        return bool(self.overrides.namespaces or self.overrides.selectors)


class ConfigSnapshot(Message):
    """A validated configuration, as published by the config service."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.config.snapshot.v1"
    TOPIC: ClassVar[str] = CONFIG

    version: NonNegativeInt
    """Monotonic; every command records the version it was decided under. Version 0 is
    reserved for the built-in defaults (no snapshot yet)."""
    config: KillerConfig = Field(default_factory=KillerConfig)
    author: str = ""
    """Who changed it: for ``PUT /config`` the user the API server's TokenReview named
    for the caller's bearer token (``system:serviceaccount:<ns>:<name>``, ``alice``...;
    never a request header), the ConfigMap's last field manager, or the file's path."""
    changed_at: UtcDatetime
    diff: tuple[str, ...] = ()
    """Human-readable summary of the change against the previous version."""
    source: str = ""
    """Where it came from: ``configmap:<namespace>/<name>@<resourceVersion>``,
    ``file:<path>`` or ``http:<peer>``."""
    digest: str = ""
    """SHA-256 of the canonical JSON of ``config``: equal digests, equal configurations."""

    def kafka_key(self) -> str:
        return CONFIG_KEY


CONFIG_MESSAGES: tuple[type[Message], ...] = (ConfigSnapshot,)
