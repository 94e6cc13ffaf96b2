"""Killer snapshots over real Kafka: a killer restarted from snapshots decides what
one that replayed the whole log decides, and damaged snapshots fall back to a
full replay that reaches the same state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from core import decide
from devtools.stack.api import StackInfo
from schemas.annotations import ENFORCE
from schemas.base import Message, job_key
from schemas.commands import CommandApplied, CommandIssued
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.observations import ContainerSummary, JobObserved, NodeObserved, PodObserved
from schemas.requests import KillRequested
from services.audit.history import partition_for
from services.killer.service import Killer
from services.killer.settings import KillerServiceSettings
from services.killer.snapshots import SnapshotStore, dump_state, load_state
from services.replay.history import read_history
from services.replay.report import render_replay, replay
from services.runtime.kafka import ensure_topics, make_producer
from services.runtime.messages import outgoing
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames
from tests.integration.helpers import eventually, issued, messages

pytestmark = pytest.mark.stack

NS = "team"
PARTITIONS = 3
BASE = datetime.now(UTC) - timedelta(minutes=1)


def job(j: int) -> list[Message]:
    """Job ``job-j`` with two running pods."""
    name, uid = f"job-{j}", f"j-{j}"
    out: list[Message] = [
        JobObserved(
            change="added",
            observed_at=BASE,
            resource_version=str(j * 10),
            uid=uid,
            namespace=NS,
            name=name,
            labels={ENFORCE: "on"},
            creation_timestamp=BASE,
            start_time=BASE,
            active=2,
        )
    ]
    for k in range(2):
        out.append(
            PodObserved(
                change="added",
                observed_at=BASE,
                resource_version=str(j * 10 + k + 1),
                uid=f"p-{j}-{k}",
                namespace=NS,
                name=f"{name}-{k}",
                job_name=name,
                job_uid=uid,
                creation_timestamp=BASE,
                phase="Running",
                node_name="kwok-node-0",
                start_time=BASE,
                containers=(ContainerSummary(name="main", state="running", started_at=BASE),),
            )
        )
    return out


def kill(j: int) -> KillRequested:
    return KillRequested(
        request_id=f"r-{j}",
        namespace=NS,
        job_name=f"job-{j}",
        job_uid=f"j-{j}",
        reason="test",
        requested_by="test",
        requested_at=datetime.now(UTC),
    )


def applied(command: CommandIssued) -> CommandApplied:
    return CommandApplied(
        command_id=command.command_id,
        step=command.step,
        namespace=command.namespace,
        job_name=command.job_name,
        job_uid=command.job_uid,
        pod_name=command.pod_name,
        pod_uid=command.pod_uid,
        attempt=command.attempt,
        outcome="applied",
        applied_at=datetime.now(UTC),
        http_status=200,
    )


# Short ladder timeouts, so the delete step comes while the test watches.
CONFIG = ConfigSnapshot(
    version=1,
    config=KillerConfig.model_validate({"deleteKillingTasksTimeoutSeconds": 3}),
    author="test",
    changed_at=BASE,
)


class Log:
    """One topic prefix: write messages to it, run killers on it, read their commands."""

    def __init__(self, stack: StackInfo, prefix: str, snapshot_dir: Path | None) -> None:
        self.stack = stack
        self.kafka = KafkaSettings(
            bootstrap=stack.kafka_bootstrap, topic_prefix=prefix, job_partitions=PARTITIONS
        )
        self.snapshot_dir = snapshot_dir
        self.group = f"killer-{uuid.uuid4().hex[:8]}"
        self.running: list[tuple[Killer, asyncio.Task[None]]] = []

    async def write(self, items: Iterable[Message]) -> None:
        await ensure_topics(self.kafka, job_partitions=PARTITIONS)
        names = TopicNames(self.kafka.topic_prefix)
        producer = make_producer(self.kafka, client_id="test")
        await producer.start()
        try:
            for message in items:
                record = outgoing(names, message, source="/test")
                await producer.send_and_wait(
                    record.topic, record.value, key=record.key, headers=record.headers
                )
        finally:
            await producer.stop()

    async def killer(self, *, snapshots: bool, identity: str) -> Killer:
        settings = KillerServiceSettings(
            group_id=self.group,
            identity=identity,
            snapshot_dir=str(self.snapshot_dir) if snapshots and self.snapshot_dir else "",
            snapshot_every_records=1,  # a snapshot at every quiet point: the worst case
        )
        killer = Killer(self.kafka, settings)
        task = asyncio.create_task(killer.run())
        self.running.append((killer, task))

        async def ready() -> bool:
            if task.done():
                task.result()
                raise AssertionError("the killer stopped by itself")
            return killer.readiness()[0] and len(killer.partitions) == PARTITIONS

        await eventually("killer ready", ready)
        return killer

    async def stop(self) -> None:
        while self.running:
            killer, task = self.running.pop()
            killer.stop()
            await asyncio.wait_for(task, 30)

    async def commands(self) -> list[CommandIssued]:
        return issued(
            await messages(self.stack.kafka_bootstrap, f"{self.kafka.topic_prefix}kill.commands")
        )


def sample(killer: Killer, name: str, **labels: str) -> float:
    return killer.registry.get_sample_value(name, labels or None) or 0.0


def ladder(commands: list[CommandIssued]) -> list[tuple[str, str, str, str, int]]:
    """What was decided, without the instants (they depend on when each killer ran)."""
    return sorted((c.command_id, c.pod_name, c.step, c.rule, c.attempt) for c in commands)


@pytest_asyncio.fixture(loop_scope="session")
async def logs(
    stack: StackInfo, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Log, Log]]:
    """The same history written to two prefixes: one uses snapshots, one never does."""
    snap = Log(stack, topic_prefix, tmp_path / "snapshots")
    full = Log(stack, f"{topic_prefix}full.", None)
    try:
        yield snap, full
    finally:
        await snap.stop()
        await full.stop()


async def test_a_killer_restarted_from_snapshots_decides_what_a_full_replay_decides(
    logs: tuple[Log, Log],
) -> None:
    snap, full = logs
    history: list[Message] = [CONFIG]
    for j in range(12):
        history += job(j)
    history += [kill(j) for j in range(4)]
    for log in logs:
        await log.write(history)

    # First life: both decide the first step for jobs 0-3; one also writes snapshots.
    first = await snap.killer(snapshots=True, identity="snap-1")
    await full.killer(snapshots=False, identity="full-1")

    async def first_steps(log: Log) -> list[CommandIssued] | None:
        found = await log.commands()
        return found if len(found) >= 12 else None  # 4 Jobs: fail-job and 2 pod steps each

    issued = await eventually("first steps (snapshots)", lambda: first_steps(snap))
    await eventually("first steps (full)", lambda: first_steps(full))
    store = SnapshotStore(snap.snapshot_dir or Path(), snap.kafka.topic_prefix)

    async def every_partition_snapshotted() -> bool:
        return all(store.candidates(p) for p in range(PARTITIONS))

    await eventually("a snapshot of every partition", every_partition_snapshotted)
    await asyncio.sleep(1)
    assert sample(first, "jobreaper_killer_snapshots_written_total") >= PARTITIONS
    await snap.stop()
    await full.stop()

    # While no killer runs: more Jobs, more requests, and the first steps of job-0 applied
    # (so its ladder moves on to delete after 3 s): the tail a snapshot does not hold.
    tail: list[Message] = []
    for j in range(12, 16):
        tail += job(j)
    tail += [kill(j) for j in (4, 5, 6, 7, 12, 13)]
    tail += [applied(c) for c in issued if c.job_name == "job-0"]
    for log in logs:
        await log.write(tail)

    # Second life: one loads snapshots and folds the tail, the other replays everything.
    restarted = await snap.killer(snapshots=True, identity="snap-2")
    replayed = await full.killer(snapshots=False, identity="full-2")
    assert sample(restarted, "jobreaper_killer_snapshots_loaded_total") == PARTITIONS
    assert sample(replayed, "jobreaper_killer_snapshots_loaded_total") == 0
    folded = {
        name: sum(
            s.value
            for metric in k.metrics.folded.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        )
        for name, k in (("snapshot", restarted), ("full", replayed))
    }
    assert folded["snapshot"] < folded["full"], f"only the tail is folded: {folded}"

    # Then the same new events for both.
    later = [kill(8), kill(9)]
    for log in logs:
        await log.write(later)

    killed = {f"job-{j}" for j in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13)}

    # Every killed pod gets its first step, then (3 s later, no result) its delete;
    # every killed Job its fail-job.
    expected = {
        (f"{name}-{k}", step)
        for name in killed
        for k in (0, 1)
        for step in ("set-active-deadline", "delete")
    } | {(name, "fail-job") for name in killed}

    async def settled() -> bool:
        a, b = await snap.commands(), await full.commands()
        got = {(c.pod_name or c.job_name, c.step) for c in a}
        return got == expected and ladder(a) == ladder(b)

    await eventually("both killers decided the same steps", settled)
    await asyncio.sleep(2)  # and nothing more on either side
    a, b = await snap.commands(), await full.commands()
    assert ladder(a) == ladder(b)
    ids = [c.command_id for c in a]
    assert len(ids) == len(set(ids)), "no command issued twice across the restart"
    await snap.stop()
    report = replay(await read_history(snap.kafka))
    assert report.divergences == [], render_replay(report)
    assert report.total("commands") == len(ids)


def node(status: str, rv: int, observed_at: datetime, *taints: str) -> NodeObserved:
    return NodeObserved(
        change="modified",
        observed_at=observed_at,
        resource_version=str(rv),
        name="kwok-node-0",
        uid="node-0",
        status=status,
        taints=taints,
    )


async def test_a_killer_restarted_while_a_node_is_lost_dates_the_loss_from_its_start(
    logs: tuple[Log, Log],
) -> None:
    """The node goes unreachable while no killer runs, and changes again (the node
    controller's taint): both a killer loading a snapshot and one replaying the log
    delete the pods on it from the loss's first observation, as a killer that had
    watched it would; they once dated it from the newest observation."""
    snap, full = logs
    long_delete = CONFIG.model_copy(
        update={"config": KillerConfig.model_validate({"deleteKillingTasksTimeoutSeconds": 600})}
    )
    history = [
        long_delete,
        node("ready", 1, BASE),
        *job(0),
        kill(0).model_copy(update={"requested_at": BASE}),
    ]
    for log in logs:
        await log.write(history)
    await snap.killer(snapshots=True, identity="snap-1")
    await full.killer(snapshots=False, identity="full-1")
    for log in logs:
        firsts = await eventually(
            "the first steps", partial(_at_least, log, "set-active-deadline", 2)
        )
        assert all(c.rule == "ladder.active-deadline" for c in firsts)
    store = SnapshotStore(snap.snapshot_dir or Path(), snap.kafka.topic_prefix)

    owner = partition_for(job_key(NS, "job-0"), PARTITIONS)

    async def snapshotted() -> bool:
        return bool(store.candidates(owner))

    await eventually("a snapshot of job-0's partition", snapshotted)
    await snap.stop()
    await full.stop()

    lost_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=4)
    tail = [
        node("unreachable", 2, lost_at),
        node("unreachable", 3, lost_at + timedelta(seconds=2), "node.kubernetes.io/unreachable"),
    ]
    for log in logs:
        await log.write(tail)
    await snap.killer(snapshots=True, identity="snap-2")
    await full.killer(snapshots=False, identity="full-2")
    for log in logs:
        deletes = await eventually("the deletions", partial(_at_least, log, "delete", 2))
        assert [(c.rule, c.due_at) for c in deletes] == [("ladder.node-lost-delete", lost_at)] * 2
    await snap.stop()
    await full.stop()
    for log in logs:  # and the log replays exactly, the loaded state's decisions too
        report = replay(await read_history(log.kafka))
        assert report.divergences == [], render_replay(report)
        assert report.total("commands") == 5  # fail-job, 2 x set-active-deadline, 2 x delete


async def _at_least(log: Log, step: str, count: int) -> list[CommandIssued] | None:
    found = [c for c in await log.commands() if c.step == step]
    return found if len(found) >= count else None


def future_decisions(killer: Killer, now: datetime) -> list[Any]:
    """What each partition's state would decide later on (its ladder to the end), on copies."""
    out: list[Any] = []
    for number in sorted(killer.partitions):
        state = load_state(dump_state(killer.partitions[number].state))
        for later in (30, 600, 7200):
            decision = decide(state, now + timedelta(seconds=later))
            out.append(
                (
                    number,
                    later,
                    sorted((c.command_id, c.step, c.rule) for c in decision.commands),
                    sorted(type(e).__name__ + e.job_name for e in decision.kill_events),
                )
            )
    return out


async def test_a_truncated_or_altered_snapshot_falls_back_to_a_full_replay(
    stack: StackInfo, topic_prefix: str, tmp_path: Path
) -> None:
    log = Log(stack, topic_prefix, tmp_path / "snapshots")
    try:
        history: list[Message] = []  # default config: nothing new is due for minutes
        for j in range(9):
            history += job(j)
        history += [kill(j) for j in range(0, 9, 2)]
        await log.write(history)
        first = await log.killer(snapshots=True, identity="k-1")
        store = SnapshotStore(tmp_path / "snapshots", topic_prefix)

        async def snapshotted() -> bool:
            return len(await log.commands()) >= 15 and all(  # 5 Jobs: fail-job, 2 pods
                store.candidates(p) for p in range(PARTITIONS)
            )

        await eventually("commands and snapshots", snapshotted)
        await asyncio.sleep(1)
        assert sample(first, "jobreaper_killer_snapshots_written_total") >= PARTITIONS
        await log.stop()
        before = await log.commands()

        # Partition 0: cut in half; partition 1: one payload byte flipped; 2: intact.
        for path in tmp_path.joinpath("snapshots").glob("*.prev"):
            path.unlink()  # else the previous snapshot would (rightly) be used
        data = store.path(0).read_bytes()
        store.path(0).write_bytes(data[: len(data) // 2])
        data = bytearray(store.path(1).read_bytes())
        data[-100] ^= 0x10
        store.path(1).write_bytes(bytes(data))

        with capture_logs() as logs:
            restarted = await log.killer(snapshots=True, identity="k-2")
        skipped = sorted(
            (e["partition"], e["reason"]) for e in logs if e["event"] == "killer.snapshot_skipped"
        )
        assert skipped == [(0, "truncated"), (1, "checksum")]
        assert all(
            e["log_level"] == "warning" for e in logs if e["event"] == "killer.snapshot_skipped"
        )
        name = "jobreaper_killer_snapshots_skipped_total"
        assert sample(restarted, name, reason="truncated") == 1
        assert sample(restarted, name, reason="checksum") == 1
        assert sample(restarted, "jobreaper_killer_snapshots_loaded_total") == 1
        await asyncio.sleep(1)  # let it decide whatever it would (nothing is due)
        now = datetime.now(UTC)
        from_snapshots = future_decisions(restarted, now)
        await log.stop()

        # A killer without snapshots replays everything: the same state, to the end
        # of every ladder (each partition compared, the intact snapshot included).
        reference = await log.killer(snapshots=False, identity="k-3")
        await asyncio.sleep(1)
        assert future_decisions(reference, now) == from_snapshots
        assert any(commands for _, _, commands, _ in from_snapshots), "the ladders go on"
        assert ladder(await log.commands()) == ladder(before), "nothing decided twice"
    finally:
        await log.stop()
