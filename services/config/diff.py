"""Canonical form, digest and a readable diff of two configurations (pure).

The canonical form is the model dumped with its JSON names (the old alias
becomes the new name), unset override keys left out and object keys sorted:
two documents that mean the same configuration have the same digest, so
re-reading an unchanged (or merely reformatted) source publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.config import KillerConfig, KillerSettingsPatch, SelectorOverride

SETTING_ORDER = (
    "enforce",
    "killMethod",
    "deleteKillingTasksTimeoutSeconds",
    "forceDeleteTaskTimeoutSeconds",
    "defaultPendingTimeoutSeconds",
    "forceDeletePolicy",
    "deleteOnNodeLostAfterSeconds",
    # cluster-wide: only at the top level (no override sets them)
    "fenceUnreachableAfterSeconds",
    "maxForceDeletionsPerSecondPerPartition",
    "massDisruptionWindowSeconds",
    "massDisruptionMinNodes",
    "massDisruptionFraction",
)

DEFAULTS = KillerConfig()


def _all_keys() -> set[str]:
    """Every key a configuration can set, by its JSON name: the diff must show each."""
    keys: set[str] = set()
    for model in (KillerConfig, KillerSettingsPatch):
        for name, field in model.model_fields.items():
            if name != "overrides":
                keys.add(field.serialization_alias or field.alias or name)
    return keys


def canonical(config: KillerConfig) -> dict[str, Any]:
    """The configuration as plain JSON data, with its JSON names."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def canonical_json(config: KillerConfig, *, indent: int | None = None) -> str:
    return json.dumps(
        canonical(config),
        sort_keys=True,
        indent=indent,
        separators=(",", ":") if indent is None else (",", ": "),
    )


def digest(config: KillerConfig) -> str:
    """SHA-256 (hex) of the canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _patch(patch: KillerSettingsPatch) -> dict[str, Any]:
    data: dict[str, Any] = patch.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _selector_name(selector: SelectorOverride) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _compare_settings(where: str, old: dict[str, Any], new: dict[str, Any], out: list[str]) -> None:
    for key in SETTING_ORDER:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        shown_before = "unset" if before is None else _show(before)
        shown_after = "unset" if after is None else _show(after)
        out.append(f"{where}{key}: {shown_before} -> {shown_after}")


def diff(old: KillerConfig, new: KillerConfig) -> tuple[str, ...]:
    """One line per difference, in a stable order; empty when they are equal.

    Top-level keys are compared as effective values (``180 -> 60``);
    overrides are added, removed, or changed key by key (``unset -> 60``).
    Selectors are identified by their labels, so a reordering (which can
    change which of two equally specific selectors wins) is a line of its own.
    """
    out: list[str] = []
    old_top = canonical(old)
    new_top = canonical(new)
    _compare_settings("", old_top, new_top, out)

    old_ns, new_ns = old.overrides.namespaces, new.overrides.namespaces
    for name in sorted(old_ns.keys() | new_ns.keys()):
        where = f"overrides.namespaces.{name}"
        if name not in old_ns:
            out.append(f"{where}: added {_show(_patch(new_ns[name]))}")
        elif name not in new_ns:
            out.append(f"{where}: removed (was {_show(_patch(old_ns[name]))})")
        else:
            _compare_settings(f"{where}.", _patch(old_ns[name]), _patch(new_ns[name]), out)

    old_sel = {_selector_name(s): s for s in old.overrides.selectors}
    new_sel = {_selector_name(s): s for s in new.overrides.selectors}
    for name in sorted(old_sel.keys() | new_sel.keys()):
        where = f"overrides.selectors[{name}]"
        if name not in old_sel:
            out.append(f"{where}: added {_show(_patch(new_sel[name].settings))}")
        elif name not in new_sel:
            out.append(f"{where}: removed (was {_show(_patch(old_sel[name].settings))})")
        else:
            _compare_settings(
                f"{where}.", _patch(old_sel[name].settings), _patch(new_sel[name].settings), out
            )
    old_order = [n for n in (_selector_name(s) for s in old.overrides.selectors) if n in new_sel]
    new_order = [n for n in (_selector_name(s) for s in new.overrides.selectors) if n in old_sel]
    if old_order != new_order:
        out.append(f"overrides.selectors: reordered ({' | '.join(new_order)})")
    if not out and old_top != new_top:  # e.g. among selectors with the same labels
        out.append("overrides.selectors: changed")
    return tuple(out)
