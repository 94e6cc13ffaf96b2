"""Watch-line parsing: jobreaper's slim path vs kubernetes-asyncio's models.

    uv run python bench/bench_parse.py [--lines 20000]

Both sides start from the same realistic ~3.7 KB pod watch line (bytes, as
read from the socket) and end with an object the code can use: for
jobreaper a ``PodObserved``; for kubernetes-asyncio a ``V1Pod`` built by
``ApiClient.deserialize`` after ``json.loads`` (what ``Watch`` does). CPU
time of this process is measured, so a busy machine skews little. Targets
(issue 4): >= 50,000 lines/s on one core and >= 40x kubernetes-asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration

from bench.sample_objects import job_pod, watch_line
from services.watcher.convert import pod_observation
from services.watcher.stream import PODS, ResourceStream


class _Response:
    def __init__(self, data: str) -> None:
        self.data = data


def _rate(fn: Callable[[bytes], Any], lines: Sequence[bytes], rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.process_time()
        for line in lines:
            fn(line)
        best = max(best, len(lines) / (time.process_time() - start))
    return best


async def _api_client() -> ApiClient:
    return ApiClient(Configuration())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()

    lines = [watch_line(job_pod(i % 5000)) for i in range(args.lines)]
    stream = ResourceStream(api=None, kind=PODS)  # type: ignore[arg-type]
    now = datetime.now(UTC)

    def slim(line: bytes) -> Any:
        event = stream.parse_line(line)
        assert event is not None
        return pod_observation(event.obj, "modified", now)

    api = asyncio.run(_api_client())  # the client needs a loop only to exist

    def generated(line: bytes) -> Any:
        event = json.loads(line)
        # deserialize reads only .data of the REST response it is given.
        return api.deserialize(_Response(json.dumps(event["object"])), "V1Pod")  # type: ignore[arg-type]

    ours = _rate(slim, lines)
    theirs = _rate(generated, lines[: max(1, args.lines // 20)])
    size = sum(map(len, lines)) / len(lines)
    print(f"line size             {size:,.0f} bytes")
    print(f"jobreaper slim parse  {ours:,.0f} lines/s (one core, CPU time)")
    print(f"kubernetes-asyncio    {theirs:,.0f} lines/s (V1Pod via ApiClient.deserialize)")
    print(f"speed-up              {ours / theirs:.1f}x")
    asyncio.run(api.close())


if __name__ == "__main__":
    main()
