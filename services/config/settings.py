"""Config service settings (``JOBREAPER_CONFIG_*``)."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Source = Literal["configmap", "file", "http"]
ApiAuth = Literal["kubernetes", "none"]

#: What a caller of ``PUT /config`` must be allowed (SubjectAccessReview): verb
#: ``update`` on ``configs`` in API group ``jobreaper.io``, in ``api_auth_namespace``.
#: No CustomResourceDefinition exists or is needed: RBAC rules may name any resource.
WRITE_VERB = "update"
WRITE_GROUP = "jobreaper.io"
WRITE_RESOURCE = "configs"


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
    api_auth: ApiAuth = Field(
        default="kubernetes",
        description="Who may PUT /config (source=http): 'kubernetes' = a bearer token the API "
        "server authenticates (TokenReview) whose user may update configs.jobreaper.io "
        "(SubjectAccessReview); 'none' = anyone who reaches the API, for local development "
        "only (loopback API address required, warned about at start).",
    )
    api_auth_namespace: str = Field(
        default="default",
        description="Namespace of the SubjectAccessReview: a writer needs verb update on "
        "configs in API group jobreaper.io there (or cluster-wide).",
    )
    api_auth_audiences: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Audiences a writer's token must carry, comma-separated; empty: the API "
        "server's own (any token kubectl uses). Set e.g. jobreaper-config and create tokens "
        "with kubectl create token --audience jobreaper-config, so that tokens sent here are "
        "useless against the API server.",
    )
    api_auth_cache_s: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="How long a token's review (allowed or refused) is reused; 0: no cache.",
    )
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

    @field_validator("api_auth_audiences", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [a.strip() for a in value.split(",") if a.strip()]
        return value

    @model_validator(mode="after")
    def _file_needs_path(self) -> ConfigServiceSettings:
        if self.source == "file" and not self.file:
            raise ValueError("source=file needs a file path (JOBREAPER_CONFIG_FILE or --file)")
        return self

    @model_validator(mode="after")
    def _no_auth_only_on_loopback(self) -> ConfigServiceSettings:
        if self.source == "http" and self.api_auth == "none" and not _loopback(self.api_host):
            raise ValueError(
                "JOBREAPER_CONFIG_API_AUTH=none lets anyone who reaches the API write the "
                f"configuration: it is for local development only, and the API must then "
                f"listen on loopback (JOBREAPER_CONFIG_API_HOST=127.0.0.1), not {self.api_host}"
            )
        return self

    @property
    def authenticates_writes(self) -> bool:
        """PUT /config is accepted (source=http) and needs a Kubernetes identity."""
        return self.source == "http" and self.api_auth == "kubernetes"

    @property
    def needs_kubernetes(self) -> bool:
        return self.source == "configmap" or self.lease or self.authenticates_writes


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
