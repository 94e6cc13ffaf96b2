"""Settings every service shares, read from the environment (``JOBREAPER_*``).

Each service composes these with its own settings class; nothing here knows
which service is running.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BadSettings(Exception):
    """Settings that cannot work together (e.g. a refresh interval not below the
    topics' retention); retrying cannot help, so the process exits with the reason."""


class KafkaSettings(BaseSettings):
    """How to reach Kafka. TLS and SASL settings are for real clusters; the
    local stack needs only ``bootstrap``."""

    # An error must not print its input: the input holds the SASL password.
    model_config = SettingsConfigDict(
        env_prefix="JOBREAPER_KAFKA_", extra="ignore", hide_input_in_errors=True
    )

    bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of Kafka brokers.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="Required with SASL_PLAINTEXT and SASL_SSL."
    )
    sasl_username: str | None = Field(
        default=None, description="The principal (docs/kafka-acls.md), with SASL."
    )
    sasl_password: SecretStr | None = Field(
        default=None,
        description="A secret: from the environment (a Secret's secretKeyRef) or "
        "SASL_PASSWORD_FILE, never a flag; never logged.",
    )
    sasl_password_file: str | None = Field(
        default=None,
        description="File holding the SASL password (a mounted Secret; one trailing "
        "newline is dropped), read at start, instead of SASL_PASSWORD.",
    )
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

    @model_validator(mode="after")
    def _sasl(self) -> KafkaSettings:
        """SASL settings that hold together, or a start-up error that says what is
        missing (aiokafka would otherwise fall back to PLAIN, or ignore SASL)."""
        if self.sasl_password_file:
            if self.sasl_password is not None:
                raise ValueError(
                    "the SASL password is given twice, in JOBREAPER_KAFKA_SASL_PASSWORD and in "
                    f"the file {self.sasl_password_file}: keep one"
                )
            try:
                with open(self.sasl_password_file, encoding="utf-8", newline="") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(
                    f"cannot read the SASL password file {self.sasl_password_file}: {reason}"
                ) from exc
            text = text.removesuffix("\n").removesuffix("\r")
            if not text:
                raise ValueError(f"the SASL password file {self.sasl_password_file} is empty")
            self.sasl_password = SecretStr(text)
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            missing = [
                name
                for name, value in (
                    ("JOBREAPER_KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                    ("JOBREAPER_KAFKA_SASL_USERNAME", self.sasl_username),
                    ("JOBREAPER_KAFKA_SASL_PASSWORD (or _SASL_PASSWORD_FILE)", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"security protocol {self.security_protocol} needs {', '.join(missing)}"
                )
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password is not None:
            raise ValueError(
                f"SASL settings are given but the security protocol is {self.security_protocol}: "
                "set JOBREAPER_KAFKA_SECURITY_PROTOCOL to SASL_SSL (or SASL_PLAINTEXT)"
            )
        return self


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
