"""Tell the user about an invalid jobreaper annotation: a Warning Event on that object.

The killer's core already reads an invalid value safely (a kill time or a
timeout that does not parse is ignored; a ``forbid-force-deletion`` that does
not parse forbids), but silently: the user who wrote ``"²"`` or ``"tomorrow"``
would never learn why nothing happened. The watcher is the edge that reads
Kubernetes objects, so it tells them, with the one parser of those values
(:mod:`schemas.annotations`) and its :meth:`~schemas.annotations.Invalid.message`.

* **Off the hot path.** :meth:`AnnotationWarner.check` runs for every
  observation the watcher publishes; for an object without jobreaper
  annotations (observations keep only ``jobreaper.io/`` annotations, and pod
  labels) it is a type test and an empty-dict test. It never awaits: a warning
  goes to a bounded queue, or is dropped and counted when the queue is full.
  A few background workers create the Events, so a slow or refusing API server
  never slows publishing.
* **Once per value.** An Event is named from the object's uid, the annotation
  and the value (:func:`event_name`), so a second watcher process (a restart,
  the other replica after a failover) that warns again gets ``409
  AlreadyExists``, counted as ``exists`` and nothing else. An in-memory LRU of
  the values told (or found told) saves even that call within a process; a
  value queued or in flight is not queued twice.
* **Never fatal.** A refused Event (403 without the RBAC, a namespace being
  deleted...) is logged and counted; throttling, server errors and timeouts
  are retried a few times. A value whose Event could not be created is not
  remembered, so the next change of its object or the next re-list (every
  re-list looks at every object again) tries again.

Only the holder of the watcher's Lease warns: the workers run inside the
leader's cycle, like publishing. A standby replica reads nothing, so it could
not warn anyway, and one writer means one Event per value without relying on
the 409s.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from kubernetes_asyncio import client

from schemas.annotations import (
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    SAFE_TO_FORCE_DELETE,
    Invalid,
    forbids_force_deletion,
    invalid_enforce,
    job_annotations,
    safe_to_force_delete,
)
from schemas.observations import DELETED_CHANGES, JobObserved, PodObserved
from services.runtime.kube import KubeApiError, request_json
from services.runtime.logging import get_logger
from services.runtime.retry import Backoff
from services.runtime.tasks import Supervisor

from .convert import Observation
from .metrics import WatcherMetrics

log = get_logger(__name__)

REPORTING_CONTROLLER: Final = "jobreaper.io/watcher"
REASON: Final = "JobreaperInvalidAnnotation"
"""Prefixed like the executor's reasons: ``kubectl describe`` shows the reason, not who."""
ACTION: Final = "read-annotation"
NAME_LIMIT: Final = 253
NOTE_LIMIT: Final = 1024
HASH_CHARS: Final = 16

WHAT_JOBREAPER_DOES: Final[dict[str, str]] = {
    KILL_TIMESTAMP: "jobreaper ignores it: this annotation sets no kill time",
    PENDING_TIMEOUT: "jobreaper ignores it: the configured pending timeout applies",
    RUNNING_TIMEOUT: "jobreaper ignores it: the pods get no running timeout from it",
    SAFE_TO_FORCE_DELETE: (
        'jobreaper reads it as "false": a pod with a ReadWriteOnce volume claim is not'
        " force-deleted on a node that is not fenced"
    ),
}
"""What the core does instead, for the values it ignores (forbid-force-deletion: below)."""

Kind = Literal["Job", "Pod"]


@dataclass(frozen=True, slots=True)
class AnnotationWarning:
    """One invalid value on one object, to be told once."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    resource_version: str
    invalid: Invalid
    job_name: str | None = None
    """For a pod: its Job (the Event's ``related`` object)."""
    job_uid: str | None = None

    @property
    def key(self) -> str:
        """The hash that names the Event: same object, annotation and value, same key."""
        text = "\0".join((self.uid, self.invalid.annotation, self.invalid.value))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def warnings_for(observation: Observation) -> tuple[AnnotationWarning, ...]:
    """The invalid jobreaper values of one observed object (what the core reads:
    a Job's annotations and its ``jobreaper.io/enforce`` label; a pod's
    forbid-force-deletion annotation and label).

    Nearly free for objects without jobreaper annotations, and for nodes."""
    if isinstance(observation, PodObserved):
        if not observation.annotations and not observation.labels:
            return ()
        if observation.change in DELETED_CHANGES:
            return ()
        invalid = forbids_force_deletion(observation.annotations, observation.labels)[1]
        unsafe = safe_to_force_delete(observation.annotations)[1]
        if unsafe is not None:
            invalid = (*invalid, unsafe)
        kind: Kind = "Pod"
        job_name, job_uid = observation.job_name, observation.job_uid
    elif isinstance(observation, JobObserved):
        if observation.change in DELETED_CHANGES:
            return ()
        enforce = invalid_enforce(observation.labels)
        if not observation.annotations and enforce is None:
            return ()
        invalid = job_annotations(observation.annotations).invalid
        if enforce is not None:
            invalid = (*invalid, enforce)
        kind, job_name, job_uid = "Job", None, None
    else:
        return ()
    return tuple(
        AnnotationWarning(
            kind=kind,
            namespace=observation.namespace,
            name=observation.name,
            uid=observation.uid,
            resource_version=observation.resource_version or "",
            invalid=problem,
            job_name=job_name,
            job_uid=job_uid,
        )
        for problem in invalid
    )


def event_name(object_name: str, key: str) -> str:
    """``<object-name>.jobreaper-<key>``, the object name cut so the whole fits in
    253 characters and still is a DNS subdomain (no ``-`` or ``.`` before the dot)."""
    suffix = f".jobreaper-{key}"
    head = object_name[: NAME_LIMIT - len(suffix)].rstrip("-.")
    return f"{head or 'object'}{suffix}"


def note(warning: AnnotationWarning) -> str:
    """``Invalid.message()`` and what jobreaper does instead."""
    annotation = warning.invalid.annotation
    if annotation == FORBID_FORCE_DELETION:
        whose = "this pod" if warning.kind == "Pod" else "this Job's pods"
        instead = f'jobreaper reads it as "true": {whose} will not be force-deleted'
    else:
        instead = WHAT_JOBREAPER_DOES.get(annotation, "jobreaper ignores it")
    text = f"{warning.invalid.message()}. {instead}."
    return text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - 3] + "..."


def _micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(warning: AnnotationWarning, instance: str, now: datetime) -> dict[str, Any]:
    """The ``events.k8s.io/v1`` Event, as the executor writes its own.

    That API refuses ``deprecatedSource`` ("needs to be unset"): who reported it
    is ``reportingController``/``reportingInstance`` (``kubectl describe`` shows
    them under "From"; the core/v1 view calls them ``reportingComponent``)."""
    regarding: dict[str, Any] = {
        "apiVersion": "batch/v1" if warning.kind == "Job" else "v1",
        "kind": warning.kind,
        "namespace": warning.namespace,
        "name": warning.name,
        "uid": warning.uid,
    }
    if warning.resource_version:
        regarding["resourceVersion"] = warning.resource_version
    body: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(warning.name, warning.key),
            "namespace": warning.namespace,
        },
        "eventTime": _micro_time(now),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": ACTION,
        "reason": REASON,
        "type": "Warning",
        "note": note(warning),
        "regarding": regarding,
    }
    if warning.kind == "Pod" and warning.job_name:
        related: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "namespace": warning.namespace,
            "name": warning.job_name,
        }
        if warning.job_uid:
            related["uid"] = warning.job_uid
        body["related"] = related
    return body


PostEvent = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``post(namespace, body)``: create the Event; raise :class:`KubeApiError` if refused."""


def kube_post(api: client.ApiClient, timeout_s: float = 10.0) -> PostEvent:
    """The real :data:`PostEvent`: POST to the API server through the shared client."""

    async def post(namespace: str, body: dict[str, Any]) -> None:
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        await request_json(api, "POST", path, body=body, timeout=timeout_s)

    return post


class AnnotationWarner:
    """Checks observations for invalid values and creates their Events in the background."""

    def __init__(
        self,
        post: PostEvent,
        metrics: WatcherMetrics,
        instance: str,
        *,
        queue_size: int = 1000,
        remembered: int = 20_000,
        workers: int = 4,
        attempts: int = 3,
        first_retry_s: float = 0.5,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.post = post
        self.metrics = metrics
        self.instance = instance
        self.queue_size = queue_size
        self.remembered = remembered
        self.workers = workers
        self.attempts = attempts
        self.retry = Backoff(first_retry_s, math.inf)  # bounded by ``attempts``, not a cap
        self.now = now
        self._queue: asyncio.Queue[AnnotationWarning] = asyncio.Queue(queue_size)
        self._told: OrderedDict[str, None] = OrderedDict()
        """Keys of the values whose Event exists (created here, or 409): an LRU."""
        self._pending: set[str] = set()
        """Keys queued or being created: not queued again meanwhile."""
        self._last_failure_log = -1e9
        self._failures_unlogged = 0

    # -- the hot path: synchronous, never waits ----------------------------------------

    def check(self, observation: Observation) -> None:
        """Queue a warning for each invalid value of ``observation`` not told yet."""
        for warning in warnings_for(observation):
            self._offer(warning)

    def check_all(self, observations: Iterable[Observation]) -> None:
        """After a (re-)list: every object the log holds, told or not."""
        for observation in observations:
            self.check(observation)

    def _offer(self, warning: AnnotationWarning) -> None:
        key = warning.key
        if key in self._pending:
            return
        if key in self._told:
            self._told.move_to_end(key)
            return
        try:
            self._queue.put_nowait(warning)
        except asyncio.QueueFull:
            self.metrics.k8s_events.labels("dropped").inc()
            return
        self._pending.add(key)

    # -- the background ---------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing queued nor being created (tests and shutdown)."""
        return not self._pending

    async def run(self) -> None:
        """The workers, until cancelled (the end of the leader's cycle). What is still
        queued then is dropped; the next leader's list looks at every object again."""
        try:
            async with Supervisor() as tasks:
                for i in range(self.workers):
                    tasks.start(self._work(), name=f"annotation-events-{i}")
                await tasks.wait()
        finally:
            self._pending.clear()
            self._queue = asyncio.Queue(self.queue_size)

    async def _work(self) -> None:
        while True:
            warning = await self._queue.get()
            try:
                await self._tell(warning)
            except Exception as exc:  # never let a warning stop the others
                self._failed(warning, f"{type(exc).__name__}: {exc}", status=None)
            finally:
                self._pending.discard(warning.key)
                self._queue.task_done()

    async def _tell(self, warning: AnnotationWarning) -> None:
        body = event_body(warning, self.instance, self.now())
        for attempt in range(1, self.attempts + 1):
            try:
                await self.post(warning.namespace, body)
            except KubeApiError as exc:
                if exc.status == 409:
                    self.metrics.k8s_events.labels("exists").inc()
                    self._remember(warning.key)
                    return
                if exc.retryable and attempt < self.attempts:
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                self._failed(warning, str(exc), status=exc.status)
                return
            self.metrics.k8s_events.labels("created").inc()
            self.metrics.invalid_annotations.labels(warning.invalid.annotation).inc()
            self._remember(warning.key)
            log.info(
                "watcher.invalid_annotation",
                kind=warning.kind,
                namespace=warning.namespace,
                name=warning.name,
                annotation=warning.invalid.annotation,
                k8s_event=body["metadata"]["name"],
            )
            return

    def _remember(self, key: str) -> None:
        self._told[key] = None
        self._told.move_to_end(key)
        while len(self._told) > self.remembered:
            self._told.popitem(last=False)

    def _failed(self, warning: AnnotationWarning, error: str, *, status: int | None) -> None:
        """Counted always; logged at most once a minute (a Job of 1,000 pods that all
        carry the same bad value, with no RBAC for Events, is one line, not 1,000)."""
        self.metrics.k8s_events.labels("failed").inc()
        clock = time.monotonic()
        if clock - self._last_failure_log < 60:
            self._failures_unlogged += 1
            return
        hint = (
            " (grant the watcher's service account create on events.events.k8s.io)"
            if status == 403
            else ""
        )
        log.warning(
            "watcher.event_failed",
            kind=warning.kind,
            namespace=warning.namespace,
            name=warning.name,
            annotation=warning.invalid.annotation,
            error=error + hint,
            not_logged_since=self._failures_unlogged,
        )
        self._last_failure_log = clock
        self._failures_unlogged = 0
