"""Settings every service shares, read from the environment (``JOBREAPER_*``).

Each service composes these with its own settings class; nothing here knows
which service is running.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BadSettings(Exception):
    """Settings that cannot work together (e.g. a refresh interval not below the
    topics' retention); retrying cannot help, so the process exits with the reason."""


class KafkaSettings(BaseSettings):
    """How to reach Kafka. TLS and SASL settings are for real clusters; the
    local stack needs only ``bootstrap``."""

    model_config = SettingsConfigDict(env_prefix="JOBREAPER_KAFKA_", extra="ignore")

    bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of Kafka brokers.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(default=None, description="CA bundle to verify brokers.")
    ssl_certfile: str | None = Field(default=None, description="Client certificate (mTLS).")
    ssl_keyfile: str | None = Field(default=None, description="Client key (mTLS).")
    topic_prefix: str = Field(
        default="jobreaper.",
        description="Prefix of every jobreaper topic, so several installs share a cluster.",
    )
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    create_topics: bool = Field(
        default=True,
        description="Create missing topics at start (needs the CreateTopics ACL on real clusters).",
    )
    job_partitions: int = Field(
        default=6, ge=1, description="Partitions of the Job-keyed topics when creating them."
    )


class ServiceSettings(BaseSettings):
    """Logging and the health/metrics endpoint."""

    model_config = SettingsConfigDict(env_prefix="JOBREAPER_", extra="ignore")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    http_host: str = Field(
        default="127.0.0.1", description="Address of /healthz, /readyz, /metrics."
    )
    http_port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port.")
    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig path; unset means in-cluster config."
    )
