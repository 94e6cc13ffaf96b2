"""The API server's clock, as seen from this process.

Every time jobreaper compares comes from a clock it does not own: a Pod's
``creationTimestamp`` and ``deletionTimestamp`` and a Job's ``startTime`` are
the API server's (and the controller manager's, on the same time base in a
sane cluster), a container's ``startedAt`` is the kubelet's. A killer whose own
clock runs 30 s ahead would kill 30 s early. So the killer decides on the
**API server's clock**: ``ApiClock.now()`` is this host's clock plus an offset
measured from the ``Date`` header of ``GET /version``. (The watcher and the
executor stamp with their hosts' clocks: two services' lower bounds differ by
their errors, which would reorder a Job's timeline.)

The ``Date`` header has whole seconds: the server's time ``s`` at the answer
lies in ``[D, D + 1)``, and our clock read ``c`` at that moment in ``[t0, t1]``
(before sending, after receiving). ``D - t1`` is therefore a **lower bound** of
the offset ``s - c``, and the largest of several lower bounds is still one: the
services never believe the API server's time to be later than it is, so a
deadline on its clock is never acted on early. Samples taken at varied
sub-second phases make the bound tight (about 50 ms plus half a round trip
with a few dozen samples): a first burst at start, then one every
``every_s`` with jitter; bounds older than ``window`` samples are forgotten,
so a step of the local clock (NTP) is followed.

The kubelet's clock is not measured (jobreaper does not talk to kubelets): the
running timeout trusts it to agree with the API server's (docs/core.md, "which
clock each rule trusts").

``JOBREAPER_FAULT_CLOCK_SKEW_S`` shifts this process's local clock, for tests
that prove all of this with a killer 30 s ahead or behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

from kubernetes_asyncio import client

from .logging import get_logger

log = get_logger(__name__)

SKEW_ENV: Final = "JOBREAPER_FAULT_CLOCK_SKEW_S"


def _skew_from_env() -> timedelta:
    raw = os.environ.get(SKEW_ENV, "")
    try:
        return timedelta(seconds=float(raw)) if raw else timedelta(0)
    except ValueError:
        return timedelta(0)


_SKEW: Final = _skew_from_env()


def local_now() -> datetime:
    """This host's clock (UTC), shifted by ``JOBREAPER_FAULT_CLOCK_SKEW_S`` in tests."""
    return datetime.now(UTC) + _SKEW


Probe = Callable[[], Awaitable[str]]
"""One request to the API server, returning its ``Date`` header."""


class ApiClock:
    """``now()`` on the API server's clock (a lower bound of it; see the module doc).

    Until a first sample arrives, ``now()`` is the local clock and ``measured`` is
    False; a service that must not act early waits for ``measured`` (the killer
    does, up to ``first_sample_timeout_s``, then goes on with its own clock and
    says so)."""

    def __init__(
        self,
        local: Callable[[], datetime] = local_now,
        *,
        window: int = 60,
    ) -> None:
        self.local = local
        self.bounds: deque[timedelta] = deque(maxlen=window)
        self.offset = timedelta(0)
        self.measured = False
        self.settled = False
        """The first burst is done: the bound is as tight as it gets."""
        self.samples = 0
        self.failures = 0
        self.last_rtt_s = 0.0

    def now(self) -> datetime:
        return self.local() + self.offset

    def sample(self, sent: datetime, date_header: str, received: datetime) -> bool:
        """Fold one answer: ``date_header`` read between ``sent`` and ``received``
        (local clock). False if the header is not an HTTP date."""
        try:
            server = parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            return False
        if server.tzinfo is None:
            server = server.replace(tzinfo=UTC)
        self.bounds.append(server - received)
        self.offset = max(self.bounds)
        self.measured = True
        self.samples += 1
        self.last_rtt_s = (received - sent).total_seconds()
        return True

    async def probe_once(self, probe: Probe) -> bool:
        sent = self.local()
        try:
            date_header = await probe()
        except Exception as exc:  # an unreachable API server: keep the last offset
            self.failures += 1
            log.warning("clock.probe_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return self.sample(sent, date_header, self.local())

    async def run(self, probe: Probe, *, every_s: float = 5.0, burst: int = 25) -> None:
        """Sample for ever: ``burst`` samples spread evenly over a second (each phase
        of the server's second is hit within 1/burst s, so the bound is that tight
        at once: 40 ms plus the round trip), then one every ``every_s`` +- 20% (at
        random phases: the bound keeps tightening)."""
        for _ in range(burst):
            await self.probe_once(probe)
            await asyncio.sleep(1.0 / burst)
        self.settled = self.measured
        log.info(
            "clock.measured",
            offset_s=round(self.offset.total_seconds(), 3),
            samples=self.samples,
            rtt_s=round(self.last_rtt_s, 4),
        )
        while True:
            await asyncio.sleep(every_s * random.uniform(0.8, 1.2))
            await self.probe_once(probe)

    async def wait_measured(self, timeout_s: float) -> bool:
        """Wait for the first burst (about a second; a single sample's bound can be up
        to a second loose, which would make every step late by it), at most
        ``timeout_s``; True if measured at all by then."""
        deadline = time.monotonic() + timeout_s
        while not self.settled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.measured


def version_probe(api: client.ApiClient) -> Probe:
    """A probe that asks ``GET /version`` of a kubernetes-asyncio ``ApiClient`` (any
    authenticated identity may: ``system:public-info-viewer``)."""

    async def probe() -> str:
        _, _, headers = await client.VersionApi(api).get_code_with_http_info(_request_timeout=5)
        return str(headers.get("Date", ""))

    return probe


__all__ = ["SKEW_ENV", "ApiClock", "Probe", "local_now", "version_probe"]
