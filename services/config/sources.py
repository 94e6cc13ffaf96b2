"""Where a configuration comes from: a watched ConfigMap or a polled file.

Each source is an async iterator of :class:`Content`: the current text (or
``None`` when the ConfigMap or file is absent), who changed it and where it
came from. A source yields each distinct state once (it dedupes on the
ConfigMap's resourceVersion, the file's mtime, size and inode); whether the
text means anything new is for the service to decide (by digest).

The HTTP API is the third source; it has no iterator: ``PUT /config``
submits directly (see :mod:`services.config.api`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kubernetes_asyncio import client

from services.runtime.kube import KubeApiError, request_json
from services.runtime.kube_watch import Gone, Interruption, watch
from services.runtime.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Content:
    text: str | None
    """The JSON document; ``None`` when the source has none (absent, deleted, no data key)."""
    author: str
    origin: str
    """``configmap:<ns>/<name>@<resourceVersion>`` or ``file:<path>``."""
    problem: str | None = None
    """Why there is no text, for readiness and Events."""
    involved: dict[str, Any] = field(default_factory=dict)
    """The ConfigMap as an Event's ``involvedObject`` (empty for a file)."""


def _log_interruption(why: Interruption) -> None:
    if why.dropped:
        log.warning("config.watch_dropped", error=why.error)
    else:
        log.warning("config.watch_retry", error=why.error, retry_in_s=why.retry_in_s)


def last_manager(metadata: dict[str, Any]) -> str:
    """The field manager of the newest ``managedFields`` entry ("kubectl-edit", "helm")."""
    entries = [e for e in metadata.get("managedFields") or [] if isinstance(e, dict)]
    if not entries:
        return "unknown"
    newest = max(enumerate(entries), key=lambda item: (str(item[1].get("time") or ""), item[0]))
    return str(newest[1].get("manager") or "unknown")


class ConfigMapSource:
    """List then watch one ConfigMap (field selector on its name)."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        key: str,
        *,
        watch_timeout_s: int = 300,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.key = key
        self.watch_timeout_s = watch_timeout_s
        self.resource_version = ""
        self._last: tuple[str, str] | None = None  # (uid, resourceVersion) yielded last

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    def content(self, obj: dict[str, Any] | None) -> Content | None:
        """What one observed state of the ConfigMap says; None when already yielded."""
        if obj is None:
            state = ("", "")
            if self._last == state:
                return None
            self._last = state
            return Content(
                None,
                "",
                f"configmap:{self.where}",
                problem=f"ConfigMap {self.where} not found",
            )
        meta = obj.get("metadata") or {}
        uid, rv = str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")
        if self._last == (uid, rv):
            return None
        self._last = (uid, rv)
        involved = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": self.namespace,
            "name": self.name,
            "uid": uid,
            "resourceVersion": rv,
        }
        origin = f"configmap:{self.where}@{rv}"
        author = last_manager(meta)
        data = obj.get("data") or {}
        if self.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            problem = f"ConfigMap {self.where} has no data key {self.key} (it has: {keys})"
            return Content(None, author, origin, problem=problem, involved=involved)
        return Content(str(data[self.key]), author, origin, involved=involved)

    async def changes(self) -> AsyncIterator[Content]:
        while True:
            obj = await self._get()
            first = self.content(obj)
            if first is not None:
                yield first
            try:
                async for event_type, watched in self._watch():
                    change = self.content(None if event_type == "DELETED" else watched)
                    if change is not None:
                        yield change
            except Gone as exc:
                log.info("config.configmap_gone", configmap=self.where, detail=str(exc))

    async def _get(self) -> dict[str, Any] | None:
        query = [("fieldSelector", f"metadata.name={self.name}")]
        body = orjson.loads(await request_json(self.api, "GET", self._path, query=query))
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        items = body.get("items") or []
        return items[0] if items else None

    async def _watch(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events from the remembered version until 410 Gone; reconnects otherwise."""
        async for event in watch(
            self.api,
            self._path,
            resource_version=lambda: self.resource_version,
            parse=self._parse,
            timeout_s=self.watch_timeout_s,
            selectors=[("fieldSelector", f"metadata.name={self.name}")],
            on_interrupted=_log_interruption,
        ):
            yield event

    def _parse(self, line: bytes) -> tuple[str, dict[str, Any]] | None:
        """One watch line: (type, object) of a change; None for a bookmark. Raises
        :class:`Gone` for a 410 ERROR event, :class:`KubeApiError` for another."""
        event = orjson.loads(line)
        event_type = event.get("type")
        obj = event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Gone(str(obj.get("message") or "resourceVersion too old"))
            raise KubeApiError(
                int(obj.get("code") or 0),
                str(obj.get("reason") or "WatchError"),
                str(obj.get("message") or ""),
                verb="WATCH",
                path=self._path,
            )
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = str(rv)
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            return event_type, obj
        return None

    async def post_event(
        self, content: Content, *, reason: str, message: str, warning: bool, reporter: str
    ) -> None:
        """A Kubernetes Event on the ConfigMap (best effort: a failure is only logged).

        Named after the resourceVersion and the reason, so one state of the
        ConfigMap gets one Event of each kind, however often it is re-read.
        """
        if not content.involved:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rv = content.involved.get("resourceVersion", "")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{self.name}.{rv}.{reason.lower()}",
                "namespace": self.namespace,
            },
            "involvedObject": content.involved,
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "jobreaper-config"},
            "reportingComponent": "jobreaper-config",
            "reportingInstance": reporter[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await request_json(
                self.api, "POST", f"/api/v1/namespaces/{self.namespace}/events", body=body
            )
        except KubeApiError as exc:
            if exc.status != 409:  # 409: this state's Event exists already
                log.warning("config.event_failed", reason=reason, error=str(exc))


class FileSource:
    """Poll one file's mtime, ctime, size and inode; read it again when they change."""

    def __init__(self, path: str, *, poll_s: float = 1.0) -> None:
        self.path = path
        self.poll_s = poll_s
        self._last: tuple[int, ...] | None = None

    def _stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        # ctime too: a chmod that makes an unreadable file readable changes only it.
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

    def poll(self) -> Content | None:
        """The file's content if it changed since the last poll (or first time), else None."""
        stamp = self._stamp()
        if stamp is None:
            if self._last == ():
                return None
            self._last = ()
            return Content(None, "", f"file:{self.path}", problem=f"file {self.path} not found")
        if stamp == self._last:
            return None
        self._last = stamp
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            return Content(None, "", f"file:{self.path}", problem=f"cannot read {self.path}: {exc}")
        return Content(text, self.path, f"file:{self.path}")

    async def changes(self) -> AsyncIterator[Content]:
        while True:
            change = self.poll()
            if change is not None:
                yield change
            await asyncio.sleep(self.poll_s)
