"""The core's API contract: command ids, the clock as an input, what-if config,
and config model validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core import command_id, decide
from schemas.annotations import KILL_TIMESTAMP
from schemas.config import KillerConfig, KillerSettings

from .harness import Harness, at, iso, snapshot


def test_command_ids_are_derived_and_distinct_per_attempt() -> None:
    first = command_id("job", "pod", "delete", 1)
    assert first == command_id("job", "pod", "delete", 1)
    assert len(first) == 32 and int(first, 16) >= 0
    others = {
        command_id("job", "pod", "delete", 2),
        command_id("job", "pod", "force-delete", 1),
        command_id("job", "pod2", "delete", 1),
        command_id("job2", "pod", "delete", 1),
        command_id(None, "pod", "delete", 1),
    }
    assert first not in others and len(others) == 5


def test_decide_takes_a_naive_now_as_utc() -> None:
    """Total: it never raises on what it is fed (it used to refuse a naive ``now``)."""
    h = Harness()
    h.feed(h.b.job(0, annotations={KILL_TIMESTAMP: iso(100)}), h.b.pod(0))
    naive = decide(h.state, datetime(2026, 1, 1, 0, 1, 40))
    when = datetime(2026, 1, 1, 0, 1, 40, tzinfo=UTC)
    assert [(c.step, c.decided_at) for c in naive.commands] == [
        ("fail-job", when),
        ("set-active-deadline", when),
    ]


def test_decide_with_nothing_to_do_is_cheap_and_stable() -> None:
    h = Harness()
    h.feed(h.b.job(0, annotations={KILL_TIMESTAMP: iso(100)}), h.b.pod(0))
    first = h.decide(1)
    assert first.next_due_at == at(100)
    assert not h.state.dirty
    assert decide(h.state, at(2)) is decide(h.state, at(3))  # shared empty decision


def test_what_if_config_is_used_instead_of_the_folded_one() -> None:
    h = Harness()
    h.feed(snapshot(3), h.b.job(0, annotations={KILL_TIMESTAMP: iso(0)}), h.b.pod(0))
    what_if = snapshot(99, deleteKillingTasksTimeoutSeconds=0)
    d = decide(h.state, at(1), what_if)
    assert [(c.step, c.config_version) for c in d.commands] == [("fail-job", 99), ("delete", 99)]


def test_config_rejects_both_force_delete_names() -> None:
    with pytest.raises(ValidationError, match="not both"):
        KillerConfig.model_validate(
            {"forceDeleteTaskTimeoutSeconds": 1, "forceDeleteKillingTasksTimeoutSeconds": 2}
        )


@pytest.mark.parametrize(
    "body",
    [
        {"deleteKillingTasksTimeoutSeconds": -1},
        {"deleteKillingTasksTimeoutSeconds": "60"},
        {"killMethod": "shoot"},
        {"unknownKey": 1},
        {"overrides": {"namespaces": {"a": {"nope": 1}}}},
        {"overrides": {"selectors": [{"matchLabels": {}, "settings": {}}]}},
    ],
)
def test_config_rejects_bad_bodies(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        KillerConfig.model_validate(body)


def test_config_defaults_and_old_alias() -> None:
    assert KillerSettings() == KillerSettings.model_validate(
        {
            "killMethod": "activeDeadline",
            "deleteKillingTasksTimeoutSeconds": 180,
            "forceDeleteTaskTimeoutSeconds": 900,
            "defaultPendingTimeoutSeconds": 900,
        }
    )
    old = KillerConfig.model_validate({"forceDeleteKillingTasksTimeoutSeconds": 0})
    assert old.force_delete_task_timeout_seconds == 0
    assert old.model_dump(by_alias=True)["forceDeleteTaskTimeoutSeconds"] == 0


def test_config_resolution_most_specific_wins() -> None:
    config = KillerConfig.model_validate(
        {
            "deleteKillingTasksTimeoutSeconds": 180,
            "overrides": {
                "namespaces": {
                    "ns": {"deleteKillingTasksTimeoutSeconds": 60, "killMethod": "delete"}
                },
                "selectors": [
                    {
                        "matchLabels": {"a": "1", "b": "2"},
                        "settings": {"deleteKillingTasksTimeoutSeconds": 5},
                    },
                    {
                        "matchLabels": {"a": "1"},
                        "settings": {"deleteKillingTasksTimeoutSeconds": 30},
                    },
                ],
            },
        }
    )
    assert config.resolve("other", {}).delete_killing_tasks_timeout_seconds == 180
    ns = config.resolve("ns", {})
    assert (ns.delete_killing_tasks_timeout_seconds, ns.kill_method) == (60, "delete")
    assert config.resolve("ns", {"a": "1"}).delete_killing_tasks_timeout_seconds == 30
    # the two-label selector is more specific than the one-label one, whatever the order
    both = config.resolve("ns", {"a": "1", "b": "2"})
    assert (both.delete_killing_tasks_timeout_seconds, both.kill_method) == (5, "delete")


def test_a_pickled_state_decides_exactly_like_the_original() -> None:
    """The runtime snapshots the state: a restored copy must go on identically."""
    import pickle

    from .sim import make_sim

    def run(restore_at: int | None) -> list[str]:
        sim = make_sim([(False, [(False, None, 0, False), (True, None, 1, True)])])
        sim.start()
        script = [("kill", 0, 10.0), ("lose", 1), ("advance", 30.0), ("advance", 1000.0)]
        for i, action in enumerate(script):
            if i == restore_at:
                sim.state = pickle.loads(pickle.dumps(sim.state))
            sim.act(action)
        sim.advance(5000)
        return [m.model_dump_json() for m in [*sim.commands, *sim.events]]

    baseline = run(None)
    assert baseline
    for i in range(4):
        assert run(i) == baseline


def test_a_command_carries_the_pods_newest_resource_version() -> None:
    # The executor writes with it as the precondition, without reading first.
    h = Harness()
    h.feed(h.b.job(0, annotations={KILL_TIMESTAMP: iso(5)}), h.b.pod(0, rv="40"))
    h.feed(h.b.pod(1, rv="41"), h.b.pod(2, rv="39"))  # the last one is stale: ignored
    fail_job, command = h.decide(5).commands
    assert (fail_job.step, fail_job.pod_resource_version) == ("fail-job", None)
    assert (command.step, command.pod_resource_version) == ("set-active-deadline", "41")
    # Deletions are read first: a pod that outlived its deadline, or sits on a lost
    # node, changes in ways the killer does not see.
    (later,) = h.decide(5 + 3600).commands
    assert (later.step, later.pod_resource_version) == ("delete", None)


def test_a_force_deleted_pod_is_done_at_the_earliest_evidence_whatever_the_fold_order() -> None:
    """Found by the crash tests' replay (CI): the force deletion's result and the
    watcher's deletion event come on two topics; the first folded used to set when
    the pod was done, so a replay folding them the other way round wrote another
    ``JobKilled.killed_at``."""
    h = Harness()
    b = h.b
    h.feed(b.node(0), b.job(0, annotations={KILL_TIMESTAMP: iso(0)}), b.pod(0))
    h.feed(snapshot(1, 0, deleteKillingTasksTimeoutSeconds=0, forceDeleteTaskTimeoutSeconds=5))
    h.decide(0)
    h.result(0.1, "p1", "delete")
    h.feed(b.pod(0.2, deletion=0.2))
    h.decide(5.2)
    result = h.result(5.25, "p1", "force-delete")
    before = h.log[:-1]  # everything but the force deletion's result
    gone = b.pod(5.3, change="deleted", deletion=0.2)
    killed = []
    for last_two in ((result, gone), (gone, result)):
        replay = Harness()
        replay.feed(*before, *last_two)
        replay.decide(6)
        killed.append([e.killed_at for e in replay.killed()])
    assert killed == [[at(5.25)], [at(5.25)]]
