"""The Kubernetes API for every service: kubeconfig loading and raw requests.

kubernetes-asyncio provides authentication and transport; bodies are read
raw (``_preload_content=False``) and parsed by our own slim models, because
the client's generated models are far too slow for a watch firehose.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException


class KubeConfigError(Exception):
    """The kubeconfig (or in-cluster config) could not be loaded."""


class PermissionDenied(Exception):
    """Kafka or the API server refused this service what it must be allowed
    (RBAC, ACLs); retrying cannot help, so the process exits with the reason."""


class KubeApiError(Exception):
    """A non-2xx answer of the API server, with its Status if it sent one."""

    def __init__(self, status: int, reason: str, message: str, *, verb: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.verb = verb
        self.path = path
        super().__init__(f"{verb} {path}: HTTP {status} {reason}: {message}")

    @property
    def retryable(self) -> bool:
        """Throttling, server errors and timeouts are worth another try."""
        return self.status == 429 or self.status >= 500 or self.status == 0


async def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    """An API client from ``kubeconfig``, ``$KUBECONFIG``, or the in-cluster service account.

    Raises :class:`KubeConfigError` with a one-line reason when none loads.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    try:
        if path:
            if not os.path.exists(path):
                raise KubeConfigError(f"kubeconfig {path} does not exist")
            await config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = path or "in-cluster service account"
        raise KubeConfigError(f"cannot load Kubernetes config from {where}: {exc}") from exc
    return client.ApiClient(configuration)


async def raw_request(
    api: client.ApiClient,
    verb: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float | aiohttp.ClientTimeout | None = 30.0,
) -> aiohttp.ClientResponse:
    """Send a request and return the open response; raise on a non-2xx status.

    The caller reads (and releases) the body: a whole body with ``read()``,
    a watch stream line by line.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    try:
        response: aiohttp.ClientResponse = await api.call_api(
            path,
            verb,
            {},
            query or [],
            headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KubeApiError(0, type(exc).__name__, str(exc), verb=verb, path=path) from exc
    if 200 <= response.status < 300:
        return response
    raw = await response.read()
    response.release()
    reason, message = response.reason or "", raw.decode(errors="replace")[:500]
    try:
        status = orjson.loads(raw)
        if isinstance(status, dict):
            reason = str(status.get("reason") or reason)
            message = str(status.get("message") or message)
    except orjson.JSONDecodeError:
        pass
    raise KubeApiError(response.status, reason, message, verb=verb, path=path)


async def request_json(
    api: client.ApiClient,
    verb: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> bytes:
    """Send a request and return the whole body (bytes, for a slim parser)."""
    response = await raw_request(
        api, verb, path, query=query, body=body, content_type=content_type, timeout=timeout
    )
    try:
        return await response.read()
    finally:
        response.release()


async def kubeconfig_bearer_token(kubeconfig: str | None) -> str | None:
    """The bearer token the kubeconfig's current user sends (``token``,
    ``tokenFile``, an ``exec`` plugin, OIDC), for calling a service that reviews
    it; None when there is no kubeconfig or its user authenticates otherwise (a
    client certificate, a password). ``kubeconfig``: a path (or ``a:b`` list),
    else ``$KUBECONFIG``, else ``~/.kube/config``.

    Raises :class:`KubeConfigError` when a kubeconfig exists but does not load.
    """
    paths = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if not any(os.path.exists(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p):
        return None
    configuration = client.Configuration()
    try:
        await config.load_kube_config(config_file=paths, client_configuration=configuration)
        value = await configuration.get_api_key_with_prefix("BearerToken")
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise KubeConfigError(f"cannot load the kubeconfig {paths}: {exc}") from exc
    if isinstance(value, str) and value.startswith("Bearer "):
        return value.removeprefix("Bearer ").strip() or None
    return None
