"""Watcher settings (``JOBREAPER_WATCHER_*``)."""

from __future__ import annotations

import os
import socket
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBREAPER_WATCHER_", extra="ignore")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated; empty watches the whole cluster.",
    )
    label_selector: str | None = Field(
        default=None, description="Only Jobs and pods matching this label selector."
    )
    pod_label_selector: str = Field(
        default="batch.kubernetes.io/job-name",
        description="Server-side selector for Job pods (the Job controller labels its pods so).",
    )
    lease_namespace: str = Field(default="default", description="Namespace of the leader Lease.")
    lease_name: str = Field(default="jobreaper-watcher", description="Name of the leader Lease.")
    identity: str = Field(
        default_factory=_default_identity, description="This replica's name in the Lease."
    )
    lease_duration_s: float = Field(default=10.0, gt=0)
    watch_timeout_s: int = Field(default=300, ge=10, description="Server-side watch timeout.")
    queue_size: int = Field(default=10_000, ge=100, description="Observations buffered in memory.")
    publish_batch: int = Field(default=500, ge=1)
    refresh_after_s: float | None = Field(
        default=None,
        gt=0,
        description="Publish a live object again (change 'refreshed') once its newest record "
        "on k8s.objects / k8s.nodes is this old, so that the topics' retention never deletes "
        "the only record of an object that still exists. Default: half the shorter "
        "retention.ms of the two topics, read with DescribeConfigs at the start of each "
        "term as leader. Must be below that retention (the watcher refuses to start "
        "otherwise).",
    )
    refresh_rate: float = Field(
        default=200.0,
        gt=0,
        description="At most this many refreshes published per second (spread, not one "
        "burst, when many objects come due at once).",
    )
    events: bool = Field(
        default=True,
        description="Tell users about invalid jobreaper annotations with a Warning Event on "
        "the object, once per value (needs create on events.events.k8s.io).",
    )
    events_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Warnings waiting for their Event; more are dropped (and counted) and "
        "tried again at the object's next change or the next list.",
    )
    events_remembered: int = Field(
        default=20_000,
        ge=1,
        description="Told values remembered (LRU): one seen again costs no API call; "
        "a forgotten one costs one, answered 409.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [ns.strip() for ns in value.split(",") if ns.strip()]
        return value
