"""The plugin's API calls: read a Job (and its pods and Events), and write its
kill-timestamp annotation with a JSON merge patch that names the resourceVersion
read, so that a kill state written meanwhile by jobreaper is never overlooked (409:
read again and decide again)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from kubernetes_asyncio import client

from services.runtime.kube import load_api_client, request_json


def kubeconfig_path(option: str | None) -> str | None:
    """As kubectl: ``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config`` if it
    exists, else (None) the in-cluster service account."""
    if option:
        return option
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.is_file() else None


async def connect(kubeconfig: str | None) -> client.ApiClient:
    """Raises KubeConfigError with one line when no configuration loads."""
    return await load_api_client(kubeconfig_path(kubeconfig))


def _job_path(namespace: str, name: str) -> str:
    return f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs/{quote(name)}"


async def read_job(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Raises KubeApiError (404: no such Job)."""
    job: dict[str, Any] = orjson.loads(await request_json(api, "GET", _job_path(namespace, name)))
    return job


async def set_kill_timestamp(
    api: client.ApiClient, job: dict[str, Any], annotation: str, value: str | None
) -> dict[str, Any]:
    """Set (``None``: remove) one annotation of the Job as read; 409 if it changed since."""
    meta = job["metadata"]
    patch = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "annotations": {annotation: value},
        }
    }
    written: dict[str, Any] = orjson.loads(
        await request_json(
            api,
            "PATCH",
            _job_path(meta["namespace"], meta["name"]),
            body=patch,
            content_type="application/merge-patch+json",
        )
    )
    return written


async def job_pods(api: client.ApiClient, job: dict[str, Any]) -> list[dict[str, Any]]:
    meta = job["metadata"]
    body = await request_json(
        api,
        "GET",
        f"/api/v1/namespaces/{quote(meta['namespace'])}/pods",
        query=[("labelSelector", f"batch.kubernetes.io/controller-uid={meta['uid']}")],
    )
    items: list[dict[str, Any]] = orjson.loads(body).get("items") or []
    return items


async def job_events(api: client.ApiClient, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The Events about this Job object, not an earlier Job of the same name (an Event
    that names no uid is kept). jobreaper puts one on the Job for every step, on a
    pod's too."""
    meta = job["metadata"]
    body = await request_json(
        api,
        "GET",
        f"/api/v1/namespaces/{quote(meta['namespace'])}/events",
        query=[
            (
                "fieldSelector",
                f"involvedObject.kind=Job,involvedObject.name={meta['name']}",
            )
        ],
    )
    items: list[dict[str, Any]] = orjson.loads(body).get("items") or []
    return [
        e for e in items if (e.get("involvedObject") or {}).get("uid") in (None, "", meta["uid"])
    ]
