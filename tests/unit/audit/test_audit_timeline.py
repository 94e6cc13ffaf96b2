"""The timeline model, from records built in memory (the builder is pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.base import Message
from schemas.commands import CommandApplied, CommandIssued
from schemas.decisions import DecisionRecorded, InputPosition
from schemas.events import ForceDeletionHeld, JobKilled, KillStarted, PodEnding, PodRef
from schemas.observations import JobObserved, PodObserved
from schemas.requests import KillCancelRequested, KillRequested
from services.audit.history import JobNotFound, Read, partition_for, select
from services.audit.jsonout import timeline_json
from services.audit.picture import render_html, render_svg
from services.runtime.messages import CODEC

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS, JOB = "batch", "nightly"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def read(topic: str, offset: int, message: Message) -> Read:
    record = CODEC.encode(message, source="/test", time=T0)
    envelope = CODEC.decode(record.headers, record.value)
    return Read(topic, 0, offset, record.key.decode(), envelope)


def job(uid: str, seconds: float, **extra: object) -> JobObserved:
    return JobObserved(
        change="added",
        observed_at=at(seconds),
        resource_version="1",
        uid=uid,
        namespace=NS,
        name=JOB,
        **extra,  # type: ignore[arg-type]
    )


def pod(uid: str, job_uid: str | None, seconds: float, **extra: object) -> PodObserved:
    fields: dict[str, object] = {"change": "modified", **extra}
    return PodObserved(
        observed_at=at(seconds),
        resource_version="2",
        uid=uid,
        namespace=NS,
        name=f"p-{uid}",
        job_name=JOB,
        job_uid=job_uid,
        **fields,  # type: ignore[arg-type]
    )


def command(job_uid: str, pod_uid: str, seconds: float) -> CommandIssued:
    return CommandIssued(
        command_id=f"c-{pod_uid}",
        step="delete",
        namespace=NS,
        job_name=JOB,
        job_uid=job_uid,
        pod_name=f"p-{pod_uid}",
        pod_uid=pod_uid,
        trigger="Killed",
        reason="Killed",
        rule="ladder.delete-method",
        config_version=3,
        due_at=at(seconds - 0.5),
        decided_at=at(seconds),
    )


def history() -> list[Read]:
    """Two Jobs of one name: ``old`` (killed) then ``new`` (running)."""
    issued = command("old", "a", 10)
    return [
        read("k8s.objects", 0, job("old", 0)),
        read("k8s.objects", 1, pod("a", "old", 1, node_name="n1", phase="Running")),
        read(
            "kill.requests",
            0,
            KillRequested(
                request_id="r", namespace=NS, job_name=JOB, requested_by="me", requested_at=at(9)
            ),
        ),
        read("kill.commands", 0, issued),
        read(
            "kill.events",
            0,
            KillStarted(
                namespace=NS,
                job_name=JOB,
                job_uid="old",
                trigger="Killed",
                reason="Killed",
                due_at=at(9.5),
                decided_at=at(10),
                pods=(PodRef(name="p-a", uid="a"),),
            ),
        ),
        read(
            "kill.decisions",
            0,
            DecisionRecorded(
                partition=0,
                decided_at=at(10),
                config_version=3,
                killer="k1",
                inputs=(InputPosition(topic="k8s.objects", partition=0, offset=2),),
                command_ids=(issued.command_id,),
            ),
        ),
        read(
            "kill.results",
            0,
            CommandApplied(
                command_id=issued.command_id,
                step="delete",
                namespace=NS,
                job_name=JOB,
                job_uid="old",
                pod_name="p-a",
                pod_uid="a",
                outcome="applied",
                applied_at=at(10.25),
                http_status=200,
                message="deleted with the pod's own grace period",
                attempts=2,
            ),
        ),
        read("k8s.objects", 2, pod("a", "old", 10.3, deletion_timestamp=at(40))),
        read("k8s.objects", 3, pod("a", "old", 11, change="deleted")),
        read(
            "kill.events",
            1,
            JobKilled(
                namespace=NS,
                job_name=JOB,
                job_uid="old",
                trigger="Killed",
                reason="Killed",
                killed_at=at(11),
                decided_at=at(11),
                pods=(PodEnding(name="p-a", uid="a", ended="deleted"),),
            ),
        ),
        read("k8s.objects", 4, job("new", 100)),
        read("k8s.objects", 5, pod("b", "new", 101)),
        # Another Job in the same partition: never shown.
        read(
            "k8s.objects",
            6,
            JobObserved(
                change="added",
                observed_at=at(5),
                resource_version="9",
                uid="x",
                namespace=NS,
                name="other",
            ),
        ),
    ]


def test_the_latest_job_of_a_name_is_shown_and_the_others_listed() -> None:
    timeline = select(history(), NS, JOB, None)
    assert timeline.uid == "new"
    assert [u for u, _ in timeline.others] == ["old"]
    assert [p.uid for p in timeline.pods] == ["b"]
    assert timeline.steps == [] and timeline.requests == []


def test_uid_picks_an_older_job_with_its_whole_kill() -> None:
    timeline = select(history(), NS, JOB, "old")
    assert [u for u, _ in timeline.others] == ["new"]
    (step,) = timeline.steps
    assert step.decide_latency_s == 0.5 and step.apply_latency_s == 0.75
    assert step.decision is not None and step.decision.inputs == ("k8s.objects/0@2",)
    assert step.result is not None and step.result.wrote
    (p,) = timeline.pods
    assert (p.node, p.ended, p.gone_at, p.deletion_timestamp) == ("n1", "deleted", at(11), at(40))
    assert len(timeline.requests) == 1, "a request without job_uid goes to the Job of its time"
    kinds = [e.kind for e in timeline.entries]
    assert kinds.index("decision") < kinds.index("command"), "a decision precedes its commands"
    assert "other" not in " ".join(e.text for e in timeline.entries)
    assert timeline_json(timeline)["steps"][0]["result"]["wrote"] is True
    assert "<svg" in render_svg(timeline) and "<table>" in render_html(timeline)


def test_a_cancellation_is_listed_with_the_requests_of_the_job_of_its_time() -> None:
    cancel = KillCancelRequested(
        request_id="c", namespace=NS, job_name=JOB, requested_by="oncall", requested_at=at(9.2)
    )
    timeline = select([*history(), read("kill.requests", 1, cancel)], NS, JOB, "old")
    assert [type(r).__name__ for r in timeline.requests] == ["KillRequested", "KillCancelRequested"]
    (entry,) = [e for e in timeline.entries if "cancellation" in e.text]
    assert (entry.kind, entry.at) == ("request", at(9.2))
    assert entry.text == "kill cancellation requested by oncall"
    ce_types = [r["ce_type"] for r in timeline_json(timeline)["requests"]]
    assert ce_types == ["io.jobreaper.kill.requested.v1", "io.jobreaper.kill.cancel-requested.v1"]
    assert "<svg" in render_svg(timeline)


def test_a_job_never_in_the_log_is_a_clear_error() -> None:
    with pytest.raises(JobNotFound, match="never appears in the log"):
        select(history(), NS, "ghost", None)
    with pytest.raises(JobNotFound, match="uid nope"):
        select(history(), NS, JOB, "nope")


def test_a_result_that_found_the_effect_already_there_is_no_write() -> None:
    records = history()
    applied = records[6].envelope.message
    assert isinstance(applied, CommandApplied)
    again = applied.model_copy(
        update={"message": "already being deleted since x: no second delete sent"}
    )
    records[6] = read("kill.results", 0, again)
    (step,) = select(records, NS, JOB, "old").steps
    assert step.result is not None and not step.result.wrote


def test_a_refresh_says_nothing_new_or_that_the_history_before_it_expired() -> None:
    records = history()
    observations = [r for r in records if r.topic == "k8s.objects"]
    again = [
        read("k8s.objects", 10 + i, r.envelope.message.model_copy(update={"change": "refreshed"}))
        for i, r in enumerate(observations)
    ]
    full = select([*records, *again], NS, JOB, "old")
    assert [e.text for e in full.entries] == [
        e.text for e in select(records, NS, JOB, "old").entries
    ]
    expired = select([r for r in records if r.topic != "k8s.objects"] + again, NS, JOB, "new")
    texts = [e.text for e in expired.entries]
    assert "Job first seen (a refresh: its older records expired) (uid new)" in texts[0]
    assert any(t.startswith("first seen (a refresh: its older records expired)") for t in texts)


@pytest.mark.parametrize("key", ["batch/nightly", "default/a", "ns-x/job-with-a-long-name-123"])
@pytest.mark.parametrize("partitions", [1, 3, 6, 12])
def test_the_partition_is_the_one_aiokafkas_default_partitioner_picks(
    key: str, partitions: int
) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key.encode(), every, every)


def test_the_events_tail_skips_a_type_it_does_not_know_with_a_note() -> None:
    from aiokafka import ConsumerRecord

    from services.audit.follow import _decode

    record = CODEC.encode(history()[4].envelope.message, source="/t")
    headers = [
        (k, b"io.jobreaper.kill.paused.v1" if k == "ce_type" else v) for k, v in record.headers
    ]
    notes: list[str] = []
    raw = ConsumerRecord(
        topic="jobreaper.kill.events",
        partition=2,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=headers,
    )
    assert _decode(raw, notes.append) is None
    assert notes == [
        "skipped jobreaper.kill.events/2@7: unknown-type: ce_type "
        "'io.jobreaper.kill.paused.v1' is not a jobreaper message"
    ]
    good = ConsumerRecord(**{**raw.__dict__, "headers": record.headers})
    envelope = _decode(good, notes.append)
    assert envelope is not None and isinstance(envelope.message, KillStarted)


def _big_kill(pods: int) -> list[Read]:
    """A Job of ``pods`` pods killed at 10 s, every pod deleted by 20 s: its
    ``KillStarted``, ``JobKilled`` and decision in parts, as the killer writes them."""
    from schemas.decisions import decision_parts
    from schemas.events import job_killed_parts, kill_started_parts

    refs = tuple(PodRef(name=f"p-{i:05d}", uid=f"u{i}") for i in range(pods))
    common = {"namespace": NS, "job_name": JOB, "job_uid": "big", "trigger": "Killed"}
    started = kill_started_parts(
        KillStarted(**common, reason="Killed", due_at=at(10), decided_at=at(10)), refs, ()
    )
    killed = job_killed_parts(
        JobKilled(**common, reason="Killed", killed_at=at(20), decided_at=at(20)),
        tuple(
            PodEnding(name=r.name, uid=r.uid, ended="deleted" if i % 4 else "exited")
            for i, r in enumerate(refs)
        ),
    )
    commands = [command("big", r.uid, 10) for r in refs]
    decision = DecisionRecorded(
        partition=0,
        decided_at=at(10),
        config_version=3,
        inputs=(InputPosition(topic="k8s.objects", partition=0, offset=pods + 1),),
        killer="k1",
        state="s1",
    )
    # as many event ids as the killer's KillSteps would add: the decision is in parts
    parts = decision_parts(decision, [c.command_id for c in commands], ["e"] * 10_000)
    assert len(parts) == 2
    records = [read("k8s.objects", 0, job("big", 0))]
    records += [read("k8s.objects", 1 + i, pod(r.uid, "big", 1)) for i, r in enumerate(refs)]
    records += [read("kill.commands", i, c) for i, c in enumerate(commands)]
    records += [read("kill.events", i, e) for i, e in enumerate((*started, *killed))]
    records += [read("kill.decisions", i, d) for i, d in enumerate(parts)]
    return records


def test_an_event_in_parts_is_one_entry_with_every_pod() -> None:
    records = _big_kill(2_345)
    timeline = select(records, NS, JOB, None)
    events = [e.text for e in timeline.entries if e.kind == "event"]
    assert events == [
        "KillStarted (episode 1): Killed, 2,345 pods p-00000, p-00001, p-00002, p-00003, "
        "p-00004, p-00005, p-00006, p-00007, p-00008, p-00009 and 2,335 more (3 parts)",
        "JobKilled (episode 1): 2,345 pods (1,758 deleted, 587 exited): p-00000 exited, "
        "p-00001 deleted, p-00002 deleted, p-00003 deleted, p-00004 exited, p-00005 deleted, "
        "p-00006 deleted, p-00007 deleted, p-00008 exited, p-00009 deleted and 2,335 more "
        "(3 parts)",
    ]
    assert all(p.ended in ("deleted", "exited") for p in timeline.pods)
    decisions = [e.text for e in timeline.entries if e.kind == "decision"]
    assert decisions == [
        "decision by k1 (config v3): 2,345 command(s), after folding 1 topic-partitions "
        "(positions in --json)"
    ]
    assert all(s.decision is not None for s in timeline.steps)
    # --json keeps every record as it is on the topic, parts included
    assert len(timeline_json(timeline)["kill_events"]) == 6


def test_an_event_with_parts_missing_says_so() -> None:
    records = [
        r
        for r in _big_kill(2_500)
        if not (r.topic == "kill.events" and getattr(r.envelope.message, "part", 1) == 2)
    ]
    timeline = select(records, NS, JOB, None)
    events = [e.text for e in timeline.entries if e.kind == "event"]
    assert [t.rsplit("(", 1)[1] for t in events] == ["parts 1, 3 of 3 read: incomplete)"] * 2
    assert "1,500 pods" in events[0]


def test_the_events_line_of_a_part_names_it_and_counts_the_pods() -> None:
    from services.runtime.kill_events import describe

    (small,) = [
        r.envelope.message for r in _big_kill(3) if isinstance(r.envelope.message, KillStarted)
    ]
    assert describe(small) == (
        "batch/nightly: kill started (Killed: Killed); pods p-00000, p-00001, p-00002"
    )
    parts = [r.envelope.message for r in _big_kill(2_001) if r.topic == "kill.events"]
    assert describe(parts[1]) == (
        "batch/nightly: kill started (part 2/3) (Killed: Killed); 1,000 pods p-01000, p-01001, "
        "p-01002, p-01003, p-01004, p-01005, p-01006, p-01007, p-01008, p-01009 and 990 more"
    )
    assert describe(parts[3]) == (
        "batch/nightly: killed at 2026-01-01T00:00:20Z (part 1/3) (Killed); 1,000 pods "
        "(750 deleted, 250 exited): p-00000 exited, p-00001 deleted, p-00002 deleted, "
        "p-00003 deleted, p-00004 exited, p-00005 deleted, p-00006 deleted, p-00007 deleted, "
        "p-00008 exited, p-00009 deleted and 990 more"
    )
    assert describe(parts[5]) == (
        "batch/nightly: killed at 2026-01-01T00:00:20Z (part 3/3) (Killed); p-02000 exited"
    )


def test_a_held_force_deletion_is_on_the_timeline_with_what_it_waits_for() -> None:
    held = ForceDeletionHeld(
        namespace=NS,
        job_name=JOB,
        job_uid="old",
        pod_name="p-a",
        pod_uid="a",
        node_name="n1",
        waits_for="fence",
        policy="whenFenced",
        trigger="Killed",
        reason="Killed",
        since=at(40),
        due_at=at(70),
        decided_at=at(70),
    )
    records = [*history()[:-4], read("kill.events", 5, held)]
    timeline = select(records, NS, JOB, "old")
    (entry,) = [e for e in timeline.entries if e.text.startswith("ForceDeletionHeld")]
    assert (entry.at, entry.pod, entry.step) == (at(70), "p-a", "force-delete")
    assert "waits for a fence of node n1 (forceDeletePolicy: whenFenced)" in entry.text
    assert "#ef6c00" in render_svg(timeline)


def test_a_force_deletion_held_for_its_volume_is_on_the_timeline() -> None:
    held = ForceDeletionHeld(
        namespace=NS,
        job_name=JOB,
        job_uid="old",
        pod_name="p-a",
        pod_uid="a",
        node_name="n1",
        waits_for="volume",
        policy="afterTimeout",
        trigger="Killed",
        reason="Killed",
        since=at(40),
        due_at=at(70),
        decided_at=at(70),
    )
    records = [*history()[:-4], read("kill.events", 5, held)]
    timeline = select(records, NS, JOB, "old")
    (entry,) = [e for e in timeline.entries if e.text.startswith("ForceDeletionHeld")]
    assert "waits for a fence of node n1 (a ReadWriteOnce volume claim)" in entry.text
