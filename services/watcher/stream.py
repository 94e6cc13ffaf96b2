"""List-then-watch of one kind of Kubernetes object, over raw HTTP lines.

This is client-go's reflector in small: list (paginated) to learn the
current objects and a resourceVersion, then watch from that version with
bookmarks (the runtime's :func:`~services.runtime.kube_watch.watch`: it
resumes from the last version seen after a dropped connection); on ``410
Gone`` (the version was compacted away) list again and let the caller diff.
Lines are decoded by msgspec straight into the structs of
:mod:`services.watcher.wire`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic

import msgspec
from kubernetes_asyncio import client

from services.runtime.kube import raw_request
from services.runtime.kube_watch import Gone, Interruption, watch
from services.runtime.logging import get_logger

from . import wire
from .wire import ObjectT

log = get_logger(__name__)


@dataclass(frozen=True)
class Kind(Generic[ObjectT]):
    """Where a kind of object lives in the API and how its lines parse."""

    name: str
    api_prefix: str  # "/api/v1" or "/apis/batch/v1"
    plural: str
    namespaced: bool
    object_type: type[ObjectT]

    def path(self, namespace: str | None) -> str:
        if namespace and self.namespaced:
            return f"{self.api_prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.api_prefix}/{self.plural}"


PODS = Kind("Pod", "/api/v1", "pods", True, wire.Pod)
JOBS = Kind("Job", "/apis/batch/v1", "jobs", True, wire.Job)
NODES = Kind("Node", "/api/v1", "nodes", False, wire.Node)
CLAIMS = Kind(
    "PersistentVolumeClaim", "/api/v1", "persistentvolumeclaims", True, wire.PersistentVolumeClaim
)


@dataclass
class WatchEvent(Generic[ObjectT]):
    type: str  # ADDED | MODIFIED | DELETED
    obj: ObjectT


@dataclass
class StreamStats:
    lines: int = 0
    malformed: int = 0
    bookmarks: int = 0
    restarts: int = 0
    relists: int = 0
    last_error: str | None = None
    malformed_samples: list[str] = field(default_factory=list)


class ResourceStream(Generic[ObjectT]):
    """Lists and watches one kind in one scope (a namespace, or all)."""

    def __init__(
        self,
        api: client.ApiClient,
        kind: Kind[ObjectT],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        page_size: int = 500,
        watch_timeout_s: int = 300,
    ) -> None:
        self.api = api
        self.kind: Kind[ObjectT] = kind
        self._line_decoder = msgspec.json.Decoder(wire.WatchLine[kind.object_type])  # type: ignore[name-defined]
        self._list_decoder = msgspec.json.Decoder(wire.ObjectList[kind.object_type])  # type: ignore[name-defined]
        self.namespace = namespace
        self.label_selector = label_selector
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.resource_version = ""
        self.stats = StreamStats()

    def _selector_query(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.label_selector)] if self.label_selector else []

    async def list(self) -> list[ObjectT]:
        """Every current object (all pages) and remember the list's version."""
        items: list[ObjectT] = []
        token: str | None = None
        while True:
            query = [("limit", str(self.page_size)), *self._selector_query()]
            if token:
                query.append(("continue", token))
            response = await raw_request(
                self.api, "GET", self.kind.path(self.namespace), query=query, timeout=60.0
            )
            try:
                body = await response.read()
            finally:
                response.release()
            page = self._list_decoder.decode(body)
            items.extend(page.items)
            token = page.metadata.continue_
            if not token:
                self.resource_version = page.metadata.resource_version
                self.stats.relists += 1
                return items

    async def watch(self) -> AsyncIterator[WatchEvent[ObjectT]]:
        """Changes from the remembered version on, forever.

        Reconnects after a dropped connection or a server-side timeout from
        the last version seen (bookmarks keep it fresh); raises
        :class:`Gone` when that version is no longer available.
        """
        async for event in watch(
            self.api,
            self.kind.path(self.namespace),
            resource_version=lambda: self.resource_version,
            parse=self._line,
            timeout_s=self.watch_timeout_s,
            selectors=self._selector_query(),
            on_interrupted=self._interrupted,
        ):
            yield event

    def _line(self, line: bytes) -> WatchEvent[ObjectT] | None:
        self.stats.lines += 1
        return self.parse_line(line)

    def _interrupted(self, why: Interruption) -> None:
        self.stats.restarts += 1
        self.stats.last_error = why.error
        if why.dropped:
            log.warning("watch.dropped", kind=self.kind.name, error=why.error)
        else:
            log.warning(
                "watch.retry", kind=self.kind.name, error=why.error, retry_in_s=why.retry_in_s
            )

    def parse_line(self, line: bytes) -> WatchEvent[ObjectT] | None:
        """One watch line: an event to hand on, or ``None`` (bookmark, malformed).

        Raises :class:`Gone` for a 410 ERROR event.
        """
        try:
            parsed = self._line_decoder.decode(line)
        except wire.DecodeError:
            self._error_line(line)  # an ERROR's Status does not decode as our object
            return None
        kind, obj = parsed.type, parsed.object
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
            self.resource_version = obj.metadata.resource_version
            return None
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            self._error_line(line)
            return None
        if obj.metadata.resource_version:
            self.resource_version = obj.metadata.resource_version
        return WatchEvent(kind, obj)

    def _error_line(self, line: bytes) -> None:
        try:
            error = msgspec.json.decode(line, type=wire.ErrorLine)
        except wire.DecodeError:
            self._malformed(line)
            return
        if error.type == "ERROR" and (
            error.object.code == 410 or error.object.reason in ("Expired", "Gone")
        ):
            raise Gone(error.object.message or "resourceVersion too old")
        self._malformed(line)

    def _malformed(self, line: bytes) -> None:
        """Count and skip a line we cannot read; keep a few for the logs."""
        self.stats.malformed += 1
        sample = line[:200].decode(errors="replace")
        if len(self.stats.malformed_samples) < 5:
            self.stats.malformed_samples.append(sample)
        log.error("watch.malformed_line", kind=self.kind.name, sample=sample)
