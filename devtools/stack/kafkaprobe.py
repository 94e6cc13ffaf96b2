"""Is the Kafka broker up? One Metadata (v1) request over a plain socket.

Synchronous and dependency-free, so the stack manager can ask without an
event loop. Ready means the broker answers a metadata request and lists
itself.
"""

from __future__ import annotations

import socket
import struct


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def metadata_brokers(host: str, port: int, *, timeout: float = 3.0) -> list[tuple[int, str, int]]:
    """The brokers (node id, host, port) a Metadata v1 request reports.

    Raises OSError when the broker cannot be reached or answers garbage.
    """
    api_key, api_version, correlation_id = 3, 1, 7
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + _string("jobreaper-stack")
    body = struct.pack(">i", 0)  # no topics (an empty array, not null: no auto-creation)
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size_raw = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", size_raw)
        if size <= 0 or size > 10_000_000:
            raise OSError(f"bad Kafka response size {size}")
        data = _recv_exact(sock, size)
    (got_id,) = struct.unpack_from(">i", data, 0)
    if got_id != correlation_id:
        raise OSError("Kafka answered another request")
    offset = 4
    (count,) = struct.unpack_from(">i", data, offset)
    offset += 4
    brokers = []
    for _ in range(max(count, 0)):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6
        broker_host = data[offset : offset + host_len].decode()
        offset += host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", data, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise OSError("Kafka closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def ready(host: str, port: int) -> bool:
    try:
        return len(metadata_brokers(host, port)) > 0
    except (OSError, struct.error, UnicodeDecodeError):
        return False
