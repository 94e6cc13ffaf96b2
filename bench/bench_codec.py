"""Decoding Kafka records into messages: the first cost of every consumer.

    uv run python bench/bench_codec.py [--records 50000]

Encodes a realistic mix of Job and pod observations (as the watcher writes
them, see bench_killer.observations) and times ``CODEC.decode`` over them in
CPU time of this process: headers checked, JSON parsed and validated into the
pydantic model. Prints records/s and microseconds per record, and the share
of the JSON validation alone.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from bench.bench_killer import observations
from services.runtime.memory import tune_gc
from services.runtime.messages import CODEC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep every decoded message, as a consumer that builds state does",
    )
    parser.add_argument(
        "--service-gc",
        action="store_true",
        help="with the collector thresholds the services use (services/runtime/memory.py)",
    )
    args = parser.parse_args()
    if args.service_gc:
        tune_gc()
    now = datetime.now(UTC)
    records = [CODEC.encode(m, source="/watcher", time=now) for m in observations(args.records)]
    size = sum(len(r.value) for r in records) / len(records)

    started = time.process_time()
    decoded: list[Any] = []
    for record in records:
        message = CODEC.decode(record.headers, record.value).message
        if args.keep or not decoded:
            decoded.append(message)
    decode_s = time.process_time() - started
    if not args.keep:
        decoded = [CODEC.decode(r.headers, r.value).message for r in records]

    started = time.process_time()
    for record, message in zip(records, decoded, strict=True):
        type(message).model_validate_json(record.value)
    validate_s = time.process_time() - started

    n = len(records)
    mode = "kept" if args.keep else "discarded"
    gc_mode = "service thresholds" if args.service_gc else "CPython default thresholds"
    print(f"records:            {n:,} (mean body {size:.0f} B), {mode}, {gc_mode}")
    print(f"decode:             {n / decode_s:,.0f} records/s, {decode_s / n * 1e6:.1f} us/record")
    print(f"  of which JSON validation: {validate_s / n * 1e6:.1f} us/record")


if __name__ == "__main__":
    main()
