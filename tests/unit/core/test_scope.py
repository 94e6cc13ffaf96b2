"""Scope and shadow mode beyond the rule table: the label parser, what shadow
decisions publish, and how a live record's bytes stay as they were."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.annotations import ENFORCE, KILL_TIMESTAMP, MAX_VALUE_LENGTH, parse_enforce
from services.runtime.kill_events import describe

from .harness import Harness, iso


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("on", "on"),
        ("shadow", "shadow"),
        ("off", "off"),
        ("\tON\n", "on"),
        ("Shadow", "shadow"),
        ("", None),
        ("true", None),
        ("on,shadow", None),
        ("\u00a0on", None),  # a Unicode blank is not one of ours
        ("o" * (MAX_VALUE_LENGTH + 1), None),
        (None, None),
    ],
)
def test_the_enforce_label_parser(value: str | None, parsed: str | None) -> None:
    assert parse_enforce(value) == parsed


@given(st.text(max_size=100))
def test_the_enforce_label_parser_is_total(value: str) -> None:
    assert parse_enforce(value) in (None, "off", "shadow", "on")


def _run(enforce: str) -> Harness:
    h = Harness()
    h.feed(h.b.job(0, labels={ENFORCE: enforce}, annotations={KILL_TIMESTAMP: iso(0)}))
    h.feed(h.b.pod(0))
    h.decide(0)
    h.result(0.5, "p1", "set-active-deadline", "would-apply" if enforce == "shadow" else "applied")
    h.decide(180)
    h.feed(h.b.pod(200, change="deleted"))
    h.decide(200)
    return h


def test_shadow_publishes_what_on_does_marked_shadow_with_the_same_ids() -> None:
    live, shadow = _run("on"), _run("shadow")
    assert [c.command_id for c in shadow.commands] == [c.command_id for c in live.commands]
    steps = [c.step for c in shadow.commands]
    assert steps == ["fail-job", "set-active-deadline", "delete", "annotate-job"]  # killed
    assert all(c.shadow for c in shadow.commands)
    assert [type(e).__name__ for e in shadow.events] == [type(e).__name__ for e in live.events]
    assert all(e.shadow for e in shadow.events)  # KillStarted, KillSteps, JobKilled
    assert all(describe(e).startswith("[shadow, would-apply] ") for e in shadow.events)
    for record in (*live.commands, *live.events):
        # a live record is written byte for byte as before shadow mode (same event ids)
        assert not record.shadow and '"shadow"' not in record.model_dump_json()
        assert not describe(record).startswith("[shadow")
    for record in (*shadow.commands, *shadow.events):
        assert '"shadow":true' in record.model_dump_json()
