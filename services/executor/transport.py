"""The real transport of :class:`~.apply.Applier`: the API server through kubernetes-asyncio."""

from __future__ import annotations

from typing import Any

import aiohttp
from kubernetes_asyncio import client

from services.runtime.kube import KubeApiError, raw_request

from .apply import Answer, Transport


def kube_transport(api: client.ApiClient) -> Transport:
    async def call(verb: str, path: str, body: Any, content_type: str, timeout: float) -> Answer:
        try:
            response = await raw_request(
                api, verb, path, body=body, content_type=content_type, timeout=timeout
            )
        except KubeApiError as exc:
            return Answer(exc.status, exc.reason, exc.message)
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Answer(0, type(exc).__name__, str(exc))
        finally:
            response.release()
        return Answer(response.status, response.reason or "", "", data)

    return call
