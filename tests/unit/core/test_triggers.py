"""The trigger table (``core.triggers.TRIGGERS``) is complete and honest.

``decide`` and ``evolve`` know a trigger only through its row, so the ways a
trigger could silently never fire are checked here, not left to review:

* a value of ``schemas.commands.Trigger`` with no row (or a row for no value);
* a due function (or reason, lift) that reads a fact of the generation its row
  does not declare: ``evolve`` would not look again when that fact changes;
* a pod trigger that would fire for a pod outside its phase (``decide`` asks a
  pod only about the triggers of its phase).
"""

from __future__ import annotations

import dataclasses
import os
import random
import typing
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from core.ladder import LADDER_FACTS
from core.settings import DEFAULTS, Effective
from core.state import FAILED, PENDING, RUNNING, SECOND, JobGen, KeyState, PodState, Request
from core.triggers import (
    JOB_FACTS,
    PENDING_POD_TRIGGERS,
    POD_FACTS,
    POD_TRIGGERS,
    PRIORITY,
    RUNNING_POD_TRIGGERS,
    TRIGGERS,
    JobTrigger,
    PodTrigger,
    StepTrigger,
)
from schemas.annotations import JobAnnotations
from schemas.commands import Trigger

DEEP = os.environ.get("JOBREAPER_PROPERTY_EXAMPLES")
WORLDS = int(DEEP) if DEEP else 1500
"""Random generations (with a key, a pod and settings) each check looks at; the
suite's are always the same (seeded); ``JOBREAPER_PROPERTY_EXAMPLES`` looks at
that many new ones."""


def test_every_trigger_of_the_schema_has_exactly_one_row_and_every_row_a_trigger() -> None:
    names = [spec.name for spec in TRIGGERS]
    assert len(names) == len(set(names)), "a trigger with two rows"
    assert set(names) == set(typing.get_args(Trigger))


def test_ties_go_to_the_row_listed_first_in_the_order_the_core_always_had() -> None:
    """The tie-break is behaviour (``trigger-tie-is-broken-by-priority`` pins one
    pair): moving a row changes it, so the order is pinned whole."""
    assert sorted(PRIORITY, key=PRIORITY.__getitem__) == [
        "Killed",
        "DeadlineExceeded",
        "JobFinished",
        "Suspended",
        "JobDeleted",
        "PendingTimeout",
        "RunningTimeout",
        "StuckTerminating",
        "NodeLost",
    ]


def test_only_step_triggers_start_no_kill() -> None:
    """``StuckTerminating`` names a force deletion taken outside any kill, ``NodeLost``
    the deletion (and its force step) of a pod on a node lost too long; every other
    trigger kills its Job and so must be a Job or pod row."""
    assert [spec.name for spec in TRIGGERS if isinstance(spec, StepTrigger)] == [
        "StuckTerminating",
        "NodeLost",
    ]


# --- the facts a row declares are the facts its functions read -----------------------

S = SECOND
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMES: tuple[int | None, ...] = (None, 0, 40 * S, 60 * S, 100 * S)
FACT_PATHS: dict[str, tuple[Any, ...]] = {
    "observed": (False, True),
    "uid": ("", "u1"),
    "created_us": TIMES,
    "deleted_us": TIMES,
    "deleting": (False, True),
    "rv": (-1, 3),
    "labels": ({}, {"team": "a"}),
    "ann.kill_at": (None, EPOCH, EPOCH + timedelta(seconds=50), EPOCH + timedelta(seconds=90)),
    "ann.pending_timeout_s": (None, 0, 10, 30),
    "ann.running_timeout_s": (None, 10, 30),
    "ann.forbid_force_deletion": (False, True),
    "ann.safe_to_force_delete": (False, True),
    "ads": (None, 0, 10, 30),
    "start_us": TIMES,
    "suspend": (False, True),
    "suspended_cond": (False, True),
    "suspended_since_us": TIMES,
    "finished_us": TIMES,
    "finished_reason": ("", "Complete", "BackoffLimitExceeded"),
    "has_active": (False, True),
}
"""Every field of a generation a trigger may read, with the values it is varied over
(few, so each check tries them all: instants around one another, both booleans)."""
BOOKKEEPING = frozenset(
    {
        "key",
        "namespace",
        "name",
        "pods",
        "alive",
        "latch",
        "fail_cmd",
        "shown",
        "show_attempt",
        "episode",
        "episodes",
        "eff",
        "eff_key",
        "timer_us",
        "dirty",
        "dirty_pods",
        "removed",
    }
)
"""The generation's own bookkeeping: never a trigger's input."""


def test_every_field_of_a_generation_is_a_fact_or_bookkeeping() -> None:
    """A new field of ``JobGen`` (or of the parsed annotations) must be listed above,
    so the checks below vary it."""
    fields = {f.name for f in dataclasses.fields(JobGen)} - {"ann"}
    assert fields == {path for path in FACT_PATHS if "." not in path} | BOOKKEEPING
    annotations = {f"ann.{f.name}" for f in dataclasses.fields(JobAnnotations)} - {"ann.invalid"}
    assert annotations == {path for path in FACT_PATHS if path.startswith("ann.")}


def test_every_declared_fact_is_a_field_of_a_generation() -> None:
    gen = JobGen("ns/j", "ns", "j", "u1")
    for path in (*JOB_FACTS, *POD_FACTS, *LADDER_FACTS):
        assert path in FACT_PATHS, path
        attrgetter(path)(gen)


def _set(gen: JobGen, path: str, value: Any) -> None:
    if path.startswith("ann."):
        gen.ann = dataclasses.replace(gen.ann, **{path[4:]: value})
    else:
        setattr(gen, path, value)


World = tuple[JobGen, KeyState, PodState, Effective]


def _worlds() -> list[World]:
    rng = random.Random(None if DEEP else 20)
    worlds = []
    for _ in range(WORLDS):
        gen = JobGen("ns/j", "ns", "j", "")
        for path, values in FACT_PATHS.items():
            _set(gen, path, rng.choice(values))
        requests = [
            Request(
                rng.choice(TIMES[1:]), rng.choice((None, gen.uid, "other")), rng.choice(TIMES[1:])
            )
            for _ in range(rng.randrange(3))
        ]
        key = KeyState("ns", "j", [gen], None, requests or None, rng.choice(TIMES))
        pod = PodState("p-uid", "p", gen)
        pod.phase = rng.choice((PENDING, RUNNING, FAILED))
        pod.seen_us, pod.created_us, pod.run_start_us = (rng.choice(TIMES) for _ in range(3))
        eff = dataclasses.replace(DEFAULTS, default_pending_timeout_us=rng.choice((0, 20 * S)))
        worlds.append((gen, key, pod, eff))
    return worlds


def _outputs(spec: JobTrigger | PodTrigger, world: World) -> tuple[object, ...]:
    """Everything a row computes from a world."""
    gen, key, pod, eff = world
    if isinstance(spec, PodTrigger):
        return (spec.due(pod, gen, eff),)
    return (
        spec.due(gen, key),
        None if spec.reason is None else spec.reason(gen),
        None if spec.lifted is None else spec.lifted(gen),
    )


def test_a_trigger_reads_no_fact_of_the_generation_its_row_does_not_declare() -> None:
    """Vary each undeclared fact alone, over all its values: nothing the row computes
    may change. (A fact read but not declared: ``evolve`` would not look again when
    it changes, and the trigger would wait for something else to wake the Job.)"""
    rows = [spec for spec in TRIGGERS if not isinstance(spec, StepTrigger)]
    applied = dict.fromkeys((spec.name for spec in rows), 0)
    for world in _worlds():
        gen = world[0]
        for spec in rows:
            expected = _outputs(spec, world)
            applied[spec.name] += expected[0] is not None
            for path, values in FACT_PATHS.items():
                if path in spec.facts:
                    continue
                was = attrgetter(path)(gen)
                for value in values:
                    _set(gen, path, value)
                    assert _outputs(spec, world) == expected, (
                        f"{spec.name} reads {path} but its row does not declare it"
                    )
                _set(gen, path, was)
    # Each trigger applied in enough worlds that its facts were really put to the test.
    assert min(applied.values()) >= WORLDS // 100, applied


def test_decide_asks_every_pod_trigger_in_exactly_one_phase() -> None:
    assert sorted(PENDING_POD_TRIGGERS + RUNNING_POD_TRIGGERS) == sorted(POD_TRIGGERS)
    assert not set(PENDING_POD_TRIGGERS) & set(RUNNING_POD_TRIGGERS)


def test_a_pod_trigger_never_fires_for_a_pod_outside_its_phase() -> None:
    """``decide`` asks a pod only about the triggers of its phase: pending until a
    container started, running from then on."""
    fired = 0
    for gen, _, pod, eff in _worlds():
        phase = "pending" if pod.run_start_us is None else "running"
        for spec in TRIGGERS:
            if isinstance(spec, PodTrigger):
                due = spec.due(pod, gen, eff)
                fired += due is not None
                if spec.phase != phase:
                    assert due is None, spec.name
    assert fired >= WORLDS // 100
