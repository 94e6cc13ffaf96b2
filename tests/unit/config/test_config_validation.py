"""Validation of configuration documents: every kind of problem, all at once, with paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.config import KillerConfig
from services.config.validation import (
    MAX_SECONDS,
    Report,
    render_path,
    suggest,
    validate_document,
    validate_text,
)


def errors(document: Any) -> list[tuple[str, str]]:
    """(path, code) of every error, for a document given as data or as JSON text."""
    text = document if isinstance(document, str) else json.dumps(document)
    report = validate_text(text)
    assert report.config is None, "an invalid document must yield no config"
    return [(e.path, e.code) for e in report.errors]


def message(document: Any, path: str) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    found = [e.message for e in validate_text(text).errors if e.path == path]
    assert len(found) == 1, found
    return found[0]


def sel(labels: Any, settings: Any = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"matchLabels": labels, "settings": settings or {"killMethod": "delete"}}
    item.update(extra)
    return item


# -- valid documents -------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"killMethod": "delete", "deleteKillingTasksTimeoutSeconds": 0},
        {"forceDeleteTaskTimeoutSeconds": MAX_SECONDS, "defaultPendingTimeoutSeconds": 0},
        {
            "overrides": {
                "namespaces": {"batch": {"deleteKillingTasksTimeoutSeconds": 60}, "a-1": {}},
                "selectors": [
                    sel({"tier": "critical"}, {"forceDeleteTaskTimeoutSeconds": 0}),
                    sel({"app.kubernetes.io/name": "etl", "empty": ""}),
                ],
            }
        },
    ],
    ids=["empty", "top-level", "bounds", "overrides"],
)
def test_valid_documents_give_the_model(document: dict[str, Any]) -> None:
    report = validate_text(json.dumps(document))
    assert report.ok and not report.errors
    assert report.config == KillerConfig.model_validate(document)


def test_the_old_alias_alone_is_accepted_with_a_warning() -> None:
    report = validate_document({"forceDeleteKillingTasksTimeoutSeconds": 30})
    assert report.ok
    assert report.config is not None and report.config.force_delete_task_timeout_seconds == 30
    assert [(w.path, w.code) for w in report.warnings] == [
        ("$.forceDeleteKillingTasksTimeoutSeconds", "deprecated")
    ]


def test_warnings_do_not_block() -> None:
    document = {
        "overrides": {
            "namespaces": {"idle": {}},
            "selectors": [sel({"a": "1"}), sel({"a": "1"}, {"killMethod": "activeDeadline"})],
        }
    }
    report = validate_document(document)
    assert report.ok
    assert sorted((w.path, w.code) for w in report.warnings) == [
        ("$.overrides.namespaces.idle", "empty"),
        ("$.overrides.selectors[1]", "duplicate_selector"),
    ]


# -- one table row per kind of error ----------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"killMethod": "delete",', [("$", "syntax")]),
        ("", [("$", "syntax")]),
        ("[1, 2]", [("$", "type")]),
        ('{"killMethod": "x", "killMethod": "delete"}', [("$.killMethod", "duplicate_key")]),
        ({"killMethod": 1}, [("$.killMethod", "type")]),
        ({"killMethod": "kill"}, [("$.killMethod", "enum")]),
        (
            {"deleteKillingTasksTimeoutSeconds": "60"},
            [("$.deleteKillingTasksTimeoutSeconds", "type")],
        ),
        (
            {"deleteKillingTasksTimeoutSeconds": 1.5},
            [("$.deleteKillingTasksTimeoutSeconds", "type")],
        ),
        (
            {"deleteKillingTasksTimeoutSeconds": True},
            [("$.deleteKillingTasksTimeoutSeconds", "type")],
        ),
        (
            {"deleteKillingTasksTimeoutSeconds": None},
            [("$.deleteKillingTasksTimeoutSeconds", "type")],
        ),
        ({"defaultPendingTimeoutSeconds": -1}, [("$.defaultPendingTimeoutSeconds", "range")]),
        (
            {"forceDeleteTaskTimeoutSeconds": MAX_SECONDS + 1},
            [("$.forceDeleteTaskTimeoutSeconds", "range")],
        ),
        (
            {"deleteKillingTaskTimeoutSeconds": 1},
            [("$.deleteKillingTaskTimeoutSeconds", "unknown_key")],
        ),
        (
            {"forceDeleteTaskTimeoutSeconds": 1, "forceDeleteKillingTasksTimeoutSeconds": 1},
            [("$.forceDeleteKillingTasksTimeoutSeconds", "alias_conflict")],
        ),
        ({"overrides": []}, [("$.overrides", "type")]),
        ({"overrides": {"namespace": {}}}, [("$.overrides.namespace", "unknown_key")]),
        (
            {"overrides": {"namespaces": {"Batch": {}}}},
            [("$.overrides.namespaces.Batch", "namespace")],
        ),
        (
            {"overrides": {"namespaces": {"x" * 64: {}}}},
            [(f"$.overrides.namespaces.{'x' * 64}", "namespace")],
        ),
        (
            {"overrides": {"namespaces": {"batch": {"overrides": {}}}}},
            [("$.overrides.namespaces.batch.overrides", "unknown_key")],
        ),
        ({"overrides": {"selectors": {}}}, [("$.overrides.selectors", "type")]),
        (
            {"overrides": {"selectors": [{"matchLabels": {"a": "b"}}]}},
            [("$.overrides.selectors[0].settings", "required")],
        ),
        (
            {"overrides": {"selectors": [sel({})]}},
            [("$.overrides.selectors[0].matchLabels", "required")],
        ),
        (
            {"overrides": {"selectors": [sel("tier=critical")]}},
            [("$.overrides.selectors[0].matchLabels", "type")],
        ),
        (
            {"overrides": {"selectors": [sel({"-bad": "x"})]}},
            [("$.overrides.selectors[0].matchLabels['-bad']", "label_key")],
        ),
        (
            {"overrides": {"selectors": [sel({"Bad.Prefix/name": "x"})]}},
            [("$.overrides.selectors[0].matchLabels['Bad.Prefix/name']", "label_key")],
        ),
        (
            {"overrides": {"selectors": [sel({"tier": "no spaces"})]}},
            [("$.overrides.selectors[0].matchLabels.tier", "label_value")],
        ),
        (
            {"overrides": {"selectors": [sel({"tier": 1})]}},
            [("$.overrides.selectors[0].matchLabels.tier", "label_value")],
        ),
        (
            {"overrides": {"selectors": [sel({"a": "b"}, matchExpressions=[])]}},
            [("$.overrides.selectors[0].matchExpressions", "unknown_key")],
        ),
    ],
)
def test_each_kind_of_error_is_found_at_its_path(
    document: Any, expected: list[tuple[str, str]]
) -> None:
    assert errors(document) == expected


def test_every_problem_is_reported_at_once() -> None:
    document = {
        "killMethod": "Delete!",
        "deleteKillingTasksTimeoutSeconds": -5,
        "forceDeleteTaskTimeoutSeconds": 10,
        "forceDeleteKillingTasksTimeoutSeconds": 10,
        "defaultPendingTimeoutSecond": 5,
        "overrides": {
            "namespaces": {
                "Bad_NS": {"killMethod": 3},
                "good": {"defaultPendingTimeoutSeconds": "x"},
            },
            "selectors": [
                sel({"tier": 7}, {"deleteKillingTasksTimeoutSeconds": 10**9}),
                {"matchLabels": {"a": "b"}, "setings": {}},
            ],
        },
    }
    found = errors(document)
    assert sorted(found) == sorted(
        [
            ("$.killMethod", "enum"),
            ("$.deleteKillingTasksTimeoutSeconds", "range"),
            ("$.forceDeleteKillingTasksTimeoutSeconds", "alias_conflict"),
            ("$.defaultPendingTimeoutSecond", "unknown_key"),
            ("$.overrides.namespaces.Bad_NS", "namespace"),
            ("$.overrides.namespaces.Bad_NS.killMethod", "type"),
            ("$.overrides.namespaces.good.defaultPendingTimeoutSeconds", "type"),
            ("$.overrides.selectors[0].matchLabels.tier", "label_value"),
            ("$.overrides.selectors[0].settings.deleteKillingTasksTimeoutSeconds", "range"),
            ("$.overrides.selectors[1].setings", "unknown_key"),
            ("$.overrides.selectors[1].settings", "required"),
        ]
    )
    summary = validate_document(document).summary(limit=3)
    assert summary.startswith("11 problems: ") and summary.endswith("and 8 more")


@pytest.mark.parametrize(
    ("document", "path", "hint"),
    [
        (
            {"deleteKillingTaskTimeoutSeconds": 1},
            "$.deleteKillingTaskTimeoutSeconds",
            '"deleteKillingTasksTimeoutSeconds"',
        ),
        ({"kill_method": "delete"}, "$.kill_method", '"killMethod"'),
        ({"KILLMETHOD": "delete"}, "$.KILLMETHOD", '"killMethod"'),
        ({"killMethod": "ActiveDeadline"}, "$.killMethod", '"activeDeadline"'),
        ({"killMethod": "deadline"}, "$.killMethod", '"activeDeadline"'),
        ({"overrides": {"selector": []}}, "$.overrides.selector", '"selectors"'),
        (
            {"overrides": {"selectors": [sel({"a": "b"}, {"forceDeleteTimeoutSeconds": 1})]}},
            "$.overrides.selectors[0].settings.forceDeleteTimeoutSeconds",
            '"forceDeleteTaskTimeoutSeconds"',
        ),
    ],
)
def test_did_you_mean(document: Any, path: str, hint: str) -> None:
    assert f"did you mean {hint}?" in message(document, path)


def test_an_unknown_key_far_from_any_lists_the_allowed_ones() -> None:
    text = message({"zzz": 1}, "$.zzz")
    assert "did you mean" not in text
    assert "expected one of killMethod, enforce, deleteKillingTasksTimeoutSeconds" in text


def test_messages_say_how_to_fix() -> None:
    assert "without quotes: 60" in message(
        {"defaultPendingTimeoutSeconds": "60"}, "$.defaultPendingTimeoutSeconds"
    )
    assert "milliseconds" in message(
        {"defaultPendingTimeoutSeconds": 900_000}, "$.defaultPendingTimeoutSeconds"
    )
    assert "under overrides" in message({"namespaces": {}}, "$.namespaces")
    assert "under settings" in message(
        {"overrides": {"selectors": [sel({"a": "b"}, killMethod="delete")]}},
        "$.overrides.selectors[0].killMethod",
    )
    assert "line 1 column" in message('{"a": }', "$")


def test_paths_quote_keys_that_are_not_identifiers() -> None:
    assert render_path([]) == "$"
    assert render_path(["overrides", "selectors", 0, "matchLabels", "app.k8s.io/x"]) == (
        "$.overrides.selectors[0].matchLabels['app.k8s.io/x']"
    )
    assert render_path(["a-b", "it's"]) == "$['a-b']['it\\'s']"


def test_suggest_ignores_case_and_separators_and_gives_up_when_far() -> None:
    assert suggest("kill-method", ["killMethod", "overrides"]) == "killMethod"
    assert suggest("overides", ["killMethod", "overrides"]) == "overrides"
    assert suggest("qqq", ["killMethod", "overrides"]) is None


def test_a_rejected_report_has_no_config_and_a_one_line_summary() -> None:
    report = validate_text('{"killMethod": 1}')
    assert isinstance(report, Report) and not report.ok and report.config is None
    assert (
        report.summary()
        == '1 problem: $.killMethod: must be "activeDeadline" or "delete", got a number'
    )


def test_enforce_is_a_setting_everywhere_a_setting_goes() -> None:
    """The shipped configs say ``enforce`` explicitly: the config service must accept
    them (it refused the key while only the model knew it)."""
    document = {
        "enforce": "off",
        "overrides": {
            "namespaces": {"batch": {"enforce": "on"}},
            "selectors": [{"matchLabels": {"tier": "x"}, "settings": {"enforce": "shadow"}}],
        },
    }
    report = validate_text(json.dumps(document))
    assert report.ok and not report.errors, report.errors
    assert report.config == KillerConfig.model_validate(document)
    bad = validate_text(json.dumps({"enforce": "shadw"}))
    assert [(e.path, e.code) for e in bad.errors] == [("$.enforce", "enum")]
    assert 'did you mean "shadow"' in bad.errors[0].message


@pytest.mark.parametrize("name", ["deploy/compose/config.json"])
def test_the_shipped_config_is_valid(name: str) -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / name).read_text()
    report = validate_text(text)
    assert report.ok and not report.errors, report.errors


def test_force_deletion_keys_policy_everywhere_the_cluster_wide_ones_only_at_the_top() -> None:
    """Issue #21: ``forceDeletePolicy`` is a setting (top level and overrides); the fence
    time and the rate limit are cluster-wide, refused in an override with a hint."""
    document = {
        "forceDeletePolicy": "whenFenced",
        "fenceUnreachableAfterSeconds": 600,
        "maxForceDeletionsPerSecondPerPartition": 0,
        "overrides": {
            "namespaces": {"batch": {"forceDeletePolicy": "afterTimeout"}},
            "selectors": [{"matchLabels": {"t": "x"}, "settings": {"forceDeletePolicy": "never"}}],
        },
    }
    report = validate_text(json.dumps(document))
    assert report.ok and not report.errors, report.errors
    assert report.config == KillerConfig.model_validate(document)
    assert errors({"forceDeletePolicy": "whenfenced"}) == [("$.forceDeletePolicy", "enum")]
    assert 'did you mean "whenFenced"' in message(
        {"forceDeletePolicy": "whenfenced"}, "$.forceDeletePolicy"
    )
    assert errors({"maxForceDeletionsPerSecondPerPartition": -1}) == [
        ("$.maxForceDeletionsPerSecondPerPartition", "range")
    ]
    assert errors({"maxForceDeletionsPerSecondPerPartition": "5"}) == [
        ("$.maxForceDeletionsPerSecondPerPartition", "type")
    ]
    assert errors({"fenceUnreachableAfterSeconds": MAX_SECONDS + 1}) == [
        ("$.fenceUnreachableAfterSeconds", "range")
    ]
    in_override = {"overrides": {"namespaces": {"b": {"fenceUnreachableAfterSeconds": 5}}}}
    assert errors(in_override) == [
        ("$.overrides.namespaces.b.fenceUnreachableAfterSeconds", "unknown_key")
    ]
    assert "cluster-wide" in message(
        in_override, "$.overrides.namespaces.b.fenceUnreachableAfterSeconds"
    )
