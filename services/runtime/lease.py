"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go does it.

Only the holder of the Lease does the work (the watcher publishes; the
config service writes versions). The holder renews every
``retry_period_s``; a follower takes over when it has seen no change of the
Lease for ``lease_duration_s`` of *its own* clock (remote clocks are never
compared). A holder that cannot renew for ``renew_deadline_s`` stops its
work before anyone else may start, so two holders never overlap while
clocks run at the same rate.

Why not ``kubernetes_asyncio.leaderelection`` (read in 36.1.0, the version
locked): it lacks what the watcher and the config service rely on.

- No release on stop: its ``run()`` neither cancels the work nor gives the
  Lease up on shutdown, so a rolling update would leave the Lease held for a
  whole ``lease_duration`` (here: cleared at once, a follower takes over).
- One term only: ``run()`` returns after losing the Lease instead of standing
  again, never notices that the work ended (its renew loop goes on), and
  drops the work's error (the task is never awaited); ``run`` here re-raises
  it and ends the service.
- No fatal path: a 403 on the Lease is logged and retried for ever, where
  :class:`PermissionDenied` here stops the process with the missing grant;
  a connection error (not an ``ApiException``) ends its ``run()`` instead.
- Wall clock: it measures the renew deadline and expiry with ``time.time()``
  and writes ``renewTime`` as local time with a ``Z`` suffix (wrong off UTC);
  here every duration is measured on ``time.monotonic`` (injectable for tests).
- Its config refuses periods under 1 s (``retry_period``, ``renew_deadline``):
  our scaled settings give 0.8 s for a 4 s Lease (the config service's stack
  tests).
- No ``is_leader`` for readiness (``standby: held by another replica``) and
  ``leaseTransitions`` is never counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from kubernetes_asyncio import client

from .kube import KubeApiError, PermissionDenied, request_json
from .logging import get_logger

log = get_logger(__name__)


def _micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    lease_duration_s: float = 10.0
    renew_deadline_s: float = 7.0
    retry_period_s: float = 2.0

    @classmethod
    def scaled(cls, namespace: str, name: str, identity: str, duration_s: float) -> LeaseSettings:
        """client-go's proportions for a given lease duration: give up leading at 70 % of
        it (before anyone may take over), renew five times per duration."""
        return cls(
            namespace=namespace,
            name=name,
            identity=identity,
            lease_duration_s=duration_s,
            renew_deadline_s=duration_s * 0.7,
            retry_period_s=max(0.5, duration_s / 5),
        )


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaseSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock
        self.is_leader = False
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._last_renew = 0.0

    @property
    def _path(self) -> str:
        s = self.settings
        return f"/apis/coordination.k8s.io/v1/namespaces/{s.namespace}/leases/{s.name}"

    async def try_acquire_or_renew(self) -> bool:
        """One round of the election; True while we hold the Lease."""
        s = self.settings
        now = datetime.now(UTC)
        spec: dict[str, Any] = {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": int(s.lease_duration_s),
            "renewTime": _micro_time(now),
        }
        try:
            lease = orjson.loads(await request_json(self.api, "GET", self._path))
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            spec.update(acquireTime=_micro_time(now), leaseTransitions=0)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": spec,
            }
            return await self._write("POST", self._path.rsplit("/", 1)[0], body)
        current = lease.get("spec", {})
        holder = current.get("holderIdentity") or ""
        record = (holder, current.get("renewTime") or "")
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        expired = self.clock() - self._observed_at > s.lease_duration_s
        if holder and holder != s.identity and not expired:
            return False
        if holder == s.identity:
            spec["acquireTime"] = current.get("acquireTime") or _micro_time(now)
            spec["leaseTransitions"] = current.get("leaseTransitions", 0)
        else:
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions", 0)) + 1
        lease["spec"] = spec  # metadata.resourceVersion makes the PUT conditional
        return await self._write("PUT", self._path, lease)

    async def _write(self, verb: str, path: str, body: dict[str, Any]) -> bool:
        try:
            await request_json(self.api, verb, path, body=body)
        except KubeApiError as exc:
            if exc.status == 409:  # somebody else wrote first: not ours this round
                return False
            raise
        self._last_renew = self.clock()
        return True

    async def release(self) -> None:
        """Give the Lease up at shutdown so a follower takes over at once."""
        if not self.is_leader:
            return
        self.is_leader = False
        with contextlib.suppress(KubeApiError):
            lease = orjson.loads(await request_json(self.api, "GET", self._path))
            if lease.get("spec", {}).get("holderIdentity") == self.settings.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await request_json(self.api, "PUT", self._path, body=lease)

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` whenever we lead; cancel it the moment we may not.

        Returns when ``work`` returns by itself (and re-raises its error);
        ``work`` starts again after a lost and regained leadership. When
        this coroutine is cancelled (shutdown), the work is cancelled and
        the Lease released so a follower takes over at once.
        """
        try:
            while True:
                await self._acquire()
                log.info(
                    "lease.acquired", lease=self.settings.name, identity=self.settings.identity
                )
                task = asyncio.create_task(work())
                try:
                    await self._hold(task)
                finally:
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                if not task.cancelled():
                    task.result()  # re-raise the work's own error, if any
                    return
                self.is_leader = False
        finally:
            await self.release()

    async def _hold(self, task: asyncio.Task[None]) -> None:
        """Renew while ``task`` runs; return when it ends or the Lease is lost."""
        s = self.settings
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=s.retry_period_s)
            if done:
                return
            try:
                renewed = await self.try_acquire_or_renew()
            except KubeApiError as exc:
                log.warning("lease.renew_failed", error=str(exc))
                renewed = False
            if not renewed and self.clock() - self._last_renew > s.renew_deadline_s:
                log.warning("lease.lost", lease=s.name, identity=s.identity)
                return

    async def _acquire(self) -> None:
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    return
            except KubeApiError as exc:
                if exc.status in (401, 403):
                    s = self.settings
                    raise PermissionDenied(
                        f"the API server denied {exc.verb} on the Lease {s.namespace}/{s.name} "
                        f"(HTTP {exc.status}): grant get, create and update on "
                        f"leases.coordination.k8s.io in namespace {s.namespace} ({exc.message})"
                    ) from exc
                log.warning("lease.acquire_failed", error=str(exc))
            await asyncio.sleep(self.settings.retry_period_s)
