"""The one watch loop, against a local HTTP server that plays the API server: it
resumes from the version the parser kept, reconnects after a clean end at once and
after a drop or a 5xx with backoff (reset by each event), and ends on 410 or a 403."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes_asyncio import client

from services.runtime.kube import KubeApiError
from services.runtime.kube_watch import Gone, Interruption, watch
from services.runtime.retry import Backoff

PATH = "/api/v1/namespaces/ns/configmaps"

Answer = Callable[[web.Request], Any]


@dataclass
class FakeApiServer:
    """Answers each watch request with the next scripted answer; keeps the queries."""

    answers: list[Answer] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        answer = self.answers.pop(0)
        response: web.StreamResponse = await answer(request)
        return response


def line(kind: str, rv: str, name: str = "cm") -> bytes:
    body = {"type": kind, "object": {"metadata": {"name": name, "resourceVersion": rv}}}
    return orjson.dumps(body) + b"\n"


def stream(*lines: bytes, drop: bool = False) -> Answer:
    """A watch response of ``lines``; ``drop``: the connection breaks after them."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for one in lines:
            await response.write(one)
        if drop:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    return answer


def status(code: int, reason: str) -> Answer:
    async def answer(_: web.Request) -> web.Response:
        body = {"kind": "Status", "code": code, "reason": reason, "message": reason}
        return web.json_response(body, status=code)

    return answer


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[tuple[FakeApiServer, client.ApiClient]]:
    server = FakeApiServer()
    app = web.Application()
    app.router.add_get(PATH, server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    api = client.ApiClient(configuration)
    try:
        yield server, api
    finally:
        await api.close()
        await runner.cleanup()


class Follower:
    """What a caller keeps: the newest resourceVersion, and what interrupted it."""

    def __init__(self, rv: str = "1") -> None:
        self.rv = rv
        self.interruptions: list[Interruption] = []
        self.slept: list[float] = []

    def parse(self, raw: bytes) -> tuple[str, str] | None:
        event = orjson.loads(raw)
        if event["type"] == "ERROR":
            raise Gone("expired")
        self.rv = event["object"]["metadata"]["resourceVersion"]
        return None if event["type"] == "BOOKMARK" else (event["type"], self.rv)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def watch(self, api: client.ApiClient) -> AsyncIterator[tuple[str, str]]:
        return watch(
            api,
            PATH,
            resource_version=lambda: self.rv,
            parse=self.parse,
            timeout_s=7,
            selectors=[("fieldSelector", "metadata.name=cm")],
            on_interrupted=self.interruptions.append,
            backoff=Backoff(0.2, 0.5),
            sleep=self.sleep,
        )


async def take(events: AsyncIterator[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    out = []
    async for event in events:
        out.append(event)
        if len(out) == n:
            break
    return out


async def test_resumes_from_the_last_version_with_backoff_only_after_failures(
    served: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = served
    server.answers[:] = [
        stream(line("ADDED", "5"), line("BOOKMARK", "6")),  # clean end: again at once
        status(500, "InternalError"),  # retryable: 0.2 s
        status(429, "TooManyRequests"),  # 0.4 s
        stream(line("MODIFIED", "7"), drop=True),  # an event resets the backoff: 0.2 s
        stream(b"\n", line("DELETED", "8")),
    ]
    server.queries.clear()
    follower = Follower()
    events = await take(follower.watch(api), 3)
    assert events == [("ADDED", "5"), ("MODIFIED", "7"), ("DELETED", "8")]
    assert [q["resourceVersion"] for q in server.queries] == ["1", "6", "6", "6", "7"]
    assert all(
        q["watch"] == "1"
        and q["allowWatchBookmarks"] == "true"
        and q["timeoutSeconds"] == "7"
        and q["fieldSelector"] == "metadata.name=cm"
        for q in server.queries
    )
    assert follower.slept == [0.2, 0.4, 0.2]
    assert [(i.dropped, i.retry_in_s) for i in follower.interruptions] == [
        (False, 0.2),
        (False, 0.4),
        (True, 0.2),
    ]
    assert "HTTP 500" in follower.interruptions[0].error


async def test_the_backoff_is_capped(served: tuple[FakeApiServer, client.ApiClient]) -> None:
    server, api = served
    server.answers[:] = [status(503, "Unavailable") for _ in range(4)]
    server.answers.append(stream(line("ADDED", "2")))
    follower = Follower()
    assert await take(follower.watch(api), 1) == [("ADDED", "2")]
    assert follower.slept == [0.2, 0.4, 0.5, 0.5]


@pytest.mark.parametrize(
    "answer",
    [status(410, "Expired"), stream(b'{"type": "ERROR", "object": {"code": 410}}\n')],
    ids=["http-410", "error-line"],
)
async def test_gone_ends_the_watch(
    served: tuple[FakeApiServer, client.ApiClient], answer: Answer
) -> None:
    server, api = served
    server.answers[:] = [answer]
    with pytest.raises(Gone):
        await take(Follower().watch(api), 1)


async def test_a_refusal_no_retry_can_cure_ends_the_watch(
    served: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = served
    server.answers[:] = [status(403, "Forbidden")]
    with pytest.raises(KubeApiError) as raised:
        await take(Follower().watch(api), 1)
    assert raised.value.status == 403
