"""Invalid jobreaper annotations become one Warning Event per object and value:
what is warned, the Event, the dedupe, the queue bound, failures (with a fake API)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from bench.sample_objects import job_pod
from schemas.annotations import (
    ENFORCE,
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    Invalid,
)
from schemas.observations import JobObserved, PodObserved
from services.runtime.kube import KubeApiError
from services.runtime.settings import KafkaSettings
from services.watcher import wire
from services.watcher.annotation_events import (
    NAME_LIMIT,
    NOTE_LIMIT,
    AnnotationWarner,
    AnnotationWarning,
    event_body,
    event_name,
    note,
    warnings_for,
)
from services.watcher.convert import job_observation, node_observation, pod_observation
from services.watcher.metrics import WatcherMetrics
from services.watcher.service import Watcher
from services.watcher.settings import WatcherSettings

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def job(
    annotations: dict[str, str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    uid: str = "job-uid-1",
    name: str = "report",
    rv: str = "100",
    change: str = "modified",
) -> JobObserved:
    raw = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": rv,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
            | (annotations or {}),
            "labels": labels or {},
        }
    }
    return job_observation(msgspec.convert(raw, wire.Job), change, NOW)  # type: ignore[arg-type]


def pod(
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    *,
    change: str = "modified",
) -> PodObserved:
    raw = job_pod(1)
    raw["metadata"]["annotations"] = {"other.io/x": "y"} | (annotations or {})
    raw["metadata"]["labels"] = raw["metadata"].get("labels", {}) | (labels or {})
    obs = pod_observation(msgspec.convert(raw, wire.Pod), change, NOW)  # type: ignore[arg-type]
    assert obs is not None
    return obs


# -- what is warned --------------------------------------------------------------------------


def test_a_jobs_invalid_annotations_are_warned_and_valid_ones_not() -> None:
    found = warnings_for(
        job({PENDING_TIMEOUT: "²", KILL_TIMESTAMP: "tomorrow", RUNNING_TIMEOUT: "60"})
    )
    assert {(w.kind, w.invalid.annotation, w.invalid.value) for w in found} == {
        ("Job", PENDING_TIMEOUT, "²"),
        ("Job", KILL_TIMESTAMP, "tomorrow"),
    }
    assert all(
        (w.namespace, w.name, w.uid, w.resource_version) == ("ns", "report", "job-uid-1", "100")
        for w in found
    )
    valid = {
        KILL_TIMESTAMP: "2099-01-01T00:00:00Z",
        PENDING_TIMEOUT: "0",
        FORBID_FORCE_DELETION: "TRUE",
    }
    assert warnings_for(job(valid)) == ()
    assert warnings_for(job()) == ()
    assert [w.invalid.value for w in warnings_for(job({FORBID_FORCE_DELETION: "yes"}))] == ["yes"]


def test_only_what_the_core_reads_is_warned() -> None:
    # A Job's labels are not read by the core (its forbid-force-deletion is an annotation)...
    assert warnings_for(job(labels={FORBID_FORCE_DELETION: "yes"})) == ()
    # ...a pod's forbid-force-deletion annotation and label are, and nothing else of it.
    assert warnings_for(pod({RUNNING_TIMEOUT: "x", KILL_TIMESTAMP: "never"})) == ()
    found = warnings_for(pod({FORBID_FORCE_DELETION: "TRUE"}, {FORBID_FORCE_DELETION: "maybe"}))
    assert [(w.kind, w.invalid.value) for w in found] == [("Pod", "maybe")]
    both = warnings_for(pod({FORBID_FORCE_DELETION: "yes"}, {FORBID_FORCE_DELETION: "no"}))
    assert sorted(w.invalid.value for w in both) == ["no", "yes"]
    assert both[0].job_name == "nightly-report-1"
    assert warnings_for(pod()) == ()


def test_a_jobs_invalid_enforce_label_is_warned_and_valid_ones_not() -> None:
    (found,) = warnings_for(job(labels={ENFORCE: "yes"}))
    assert (found.kind, found.invalid.annotation, found.invalid.value) == ("Job", ENFORCE, "yes")
    assert "counts as absent" in found.invalid.message()
    for value in ("on", "shadow", "off", " Shadow "):
        assert warnings_for(job(labels={ENFORCE: value})) == ()
    assert warnings_for(job(labels={ENFORCE: "on"}, change="deleted")) == ()


def test_deleted_objects_and_nodes_are_not_warned() -> None:
    assert warnings_for(job({PENDING_TIMEOUT: "²"}, change="deleted")) == ()
    assert warnings_for(job({PENDING_TIMEOUT: "²"}, change="synthetic-deleted")) == ()
    assert warnings_for(pod({FORBID_FORCE_DELETION: "yes"}, change="deleted")) == ()
    node = node_observation(
        msgspec.convert({"metadata": {"name": "n", "uid": "u"}}, wire.Node), "added", NOW
    )
    assert warnings_for(node) == ()


# -- the Event -----------------------------------------------------------------------------------


def warning(
    annotation: str = PENDING_TIMEOUT,
    value: str = "²",
    *,
    kind: str = "Job",
    name: str = "report",
    uid: str = "job-uid-1",
) -> AnnotationWarning:
    return (
        warnings_for(job({annotation: value}, uid=uid, name=name))[0]
        if kind == "Job"
        else (warnings_for(pod({annotation: value}))[0])
    )


def test_the_event_names_the_object_the_annotation_the_value_and_what_is_done() -> None:
    w = warning(KILL_TIMESTAMP, "tomorrow")
    body = event_body(w, "watcher-0", NOW)
    assert body["apiVersion"] == "events.k8s.io/v1"
    assert body["type"] == "Warning"
    assert body["reason"] == "JobreaperInvalidAnnotation"
    assert body["reportingController"] == "jobreaper.io/watcher"
    assert body["reportingInstance"] == "watcher-0"
    assert body["action"] == "read-annotation"
    assert body["eventTime"] == "2026-12-06T12:00:00.000000Z"
    assert "deprecatedSource" not in body  # events.k8s.io/v1 refuses it
    assert body["regarding"] == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": "ns",
        "name": "report",
        "uid": "job-uid-1",
        "resourceVersion": "100",
    }
    assert body["metadata"]["namespace"] == "ns"
    assert body["metadata"]["name"] == f"report.jobreaper-{w.key}"
    assert re.fullmatch(r"[0-9a-f]{16}", w.key)
    assert body["note"].startswith(w.invalid.message())
    assert "'tomorrow' is not valid; expected an RFC 3339 time" in body["note"]
    assert "jobreaper ignores it: this annotation sets no kill time." in body["note"]

    assert "the configured pending timeout applies" in note(warning(PENDING_TIMEOUT, "-1"))
    assert "no running timeout" in note(warning(RUNNING_TIMEOUT, "1h"))
    assert 'reads it as "true": this Job\'s pods will not be force-deleted' in note(
        warning(FORBID_FORCE_DELETION, "yes")
    )
    on_pod = warning(FORBID_FORCE_DELETION, "yes", kind="Pod")
    assert 'reads it as "true": this pod will not be force-deleted' in note(on_pod)
    pod_body = event_body(on_pod, "w", NOW)
    assert pod_body["regarding"]["apiVersion"] == "v1"
    assert pod_body["regarding"]["kind"] == "Pod"
    assert pod_body["related"]["kind"] == "Job"
    assert pod_body["related"]["name"] == "nightly-report-1"


def test_the_name_is_deterministic_per_object_annotation_and_value() -> None:
    w = warning()
    assert w.key == warning().key
    assert event_body(w, "a", NOW)["metadata"] == event_body(warning(), "b", NOW)["metadata"]
    others = {
        warning(value="³").key,
        warning(uid="job-uid-2").key,
        warning(RUNNING_TIMEOUT).key,
        warning(FORBID_FORCE_DELETION, "²").key,
    }
    assert w.key not in others
    assert len(others) == 4


def test_names_and_notes_stay_within_the_api_limits() -> None:
    key = "0123456789abcdef"
    for object_name in ("p" * 300, "p" * 236 + "-x" * 10, "a." * 150, "x"):
        name = event_name(object_name, key)
        assert len(name) <= NAME_LIMIT
        assert name.endswith(f".jobreaper-{key}")
        assert DNS_SUBDOMAIN.fullmatch(name), name
    assert len(event_name("p" * 300, key)) == NAME_LIMIT
    long = AnnotationWarning(
        "Job", "ns", "j", "u", "1", Invalid(PENDING_TIMEOUT, "9" * 5000, "x" * 3000)
    )
    assert len(note(long)) == NOTE_LIMIT
    assert len(event_body(warning(), "i" * 500, NOW)["reportingInstance"]) == 128


# -- the warner: dedupe, queue bound, failures ----------------------------------------------------


class FakeApi:
    """Records each POST; answers from a script per Event name (default 201)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: dict[str, list[int | Exception]] = {}
        self.default: int | Exception = 201

    async def __call__(self, namespace: str, body: dict[str, Any]) -> None:
        assert namespace == body["metadata"]["namespace"]
        self.calls.append(body)
        answers = self.script.get(body["metadata"]["name"])
        answer = answers.pop(0) if answers else self.default
        if isinstance(answer, Exception):
            raise answer
        if not 200 <= answer < 300:  # 0: no answer (timeout, connection)
            raise KubeApiError(answer, "Nope", "refused", verb="POST", path="/events")

    def names(self) -> list[str]:
        return [c["metadata"]["name"] for c in self.calls]


class Harness:
    def __init__(self, **options: Any) -> None:
        self.api = FakeApi()
        self.registry = CollectorRegistry()
        self.warner = AnnotationWarner(
            self.api,
            WatcherMetrics(self.registry),
            "w1",
            first_retry_s=0.001,
            now=lambda: NOW,
            **options,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.warner.run())

    async def settled(self) -> None:
        for _ in range(2000):
            if self.warner.idle():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("the warner never became idle")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def events(self, result: str) -> float:
        value = self.registry.get_sample_value(
            "jobreaper_watcher_k8s_events_total", {"result": result}
        )
        return value or 0.0

    def invalid(self, annotation: str) -> float:
        value = self.registry.get_sample_value(
            "jobreaper_watcher_invalid_annotations_total", {"annotation": annotation}
        )
        return value or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.stop()


async def test_each_value_is_told_once_however_often_its_object_changes(harness: Harness) -> None:
    bad = {PENDING_TIMEOUT: "²", KILL_TIMESTAMP: "tomorrow"}
    for i in range(5):  # queued before any worker runs: still one each
        harness.warner.check(job(bad, labels={"round": str(i)}, rv=str(100 + i)))
    harness.start()
    await harness.settled()
    assert len(harness.api.calls) == 2
    for i in range(5, 10):  # told: no API call at all
        harness.warner.check(job(bad, labels={"round": str(i)}, rv=str(100 + i)))
        await harness.settled()
    assert len(harness.api.calls) == 2
    assert harness.events("created") == 2
    assert harness.invalid(PENDING_TIMEOUT) == 1
    assert harness.invalid(KILL_TIMESTAMP) == 1
    # A new value is a new warning; the same value on another object too.
    harness.warner.check(job({PENDING_TIMEOUT: "³", KILL_TIMESTAMP: "tomorrow"}))
    harness.warner.check(job(bad, uid="other-uid", name="other"))
    await harness.settled()
    assert len(harness.api.calls) == 5
    assert len(set(harness.api.names())) == 5
    assert harness.invalid(PENDING_TIMEOUT) == 3


async def test_an_event_that_exists_is_told_already(harness: Harness) -> None:
    harness.api.default = 409  # a restart, or the other replica, told it
    harness.start()
    harness.warner.check(job({PENDING_TIMEOUT: "²"}))
    await harness.settled()
    assert harness.events("exists") == 1
    assert harness.events("created") == 0
    assert harness.invalid(PENDING_TIMEOUT) == 0  # counted once, by whoever created it
    harness.warner.check(job({PENDING_TIMEOUT: "²"}))
    await harness.settled()
    assert len(harness.api.calls) == 1


async def test_server_errors_are_retried_and_refusals_are_counted_not_fatal(
    harness: Harness,
) -> None:
    harness.start()
    flaky = warning(PENDING_TIMEOUT, "²")
    harness.api.script[event_body(flaky, "w1", NOW)["metadata"]["name"]] = [503, 0]
    harness.warner.check(job({PENDING_TIMEOUT: "²"}))
    await harness.settled()
    assert len(harness.api.calls) == 3  # 503, no answer, then created
    assert harness.events("created") == 1

    harness.api.default = 403
    harness.warner.check(job({KILL_TIMESTAMP: "tomorrow"}))
    await harness.settled()
    assert len(harness.api.calls) == 4  # a 403 is not retried at once
    assert harness.events("failed") == 1
    # Not remembered: the next sighting of the object tries again.
    harness.api.default = RuntimeError("boom")
    harness.warner.check(job({KILL_TIMESTAMP: "tomorrow"}))
    await harness.settled()
    assert harness.events("failed") == 2
    # Three failed attempts on a server that keeps failing, then given up for now.
    harness.api.default = 500
    harness.warner.check(job({RUNNING_TIMEOUT: "x"}))
    await harness.settled()
    assert len(harness.api.calls) == 5 + 3
    assert harness.events("failed") == 3
    # The workers survived all of it.
    harness.api.default = 201
    harness.warner.check(job({KILL_TIMESTAMP: "tomorrow"}))
    await harness.settled()
    assert harness.events("created") == 2
    assert harness.task is not None and not harness.task.done()


async def test_a_full_queue_drops_and_counts_and_the_next_sighting_retries() -> None:
    h = Harness(queue_size=2)
    objects = [job({PENDING_TIMEOUT: "²"}, uid=f"uid-{i}", name=f"job-{i}") for i in range(5)]
    # No worker yet (an API server that does not answer): check never waits.
    for obs in objects:
        h.warner.check(obs)
    assert h.events("dropped") == 3
    assert not h.warner.idle()
    h.start()
    try:
        await h.settled()
        assert len(h.api.calls) == 2
        for obs in objects:  # e.g. the next list, slower: the dropped ones are queued now
            h.warner.check(obs)
            await h.settled()
        assert sorted(h.api.names()) == sorted(
            f"job-{i}.jobreaper-{warnings_for(o)[0].key}" for i, o in enumerate(objects)
        )
        assert h.events("created") == 5
    finally:
        await h.stop()


async def test_the_memory_of_told_values_is_bounded() -> None:
    h = Harness(remembered=2)
    h.start()
    try:
        objects = [job({PENDING_TIMEOUT: "²"}, uid=f"uid-{i}") for i in range(3)]
        for obs in objects:
            h.warner.check(obs)
            await h.settled()
        assert len(h.api.calls) == 3
        h.warner.check(objects[2])  # remembered
        h.warner.check(objects[1])  # remembered (and now the most recent)
        await h.settled()
        assert len(h.api.calls) == 3
        h.api.default = 409
        h.warner.check(objects[0])  # forgotten: one call, answered 409
        await h.settled()
        assert len(h.api.calls) == 4
        assert h.events("exists") == 1
        assert len(h.warner._told) == 2
    finally:
        await h.stop()


async def test_what_is_queued_when_leadership_ends_is_offered_again_later() -> None:
    h = Harness()
    gate = asyncio.Event()
    real = h.api.__call__

    async def slow(namespace: str, body: dict[str, Any]) -> None:
        await gate.wait()
        await real(namespace, body)

    h.warner.post = slow
    obs = job({PENDING_TIMEOUT: "²"})
    h.warner.check(obs)
    h.start()
    await asyncio.sleep(0.01)
    await h.stop()  # the cycle ends with the Event in flight
    assert h.warner.idle()
    assert h.api.calls == []
    gate.set()
    h.start()
    try:
        h.warner.check(obs)  # the next leader's list
        await h.settled()
        assert len(h.api.calls) == 1
    finally:
        await h.stop()


async def test_the_watcher_warns_unless_told_not_to() -> None:
    api = client.ApiClient()
    on = Watcher(api, KafkaSettings(), WatcherSettings(events_queue_size=7, events_remembered=9))
    assert on.warner is not None
    assert (on.warner.queue_size, on.warner.remembered) == (7, 9)
    assert on.warner.instance == on.settings.identity
    off = Watcher(api, KafkaSettings(), WatcherSettings(events=False))
    assert off.warner is None
    await api.close()
