"""The killer's shell on an in-memory Kafka (fakes.py): a partition's life from
taking to release, what it does with what it cannot fold, failed decisions and
transactions, fencing, freezing for a snapshot, and where the crash points fire."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from core import KillerState
from schemas import topics as t
from schemas.commands import CommandIssued
from schemas.decisions import DecisionRecorded
from schemas.observations import PodObserved
from services.killer import committing, folding, service, snapshotting
from services.killer.partition import Partition, Phase
from services.killer.service import Killer
from tests.unit.core.harness import Builder, request, snapshot

from .fakes import NAMES, T0, FakeKafka, FakeTime, eventually, killer, running

Transitions = list[tuple[int, Phase, Phase]]


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> Transitions:
    """Every transition any partition makes, in order: (number, from, to)."""
    seen: Transitions = []
    real = Partition.enter

    def enter(self: Partition, phase: Phase) -> bool:
        before = self.phase
        entered = real(self, phase)
        if entered:
            seen.append((self.number, before, phase))
        return entered

    monkeypatch.setattr(Partition, "enter", enter)
    return seen


def path(seen: Transitions, number: int) -> list[Phase]:
    """The phases partition ``number`` went through, from its first."""
    moves = [(a, b) for n, a, b in seen if n == number]
    return [moves[0][0], *(b for _, b in moves)] if moves else []


def job(kafka: FakeKafka, name: str, partition: int, *, pods: int = 1) -> None:
    """A Job with running pods, observed on ``partition``."""
    b = Builder()
    kafka.publish(b.job(0, name=name, uid=f"uid-{name}"), partition)
    for k in range(pods):
        kafka.publish(b.pod(1, name=f"{name}-{k}", job=name, job_uid=f"uid-{name}"), partition)


def kill(kafka: FakeKafka, name: str, partition: int) -> None:
    kafka.publish(request(3, job=name, rid=f"r-{name}"), partition)


def commands(kafka: FakeKafka, partition: int | None = None) -> list[CommandIssued]:
    return [m for m in kafka.committed(t.KILL_COMMANDS, partition) if isinstance(m, CommandIssued)]


def jobs(k: Killer, number: int) -> set[str]:
    """The Jobs (of :func:`job`, by their pods' names) partition ``number`` knows."""
    return {pod.name.rsplit("-", 1)[0] for pod in k.partitions[number].state.pods.values()}


def ready(k: Killer) -> bool:
    return k.readiness()[0]


# -- a partition's life ---------------------------------------------------------------


async def test_a_taken_partition_fences_rebuilds_to_its_end_offsets_then_decides(
    transitions: Transitions,
) -> None:
    kafka = FakeKafka()
    for j in range(5):  # 15 records: several fetches (fakes.FakeConsumer.BATCH)
        job(kafka, f"j{j}", 0, pods=2)
    kafka.producer_gate = asyncio.Event()
    k = killer(kafka)
    async with running(k) as task:
        consumer = await kafka.subscribed()
        taking = asyncio.create_task(kafka.rebalance(consumer, {0}))
        await eventually("taking", lambda: 0 in k.partitions, task=task)
        assert k.partitions[0].phase is Phase.TAKING
        await asyncio.sleep(0.05)
        assert k.partitions[0].phase is Phase.TAKING, "waits for the producer (fencing)"
        assert not ready(k)
        kafka.held = {0}  # stop it from catching up at once
        kafka.producer_gate.set()
        await taking
        await eventually("rebuilding", lambda: k.partitions[0].phase is Phase.CATCHING_UP)
        assert k.readiness() == (False, "rebuilding partitions [0]")
        objects = TopicPartition(NAMES(t.K8S_OBJECTS), 0)
        assert k.partitions[0].ends[objects] == 15
        kafka.held = set()
        await eventually("caught up", lambda: ready(k), task=task)
    assert path(transitions, 0) == [
        Phase.TAKING,
        Phase.STALE,
        Phase.REBUILDING,
        Phase.CATCHING_UP,
        Phase.DECIDING,
        Phase.RELEASED,
    ]
    p = k.partitions.get(0)
    assert p is None  # released at stop
    assert kafka.producers[0].stopped


async def test_a_partition_caught_up_has_folded_everything_before_its_end_offsets() -> None:
    kafka = FakeKafka()
    for j in range(6):
        job(kafka, f"j{j}", 1)
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {1})
        await eventually("ready", lambda: ready(k), task=task)
        assert jobs(k, 1) == {f"j{j}" for j in range(6)}
        positions = k.partitions[1].positions
        assert positions[(t.K8S_OBJECTS, 1)] == 12
        job(kafka, "later", 1)  # folded as it comes, deciding all along
        await eventually("the later Job", lambda: "later" in jobs(k, 1), task=task)
        assert ready(k)


async def test_an_empty_partition_decides_at_once(transitions: Transitions) -> None:
    kafka = FakeKafka()
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {2})
        await eventually("ready", lambda: ready(k), task=task)
    assert path(transitions, 2)[:4] == [
        Phase.TAKING,
        Phase.STALE,
        Phase.REBUILDING,
        Phase.DECIDING,
    ]


async def test_ready_only_once_every_taken_partition_is_caught_up() -> None:
    kafka = FakeKafka()
    for n in range(3):
        job(kafka, f"j{n}", n, pods=3)
    kafka.held = {2}
    k = killer(kafka)
    assert k.readiness() == (False, "reading nodes and config")
    async with running(k) as task:
        consumer = await kafka.subscribed()
        assert k.readiness() == (False, "waiting for partitions")
        await kafka.rebalance(consumer, {0, 1, 2})
        await eventually(
            "0 and 1 deciding",
            lambda: all(k.partitions[n].phase is Phase.DECIDING for n in (0, 1)),
            task=task,
        )
        await asyncio.sleep(0.1)
        assert k.readiness() == (False, "rebuilding partitions [2]")
        kafka.held = set()
        await eventually("ready", lambda: ready(k), task=task)
        assert k.readiness() == (True, "deciding for partitions [0, 1, 2]")


async def test_a_partition_revoked_mid_rebuild_is_released_and_never_sought(
    transitions: Transitions,
) -> None:
    kafka = FakeKafka()
    job(kafka, "j", 0)
    kafka.end_offsets_gate = asyncio.Event()
    k = killer(kafka)
    async with running(k) as task:
        consumer = await kafka.subscribed()
        taking = asyncio.create_task(kafka.rebalance(consumer, {0}))
        await eventually("rebuilding", lambda: path(transitions, 0)[-1:] == [Phase.REBUILDING])
        # The group moves partition 0 away while its end offsets are being read.
        await k.release({0})
        consumer.assigned = set()
        kafka.end_offsets_gate.set()
        await taking
        await asyncio.sleep(0.1)
        assert not task.done()
        assert 0 not in k.partitions
        assert kafka.illegal_seeks == [], "sought partitions it no longer owns"
    assert path(transitions, 0) == [Phase.TAKING, Phase.STALE, Phase.REBUILDING, Phase.RELEASED]
    assert kafka.producers[0].stopped


async def test_a_partition_revoked_while_its_producer_starts_stops_that_producer() -> None:
    kafka = FakeKafka()
    kafka.producer_gate = asyncio.Event()
    k = killer(kafka)
    async with running(k) as task:
        consumer = await kafka.subscribed()
        taking = asyncio.create_task(kafka.rebalance(consumer, {0}))
        await eventually("taking", lambda: 0 in k.partitions, task=task)
        await k.release({0})
        assert not kafka.producers[0].stopped, "release leaves a starting producer alone"
        kafka.producer_gate.set()
        await taking
        assert kafka.producers[0].stopped, "the take stops it once started"
        assert 0 not in k.partitions
        assert kafka.producers[0].txn is None


async def test_a_rebuild_kafka_does_not_answer_is_retried_by_the_loop(
    transitions: Transitions,
) -> None:
    kafka = FakeKafka()
    job(kafka, "j", 0)
    kafka.fail_end_offsets = 3
    k = killer(kafka)
    with structlog.testing.capture_logs() as logs:
        async with running(k) as task:
            await kafka.rebalance(await kafka.subscribed(), {0})
            await eventually("ready", lambda: ready(k), task=task)
            assert jobs(k, 0) == {"j"}
    deferred = [e for e in logs if e["event"] == "killer.rebuild_deferred"]
    assert len(deferred) == 3
    assert path(transitions, 0)[:8] == [
        Phase.TAKING,
        Phase.STALE,
        Phase.REBUILDING,
        Phase.STALE,
        Phase.REBUILDING,
        Phase.STALE,
        Phase.REBUILDING,
        Phase.STALE,
    ]


async def test_a_producer_start_that_fails_is_retried() -> None:
    kafka = FakeKafka()
    kafka.fail_producer_starts = 1
    k = killer(kafka)
    with structlog.testing.capture_logs() as logs:
        async with running(k) as task:
            await kafka.rebalance(await kafka.subscribed(), {0})
            await eventually("ready", lambda: ready(k), task=task)
    assert [e["event"] for e in logs].count("killer.producer_start_failed") == 1
    assert kafka.producers[0].stopped, "the failed producer is closed"
    assert kafka.producers[1].epoch == 1


# -- deciding -------------------------------------------------------------------------


async def test_a_kill_is_decided_once_in_one_transaction_with_its_decision_record() -> None:
    kafka = FakeKafka()
    job(kafka, "j", 1)
    kill(kafka, "j", 1)
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {1})
        await eventually("the command", lambda: commands(kafka, 1), task=task)
        await asyncio.sleep(0.2)  # folding its own output back decides nothing more
    fail_job, command = commands(kafka, 1)
    assert (fail_job.step, fail_job.pod_name) == ("fail-job", None)
    assert (command.step, command.pod_name) == ("set-active-deadline", "j-0")
    (recorded,) = kafka.committed(t.KILL_DECISIONS, 1)
    assert isinstance(recorded, DecisionRecorded)
    assert recorded.command_ids == (fail_job.command_id, command.command_id)
    inputs = {(i.topic, i.partition): i.offset for i in recorded.inputs}
    assert inputs[(t.K8S_OBJECTS, 1)] == 2 and inputs[(t.KILL_REQUESTS, 1)] == 1
    states = {e.txn.state for e in kafka.log(_tp(t.KILL_COMMANDS, 1)) if e.txn is not None}
    assert states == {"committed"}


async def test_decide_failure_holds_the_partition_while_the_others_decide(
    monkeypatch: pytest.MonkeyPatch, transitions: Transitions
) -> None:
    kafka = FakeKafka()
    job(kafka, "boom", 0)
    job(kafka, "fine", 1)
    calls: list[int] = []
    real = service.decide

    def buggy(state: KillerState, now: Any) -> Any:
        if any(pod.name.startswith("boom-") for pod in state.pods.values()):
            calls.append(len(calls))
            raise ZeroDivisionError("a simulated core bug")
        return real(state, now)

    monkeypatch.setattr(service, "decide", buggy)
    k = killer(kafka, decide_failure_hold_s=0.8)
    with structlog.testing.capture_logs() as logs:
        async with running(k) as task:
            await kafka.rebalance(await kafka.subscribed(), {0, 1})
            await eventually("decide raised", lambda: calls, task=task)
            kill(kafka, "boom", 0)
            kill(kafka, "fine", 1)
            await eventually("the other partition decides", lambda: commands(kafka, 1))
            assert len(calls) == 1, "held: not decided again before the hold ends"
            p0 = path(transitions, 0)
            assert p0[p0.index(Phase.DECIDING) :][:3] == [
                Phase.DECIDING,
                Phase.STALE,
                Phase.REBUILDING,
            ], "rebuilt: decide may have left the state half changed"
            await eventually("decided again after the hold", lambda: len(calls) >= 2)
            monkeypatch.setattr(service, "decide", real)
            await eventually("partition 0 decides", lambda: commands(kafka, 0), task=task)
    assert [e["event"] for e in logs].count("killer.decide_failed") >= 2
    assert k.registry.get_sample_value(
        "jobreaper_killer_core_errors_total", {"function": "decide"}
    ) == len(calls)


async def test_a_due_timer_not_decided_shows_as_overdue_until_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``jobreaper_killer_decision_overdue_seconds``: 0 while the next timer is ahead,
    growing while a held partition does not decide it, 0 again once decided."""
    kafka = FakeKafka()
    job(kafka, "slow", 0)
    clock = FakeTime(T0 + timedelta(seconds=10))
    k = killer(kafka, time=clock, decide_failure_hold_s=0.3, max_poll_wait_s=0.05)

    def overdue() -> float | None:
        return k.registry.get_sample_value("jobreaper_killer_decision_overdue_seconds")

    real = service.decide
    raised: list[int] = []

    def buggy(state: KillerState, now: Any) -> Any:
        raised.append(1)
        raise ZeroDivisionError("a simulated core bug")

    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {0})
        kill(kafka, "slow", 0)
        await eventually("the first step", lambda: commands(kafka, 0), task=task)
        next_due = k.partitions[0].next_due
        assert next_due is not None, "the ladder's next step has a timer"
        assert overdue() == 0.0
        monkeypatch.setattr(service, "decide", buggy)
        clock.now = next_due + timedelta(seconds=5)
        await eventually("decide raised", lambda: raised, task=task)
        assert overdue() == pytest.approx(5.0)
        clock.advance(10)
        assert overdue() == pytest.approx(15.0), "it grows while nothing decides"
        monkeypatch.setattr(service, "decide", real)
        await eventually("decided after the hold", lambda: overdue() == 0.0, task=task)
    assert len(commands(kafka, 0)) > 1, "the due step was issued"


async def test_a_failed_transaction_rebuilds_the_partition_and_decides_the_same_again(
    transitions: Transitions,
) -> None:
    kafka = FakeKafka()
    job(kafka, "j", 2)
    kill(kafka, "j", 2)
    kafka.fail_commits = 1
    k = killer(kafka)
    with structlog.testing.capture_logs() as logs:
        async with running(k) as task:
            await kafka.rebalance(await kafka.subscribed(), {2})
            await eventually("the command", lambda: commands(kafka, 2), task=task)
            await asyncio.sleep(0.2)
    assert [e["event"] for e in logs].count("killer.transaction_failed") == 1
    fail_job, command = commands(kafka, 2)
    log = kafka.log(_tp(t.KILL_COMMANDS, 2))
    aborted = [e.record for e in log if e.record is not None and e.txn and e.txn.state == "aborted"]
    assert len(aborted) == 2  # the fail-job and the pod's step
    assert aborted[0].key == next(e.record.key for e in log if e.visible and e.record)
    assert [dict(r.headers)["ce_id"].decode() for r in aborted] == [
        fail_job.command_id,
        command.command_id,
    ], "same derived ids"
    p2 = path(transitions, 2)
    assert p2[p2.index(Phase.DECIDING) :][:4] == [
        Phase.DECIDING,
        Phase.STALE,
        Phase.REBUILDING,
        Phase.CATCHING_UP,
    ], "the state decide updated is not trusted: rebuilt from the log"


async def test_a_new_owner_fences_the_old_one_which_releases_the_partition() -> None:
    kafka = FakeKafka()
    job(kafka, "j", 0)
    old, new = killer(kafka, identity="old"), killer(kafka, identity="new")
    with structlog.testing.capture_logs() as logs:
        async with running(old) as old_task:
            await kafka.rebalance(await kafka.subscribed(), {0})
            await eventually("the old owner ready", lambda: ready(old), task=old_task)
            async with running(new) as new_task:
                # The old owner is a zombie: its session expired, it still runs and
                # still thinks it owns partition 0 (it was never told otherwise).
                new_consumer = await kafka.subscribed(1)
                await kafka.rebalance(new_consumer, {0})
                await eventually("the new owner ready", lambda: ready(new), task=new_task)
                new_consumer.held = {0}  # the zombie decides first
                kill(kafka, "j", 0)
                await eventually("the old one fenced", lambda: 0 not in old.partitions)
                assert not commands(kafka, 0), "the zombie committed nothing"
                new_consumer.held = set()
                await eventually("the command", lambda: commands(kafka, 0), task=new_task)
                await asyncio.sleep(0.2)
                assert not old_task.done()
    _fail_job, command = commands(kafka, 0)
    (recorded,) = kafka.committed(t.KILL_DECISIONS, 0)
    assert isinstance(recorded, DecisionRecorded) and recorded.killer == "new"
    assert command.command_id in recorded.command_ids
    assert kafka.producers[0].stopped  # the old owner's
    fenced = [e for e in logs if e["event"] == "killer.fenced"]
    assert len(fenced) == 1


async def test_the_previous_owners_open_transaction_is_ended_before_the_end_offsets_are_read() -> (
    None
):
    """Its producer's start aborts it, so the new owner's end offsets are not held
    below it and it never folds what was aborted."""
    kafka = FakeKafka()
    job(kafka, "j", 0)
    zombie = kafka.producer(0, client_id="zombie")
    await zombie.start()
    in_flight = zombie.transaction()
    await in_flight.__aenter__()
    await zombie.send(NAMES(t.KILL_COMMANDS), b"{}", key=b"k", partition=0)
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {0})
        await eventually("ready", lambda: ready(k), task=task)
        commands_tp = _tp(t.KILL_COMMANDS, 0)
        assert k.partitions[0].ends[commands_tp] == 2, "the aborted record and its marker"
    with pytest.raises(ProducerFenced):
        await in_flight.__aexit__(None, None, None)


# -- what cannot be folded ------------------------------------------------------------


async def test_a_record_the_core_raises_on_is_dead_lettered_and_its_partition_rebuilt_without_it(
    monkeypatch: pytest.MonkeyPatch, transitions: Transitions
) -> None:
    kafka = FakeKafka()
    job(kafka, "before", 0)
    job(kafka, "boom", 0)
    job(kafka, "after", 0)
    real = folding.evolve

    def buggy(state: Any, event: Any) -> Any:
        if isinstance(event, PodObserved) and event.job_name == "boom":
            raise ZeroDivisionError("a simulated core bug")
        return real(state, event)

    monkeypatch.setattr(folding, "evolve", buggy)
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {0})
        await eventually("ready", lambda: ready(k), task=task)
        assert jobs(k, 0) == {"before", "after"}
    (dead,) = kafka.dead_letters()
    headers = {name: value.decode() for name, value in dead.headers}
    assert headers["jr_deadletter_source"] == f"{NAMES(t.K8S_OBJECTS)}/0@3"  # boom's pod
    assert headers["jr_deadletter_reason"].startswith(
        "core-error: evolve raised ZeroDivisionError: a simulated core bug"
    )
    p0 = path(transitions, 0)
    assert Phase.STALE in p0[3:], "rebuilt: evolve may have left the state half changed"
    assert p0.count(Phase.REBUILDING) == 2
    assert (
        k.registry.get_sample_value("jobreaper_killer_core_errors_total", {"function": "evolve"})
        == 1
    ), "the rebuild skips the refused record"

    # Another instance reads the dead letters at start: it skips the record too.
    other = killer(kafka, identity="other")
    async with running(other) as task:
        await kafka.rebalance(await kafka.subscribed(1), {0})
        await eventually("ready", lambda: ready(other), task=task)
        assert jobs(other, 0) == {"before", "after"}
    assert other.registry.get_sample_value(
        "jobreaper_killer_core_errors_total", {"function": "evolve"}
    ) in (None, 0.0)
    assert len(kafka.dead_letters()) == 1


async def test_a_poison_record_is_dead_lettered_once_across_rebuilds() -> None:
    kafka = FakeKafka()
    job(kafka, "j", 1)
    kafka.publish_raw(t.KILL_REQUESTS, b"not a message", 1)
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {1})
        await eventually("dead-lettered", lambda: kafka.dead_letters(), task=task)
        kafka.fail_commits = 1  # a rebuild, which folds the poison record again
        kill(kafka, "j", 1)
        await eventually("the command", lambda: commands(kafka, 1), task=task)
        await asyncio.sleep(0.2)
    (dead,) = kafka.dead_letters()
    assert dict(dead.headers)["jr_deadletter_source"].decode() == f"{NAMES(t.KILL_REQUESTS)}/1@0"
    assert dead.value == b"not a message"


async def test_a_dead_letter_that_cannot_be_written_rebuilds_the_partition_and_tries_again() -> (
    None
):
    """The write of a poison record's dead letter fails (Kafka away): the killer goes
    on, rebuilds that partition, meets the record again and dead-letters it then."""
    kafka = FakeKafka()
    job(kafka, "j", 1)
    kafka.publish_raw(t.KILL_REQUESTS, b"not a message", 1)
    kafka.fail_dead_letters = 1
    k = killer(kafka)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {1})
        await eventually("dead-lettered", lambda: kafka.dead_letters(), task=task)
        kill(kafka, "j", 1)
        await eventually("the command", lambda: commands(kafka, 1), task=task)
    assert kafka.fail_dead_letters == 0, "the first write failed"
    (dead,) = kafka.dead_letters()
    assert dead.value == b"not a message"


# -- snapshots: freezing --------------------------------------------------------------


async def test_a_frozen_partition_keeps_what_arrives_and_folds_it_once_thawed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, transitions: Transitions
) -> None:
    kafka = FakeKafka()
    job(kafka, "j", 0)
    pickling, go_on = threading.Event(), threading.Event()
    real = snapshotting.dump_state

    def slow_dump(state: KillerState) -> bytes:
        pickling.set()
        assert go_on.wait(5)
        return real(state)

    monkeypatch.setattr(snapshotting, "dump_state", slow_dump)
    k = killer(kafka, snapshot_dir=str(tmp_path), snapshot_every_records=1)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {0})
        await eventually("frozen", lambda: pickling.is_set(), task=task)
        assert k.partitions[0].phase is Phase.FROZEN
        pickled = k.partitions[0].state
        kill(kafka, "j", 0)
        job(kafka, "later", 0)
        kafka.publish(snapshot(7))  # config: read whole, folded into every partition
        await eventually("held back", lambda: len(k.partitions[0].backlog) == 4)
        assert "later" not in jobs(k, 0) and not commands(kafka)
        assert k.config is not None and k.config.version == 7
        assert pickled.config is None, "the state being pickled does not change"
        assert k.readiness()[0], "frozen is caught up"
        go_on.set()
        await eventually("the command", lambda: commands(kafka, 0), task=task)
        await eventually("the later Job", lambda: "later" in jobs(k, 0))
        assert k.partitions[0].state is pickled
        assert pickled.config is not None and pickled.config.version == 7
        await eventually("written", lambda: (tmp_path / "killer.t.p0.snap").exists())
    p0 = path(transitions, 0)
    assert p0[p0.index(Phase.FROZEN) - 1 :][:3] == [Phase.DECIDING, Phase.FROZEN, Phase.DECIDING]


# -- crash points ---------------------------------------------------------------------


async def test_the_crash_points_fire_where_the_fault_tests_expect_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/e2e/test_faults.py kills the killer at the n-th time it reaches each:
    ``killer.rebuild`` per record folded while catching up, ``killer.after-fold``
    per loop turn that folded something, ``killer.before-commit`` with the
    decision sent but not committed, ``killer.after-commit`` once committed."""
    kafka = FakeKafka()
    job(kafka, "j", 0, pods=2)  # 3 records
    kill(kafka, "j", 0)  # 1 record
    k = killer(kafka)
    crash_points: list[str] = []
    seen_at_commit: list[int] = []

    def reached(name: str) -> None:
        """Record the point (none kills anything here)."""
        crash_points.append(name)
        if name.endswith("commit"):
            seen_at_commit.append(len(commands(kafka, 0)))

    for module in (service, folding, committing):
        monkeypatch.setattr(module, "crash_point", reached)
    async with running(k) as task:
        await kafka.rebalance(await kafka.subscribed(), {0})
        await eventually("the command", lambda: commands(kafka, 0), task=task)
        await eventually("after commit", lambda: "killer.after-commit" in crash_points)
    assert crash_points.count("killer.rebuild") == 4
    first_after_fold = crash_points.index("killer.after-fold")
    assert set(crash_points[:first_after_fold]) == {"killer.rebuild"}
    commit = crash_points.index("killer.before-commit")
    assert crash_points[commit : commit + 2] == ["killer.before-commit", "killer.after-commit"]
    assert seen_at_commit == [0, 3], (
        "before: not yet readable; after: committed (the Job, two pods)"
    )
    assert "killer.rebuild" not in crash_points[commit:], "its own output, folded caught up"


def _tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(NAMES(topic), partition)
