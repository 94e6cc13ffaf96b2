"""Diff, digest, If-Match and the version bump (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.config import ConfigSnapshot, KillerConfig
from services.config.diff import SETTING_ORDER, _all_keys, canonical, diff, digest
from services.config.versioning import (
    ANY,
    BadIfMatch,
    Head,
    make_snapshot,
    parse_if_match,
    plan,
)

AT = datetime(2026, 3, 1, tzinfo=UTC)


def cfg(**data: Any) -> KillerConfig:
    return KillerConfig.model_validate(data)


def snap(version: int, config: KillerConfig | None = None) -> ConfigSnapshot:
    return ConfigSnapshot(version=version, config=config or KillerConfig(), changed_at=AT)


# -- diff -----------------------------------------------------------------------------


def test_equal_configs_have_no_diff_and_the_same_digest() -> None:
    a = cfg(forceDeleteKillingTasksTimeoutSeconds=60)  # the old name ...
    b = cfg(forceDeleteTaskTimeoutSeconds=60)  # ... means the same
    assert diff(a, b) == ()
    assert digest(a) == digest(b)
    assert canonical(a)["forceDeleteTaskTimeoutSeconds"] == 60


def test_top_level_changes_show_old_and_new_values() -> None:
    assert diff(KillerConfig(), cfg(killMethod="delete", deleteKillingTasksTimeoutSeconds=60)) == (
        "killMethod: activeDeadline -> delete",
        "deleteKillingTasksTimeoutSeconds: 180 -> 60",
    )


def test_overrides_added_removed_and_changed_key_by_key() -> None:
    old = cfg(
        overrides={
            "namespaces": {"a": {"killMethod": "delete"}, "b": {"defaultPendingTimeoutSeconds": 5}},
            "selectors": [{"matchLabels": {"t": "x"}, "settings": {"killMethod": "delete"}}],
        }
    )
    new = cfg(
        overrides={
            "namespaces": {"a": {"deleteKillingTasksTimeoutSeconds": 1}, "c": {}},
            "selectors": [
                {"matchLabels": {"t": "x"}, "settings": {"killMethod": "activeDeadline"}},
                {"matchLabels": {"u": "y", "a": "b"}, "settings": {"killMethod": "delete"}},
            ],
        }
    )
    assert diff(old, new) == (
        "overrides.namespaces.a.killMethod: delete -> unset",
        "overrides.namespaces.a.deleteKillingTasksTimeoutSeconds: unset -> 1",
        'overrides.namespaces.b: removed (was {"defaultPendingTimeoutSeconds": 5})',
        "overrides.namespaces.c: added {}",
        'overrides.selectors[a=b,u=y]: added {"killMethod": "delete"}',
        "overrides.selectors[t=x].killMethod: delete -> activeDeadline",
    )
    assert digest(old) != digest(new)


def test_reordering_selectors_is_a_change() -> None:
    one = {"matchLabels": {"a": "1"}, "settings": {"killMethod": "delete"}}
    two = {"matchLabels": {"b": "2"}, "settings": {"killMethod": "activeDeadline"}}
    old, new = cfg(overrides={"selectors": [one, two]}), cfg(overrides={"selectors": [two, one]})
    assert diff(old, new) == ("overrides.selectors: reordered (b=2 | a=1)",)
    assert digest(old) != digest(new)


# -- If-Match -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (None, None),
        ("", None),
        ("*", ANY),
        ('"7"', frozenset({7})),
        ('W/"7"', frozenset({7})),
        ("7", frozenset({7})),
        ('"v7"', frozenset({7})),
        ('"6", "7"', frozenset({6, 7})),
    ],
)
def test_if_match_forms(header: str | None, parsed: object) -> None:
    assert parse_if_match(header) == parsed


@pytest.mark.parametrize("header", ['"latest"', '"-1"', '"7", x'])
def test_if_match_that_names_no_version_is_an_error(header: str) -> None:
    with pytest.raises(BadIfMatch, match="names no version"):
        parse_if_match(header)


# -- the version bump ---------------------------------------------------------------------


def test_the_first_version_is_one_and_diffs_against_the_defaults() -> None:
    head = Head.of(None)
    assert (head.version, head.etag) == (0, '"0"')
    decided = plan(head, cfg(defaultPendingTimeoutSeconds=60))
    assert (decided.action, decided.version) == ("publish", 1)
    assert decided.diff == ("defaultPendingTimeoutSeconds: 900 -> 60",)


def test_defaults_against_an_empty_topic_publish_nothing() -> None:
    assert plan(Head.of(None), KillerConfig()).action == "unchanged"


def test_next_version_is_head_plus_one_and_the_same_content_is_unchanged() -> None:
    current = cfg(killMethod="delete")
    head = Head.of(snap(41, current))
    assert plan(head, cfg(killMethod="delete")) == plan(head, current)
    assert plan(head, current).action == "unchanged" and plan(head, current).version == 41
    changed = plan(head, cfg(killMethod="activeDeadline"))
    assert (changed.action, changed.version, changed.digest) == (
        "publish",
        42,
        digest(KillerConfig()),
    )


def test_a_stale_if_match_is_refused_before_anything_else() -> None:
    head = Head.of(snap(5, cfg(killMethod="delete")))
    assert plan(head, KillerConfig(), frozenset({4})).action == "stale"
    assert plan(head, cfg(killMethod="delete"), frozenset({4})).action == "stale"
    assert plan(head, KillerConfig(), frozenset({4, 5})).action == "publish"
    assert plan(head, KillerConfig(), ANY).action == "publish"


def test_the_head_only_moves_forward() -> None:
    head = Head.of(snap(3, cfg(killMethod="delete")))
    assert head.fold(snap(2)) is head
    assert head.fold(snap(3)) is head  # the same version again (compaction, replay)
    assert head.fold(snap(4)).version == 4


def test_the_digest_is_recomputed_not_trusted_from_the_record() -> None:
    record = ConfigSnapshot(version=1, config=cfg(killMethod="delete"), changed_at=AT, digest="")
    assert Head.of(record).digest == digest(cfg(killMethod="delete"))


def test_a_snapshot_carries_version_author_source_diff_and_digest() -> None:
    new = cfg(deleteKillingTasksTimeoutSeconds=0)
    decided = plan(Head.of(snap(1)), new)
    made = make_snapshot(decided, new, author="alice", source="http:10.0.0.1", at=AT)
    assert (made.version, made.author, made.source, made.changed_at) == (
        2,
        "alice",
        "http:10.0.0.1",
        AT,
    )
    assert made.diff == ("deleteKillingTasksTimeoutSeconds: 180 -> 0",)
    assert made.digest == digest(new)
    with pytest.raises(ValueError, match="nothing to publish"):
        make_snapshot(plan(Head.of(snap(1)), KillerConfig()), new, author="", source="", at=AT)


def test_the_force_deletion_keys_show_in_the_diff() -> None:
    old = KillerConfig()
    new = KillerConfig.model_validate(
        {
            "forceDeletePolicy": "whenFenced",
            "maxForceDeletionsPerSecondPerPartition": 5,
            "overrides": {"namespaces": {"b": {"forceDeletePolicy": "never"}}},
        }
    )
    assert diff(old, new) == (
        "forceDeletePolicy: afterTimeout -> whenFenced",
        "maxForceDeletionsPerSecondPerPartition: 20 -> 5",
        'overrides.namespaces.b: added {"forceDeletePolicy": "never"}',
    )


def test_every_key_shows_in_the_diff_scope_too() -> None:
    """A key missing from the diff's order is a change nobody sees (``enforce`` was)."""
    assert _all_keys() == set(SETTING_ORDER)
    new = KillerConfig.model_validate(
        {"enforce": "shadow", "overrides": {"namespaces": {"kube-system": {"enforce": "off"}}}}
    )
    assert diff(KillerConfig(), new) == (
        "enforce: off -> shadow",
        'overrides.namespaces.kube-system: added {"enforce": "off"}',
    )
    pinned = KillerConfig.model_validate(
        {"enforce": "shadow", "overrides": {"namespaces": {"kube-system": {"enforce": "on"}}}}
    )
    assert diff(new, pinned) == ("overrides.namespaces.kube-system.enforce: off -> on",)
