"""Nothing the core reads can stop it: hostile annotations and message fields.

* the annotation parsers on a table of hostile values (each found to stop the
  killer once) and on arbitrary text: total, bounded;
* properties over every message type the core folds, each field drawn from
  arbitrary text, integers and instants (and whatever pydantic lets through at
  the edge): ``evolve`` and ``decide`` never raise, no command is issued before
  its due time, and no pod whose Job or pod forbids it is ever force-deleted.
"""

from __future__ import annotations

import os
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ValidationError

from core import decide, evolve
from core.evolve import _HANDLERS
from core.state import MAX_US, MIN_US, from_us, to_us
from schemas.annotations import (
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    MAX_TIMEOUT_SECONDS,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    forbids_force_deletion,
    job_annotations,
    parse_flag,
    parse_seconds,
    parse_timestamp,
)

from .harness import NS, Harness, at, snapshot

DEEP = os.environ.get("JOBREAPER_PROPERTY_EXAMPLES")
PROPERTY = settings(
    max_examples=int(DEEP) if DEEP else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not DEEP,
    database=None,
)

HOSTILE_TEXT = [
    "²",
    "١٢٣",  # Arabic-Indic digits: str.isdigit() and int() take them
    "1h",
    "-1",
    "+5",
    " 30 ",
    "1e3",
    "0x10",
    "NaN",
    "",
    " ",
    "9" * 20,
    "9" * 5000,
    str(10**20),
    str(MAX_TIMEOUT_SECONDS + 1),
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-12-06T18:00:00",  # no zone
    "2026-12-06 18:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-12-06T24:00:00Z",
    "2026-12-06T18:00:60Z",
    "2026-12-06T18:00:00+24:00",
    "2026-12-06T18:00:00.1234567891Z",
    "20261206T180000Z",
    "1969-12-31T23:59:59Z",
    "yes",
    "TRUE\x00",
    "true" * 40,
    "\ud800",
]


# --- the parsers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-06T18:00:00Z", datetime(2026, 12, 6, 18, tzinfo=UTC)),
        (" 2026-12-06T19:00:00+01:00 ", datetime(2026, 12, 6, 18, tzinfo=UTC)),
        ("2026-12-06T18:00:00.5-00:30", datetime(2026, 12, 6, 18, 30, 0, 500000, tzinfo=UTC)),
        ("2026-12-06T18:00:00.123456789Z", datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_valid_kill_timestamps_parse_to_their_instant(value: str, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", HOSTILE_TEXT)
def test_hostile_values_are_invalid_and_parsing_never_raises(value: str) -> None:
    assert parse_timestamp(value) is None
    result = job_annotations(
        {KILL_TIMESTAMP: value, PENDING_TIMEOUT: value, RUNNING_TIMEOUT: value}
    )
    assert result.kill_at is None
    assert result.pending_timeout_s == parse_seconds(value)
    problems = {p.annotation for p in result.invalid}
    assert KILL_TIMESTAMP in problems
    if parse_seconds(value) is None:
        assert {PENDING_TIMEOUT, RUNNING_TIMEOUT} <= problems
    for problem in result.invalid:
        assert problem.annotation in problem.message()
        assert len(problem.message()) < 400


def test_seconds_take_ascii_digits_within_a_year() -> None:
    assert parse_seconds("0") == 0
    assert parse_seconds(" 30 ") == 30
    assert parse_seconds(str(MAX_TIMEOUT_SECONDS)) == MAX_TIMEOUT_SECONDS
    for bad in ("²", "١٢٣", "1h", "-1", "+5", str(MAX_TIMEOUT_SECONDS + 1), "9" * 5000):
        assert parse_seconds(bad) is None


def test_blanks_and_case_are_ascii_only_as_the_admission_policy_has_them() -> None:
    """Narrower than str.strip()/str.lower(): what CEL on the API server can match."""
    assert parse_seconds("\t30\r\n\v\f ") == 30
    assert parse_timestamp("\n2026-12-06T18:00:00Z\t") == datetime(2026, 12, 6, 18, tzinfo=UTC)
    assert parse_flag(" TRUE\n") is True
    for space in ("\u00a0", "\u3000", "\u2003", "\x1c", "\x85", "\u2028"):
        assert space.isspace()
        assert parse_seconds(f"{space}30") is None
        assert parse_timestamp(f"2026-12-06T18:00:00Z{space}") is None
        assert parse_flag(f"{space}true") is None
    assert parse_flag("fal\u017fe") is None  # long s: RE2's (?i) would take it
    assert parse_flag("FAL\u017fE") is None


def test_an_invalid_forbid_value_forbids_and_is_reported() -> None:
    assert forbids_force_deletion({FORBID_FORCE_DELETION: "TRUE"}, {}) == (True, ())
    assert forbids_force_deletion({}, {FORBID_FORCE_DELETION: "false"}) == (False, ())
    forbid, invalid = forbids_force_deletion({FORBID_FORCE_DELETION: "yes"}, {})
    assert forbid and [p.value for p in invalid] == ["yes"]
    assert job_annotations({FORBID_FORCE_DELETION: "nope"}).forbid_force_deletion


@given(
    st.dictionaries(
        st.sampled_from(
            [KILL_TIMESTAMP, PENDING_TIMEOUT, RUNNING_TIMEOUT, FORBID_FORCE_DELETION, "other"]
        ),
        st.text(),
    )
)
@PROPERTY
def test_annotation_parsing_is_total_and_bounded(annotations: dict[str, str]) -> None:
    parsed = job_annotations(annotations)
    if parsed.kill_at is not None:
        assert datetime(1970, 1, 1, tzinfo=UTC) <= parsed.kill_at
    for seconds in (parsed.pending_timeout_s, parsed.running_timeout_s):
        assert seconds is None or 0 <= seconds <= MAX_TIMEOUT_SECONDS
    for problem in parsed.invalid:
        assert annotations[problem.annotation] == problem.value


@given(
    st.datetimes(
        min_value=datetime.min,
        max_value=datetime.max,
        timezones=st.builds(
            timezone,
            st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59)),
        ),
    )
)
@PROPERTY
def test_instants_convert_totally(value: datetime) -> None:
    us = to_us(value)
    back = from_us(us)
    if MIN_US <= us <= MAX_US:
        assert back == value
    else:
        assert back in (from_us(MIN_US), from_us(MAX_US))


# --- hostile messages through evolve and decide -------------------------------------

_OFFSETS = st.builds(
    timezone, st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59))
)
_INSTANTS = st.one_of(
    st.integers(-3600, 3600).map(lambda s: at(s)),
    st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=_OFFSETS),
    st.sampled_from(
        [
            datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),
        ]
    ),
)
_NAMES = st.sampled_from([NS, "j", "j2", "job-1", "job-2", "p1", "p2", "uid-p1", "uid-p2", "n1"])
_TEXT = st.one_of(_NAMES, _NAMES, st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))
_INTS = st.one_of(
    st.integers(-3, 400),
    st.integers(),
    st.sampled_from([10**20, 2**63, -(2**63), 10**4000, -(10**4000)]),
)
_ANNOTATIONS = st.dictionaries(
    st.sampled_from([KILL_TIMESTAMP, PENDING_TIMEOUT, RUNNING_TIMEOUT, FORBID_FORCE_DELETION]),
    st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40), _INSTANTS.map(str)),
    max_size=4,
)


def _for(annotation: Any, field: str) -> st.SearchStrategy[Any]:
    """Arbitrary values for one field, by its type (the edge's pydantic validation
    sorts out what may reach the core)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _for(args[0], field)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_for(a, field) for a in args))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return _INTS
    if annotation is float:
        return st.one_of(st.floats(), st.sampled_from([0.55, 1e-300, 1.0, 0.1 + 0.2]))
    if annotation is str:
        return _TEXT
    if annotation is AwareDatetime or annotation is datetime:
        return _INSTANTS
    if origin is dict:
        return _ANNOTATIONS
    if origin is tuple:
        return st.lists(_for(args[0], field), max_size=3).map(tuple)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model(annotation)
    raise AssertionError(f"no strategy for {field}: {annotation!r}")


def _model(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    required = {
        name: _for(info.annotation, name)
        for name, info in model.model_fields.items()
        if info.is_required()
    }
    optional = {
        name: _for(info.annotation, name)
        for name, info in model.model_fields.items()
        if not info.is_required()
    }
    return st.fixed_dictionaries(required, optional=optional).map(lambda d: _validated(model, d))


def _validated(model: type[BaseModel], values: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError:
        return None  # refused at the edge: the shell dead-letters it


MESSAGES = st.one_of(*(_model(m) for m in _HANDLERS))


def _scenario() -> Harness:
    """A Job with a kill time, two running pods (one forbids force deletion), a node."""
    h = Harness()
    b = h.b
    h.feed(
        b.node(0),
        b.job(0, annotations={KILL_TIMESTAMP: "2026-01-01T00:01:00Z"}),
        b.pod(0, "p1"),
        b.pod(0, "p2", annotations={FORBID_FORCE_DELETION: "true"}),
        snapshot(1, 0, deleteKillingTasksTimeoutSeconds=10, forceDeleteTaskTimeoutSeconds=5),
    )
    return h


def _check(h: Harness, now: datetime) -> None:
    decision = decide(h.state, now)
    for cmd in decision.commands:
        assert cmd.decided_at == now
        assert cmd.due_at <= now, f"{cmd.step} issued before it was due"
        if cmd.step == "force-delete":
            pod = h.state.pods[cmd.pod_uid]
            assert not pod.forbid and not pod.gen.ann.forbid_force_deletion, (
                "forbidden pod force-deleted"
            )
    assert decision.next_due_at is None or decision.next_due_at > now or to_us(now) >= MAX_US
    h.commands.extend(decision.commands)
    h.feed(*decision.commands, *decision.kill_events)


@given(
    st.lists(
        st.tuples(st.one_of(MESSAGES, MESSAGES, st.none()), st.integers(-10, 600)),
        min_size=1,
        max_size=12,
    ),
    st.integers(600, 10 * 365 * 24 * 3600),
)
@PROPERTY
def test_the_core_never_raises_on_any_message_that_passes_the_edge(
    script: list[tuple[Any, int]], far: int
) -> None:
    """``now`` is the killer's own clock (UTC, in range), not an input from outside."""
    h = _scenario()
    for message, t in script:
        if message is not None:
            evolve(h.state, message)
        _check(h, at(t))
    _check(h, at(far))


@given(
    st.sampled_from([*HOSTILE_TEXT, "true", "TRUE", " True "]),
    st.sampled_from(["job", "pod-annotation", "pod-label"]),
)
@PROPERTY
def test_a_pod_forbidden_by_any_value_but_false_is_never_force_deleted(
    value: str, where: str
) -> None:
    """The whole ladder with the deletion stuck: the forbidden pod's force deletion
    waits for ever (an alert instead)."""
    h = Harness()
    b = h.b
    job_ann = {KILL_TIMESTAMP: "2026-01-01T00:00:10Z"}
    pod_ann: dict[str, str] = {}
    if where == "job":
        job_ann[FORBID_FORCE_DELETION] = value
    elif where == "pod-annotation":
        pod_ann[FORBID_FORCE_DELETION] = value
    h.feed(
        b.node(0),
        b.job(0, annotations=job_ann),
        b.pod(0, "p1", annotations=pod_ann),
        snapshot(1, 0, deleteKillingTasksTimeoutSeconds=5, forceDeleteTaskTimeoutSeconds=5),
    )
    labels = {FORBID_FORCE_DELETION: value} if where == "pod-label" else {}
    if labels:
        h.feed(b.pod(0, "p1").model_copy(update={"labels": labels}))
    for t in (10, 11, 16, 17):
        h.decide(t)
        for cmd in h.commands:
            if cmd.step != "force-delete":
                h.result(t, cmd.pod_name or "", cmd.step)
    # the pod is being deleted and stays so (a lost kubelet)
    h.feed(
        b.pod(17, "p1", deletion=16, annotations=pod_ann, ads=1).model_copy(
            update={"labels": labels}
        )
    )
    for t in (18, 30, 100, 10_000):
        h.decide(t)
    steps = [c.step for c in h.commands]
    assert "delete" in steps
    assert "force-delete" not in steps


def test_the_hostile_annotations_of_the_issue_do_not_stop_other_kills() -> None:
    """The four annotations x the hostile values on one Job; a second Job of the same
    partition is still killed at its time."""
    h = Harness()
    b = h.b
    h.feed(b.node(0), snapshot(1, 0))
    for i, value in enumerate(HOSTILE_TEXT):
        ann = {
            KILL_TIMESTAMP: value,
            PENDING_TIMEOUT: value,
            RUNNING_TIMEOUT: value,
            FORBID_FORCE_DELETION: value,
        }
        h.feed(b.job(0, name=f"bad{i}", uid=f"bad-{i}", annotations=ann))
        h.feed(b.pod(0, f"bad{i}-p", job=f"bad{i}", job_uid=f"bad-{i}"))
    h.feed(
        b.job(1, name="good", uid="good-1", annotations={KILL_TIMESTAMP: "2026-01-01T00:00:30Z"})
    )
    h.feed(b.pod(1, "good-p", job="good", job_uid="good-1"))
    h.decide(29)
    # nothing before its time, but its Job is told it is due (rule job.show-kill)
    assert [(c.step, c.kill_state) for c in h.commands if c.job_name == "good"] == [
        ("annotate-job", "due")
    ]
    h.decide(30)
    good = [c for c in h.commands if c.job_name == "good" and c.step != "annotate-job"]
    assert [(c.step, c.due_at) for c in good] == [
        ("fail-job", at(30)),
        ("set-active-deadline", at(30)),
    ]
    # the hostile Jobs: an invalid kill time is no kill time; only the one value that
    # is valid seconds (" 30 ") set a running timeout, and it ran out
    others = {(c.job_name, c.trigger) for c in h.commands if c.job_name != "good"}
    valid = {f"bad{i}" for i, v in enumerate(HOSTILE_TEXT) if parse_seconds(v) is not None}
    assert others == {(name, "RunningTimeout") for name in valid} and len(valid) == 1
