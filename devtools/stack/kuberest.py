"""A tiny synchronous client for the stack's API server (admin client certificate).

The stack manager is synchronous and must not depend on an event loop, so
it talks JSON over ``http.client`` for the few calls it makes (readiness,
nodes, namespaces). Services and tests use kubernetes-asyncio.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from devtools.stack.certs import Pki


class KubeRestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeRest:
    def __init__(self, port: int, pki: Pki, *, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
        ctx.load_cert_chain(str(pki.client_crt("admin")), str(pki.client_key("admin")))
        self._ctx = ctx

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self._ctx, timeout=self.timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = self.request(method, path, body, **kw)
        if status >= 300:
            try:
                message = json.loads(data).get("message", data.decode(errors="replace"))
            except ValueError:
                message = data.decode(errors="replace")
            raise KubeRestError(status, str(message)[:300])
        return json.loads(data) if data else None

    def readyz(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz")
        except (OSError, http.client.HTTPException):
            return False
        return status == 200
