"""Config service settings (``JOBREAPER_CONFIG_*``)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Source = Literal["configmap", "file", "http"]


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ConfigServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBREAPER_CONFIG_", extra="ignore")

    source: Source = Field(
        default="configmap",
        description="The one writer: a ConfigMap (watched), a file (polled) or HTTP PUT /config.",
    )
    configmap_namespace: str = Field(default="default", description="Namespace of the ConfigMap.")
    configmap_name: str = Field(default="jobreaper-config", description="Name of the ConfigMap.")
    configmap_key: str = Field(default="config.json", description="Data key holding the JSON.")
    file: str | None = Field(default=None, description="Path of the JSON file (source=file).")
    file_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="How often the file's mtime is checked."
    )
    api_host: str = Field(default="127.0.0.1", description="Address of the /config HTTP API.")
    api_port: int = Field(default=8081, ge=0, le=65535, description="0 picks a free port.")
    lease: bool = Field(
        default=True,
        description="Elect one writer with a Lease (needs Kubernetes). Without it, the "
        "transactional id alone fences concurrent writers.",
    )
    lease_namespace: str = Field(default="default", description="Namespace of the leader Lease.")
    lease_name: str = Field(default="jobreaper-config", description="Name of the leader Lease.")
    lease_duration_s: float = Field(default=10.0, gt=0)
    identity: str = Field(
        default_factory=_default_identity, description="This replica's name (Lease, logs)."
    )
    transactional_id: str = Field(
        default="jobreaper-config",
        description="Kafka transactional id of the writer (the topic prefix is appended); "
        "every replica of one install must share it: it is what fences a stale writer.",
    )
    events: bool = Field(
        default=True, description="Post Kubernetes Events on the ConfigMap (rejected, published)."
    )
    retry_max_s: float = Field(default=10.0, gt=0, description="Longest backoff after a failure.")

    @model_validator(mode="after")
    def _file_needs_path(self) -> ConfigServiceSettings:
        if self.source == "file" and not self.file:
            raise ValueError("source=file needs a file path (JOBREAPER_CONFIG_FILE or --file)")
        return self

    @property
    def needs_kubernetes(self) -> bool:
        return self.source == "configmap" or self.lease
