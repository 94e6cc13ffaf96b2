"""Notifier settings (``JOBREAPER_NOTIFY_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBREAPER_NOTIFY_", extra="ignore")

    webhook: str = Field(description="URL the alerts are POSTed to (JSON).")
    group_id: str = Field(
        default="jobreaper-notify",
        description="Kafka consumer group: its committed offsets say what was delivered.",
    )
    failing_after: int = Field(
        default=3,
        ge=1,
        description="Alert when a step's command attempt N (the killer re-issues a failed "
        "step with attempt + 1) failed, N >= this.",
    )
    remind_every: int = Field(
        default=10,
        ge=1,
        description="A step that stays forbidden or failing alerts again every N attempts.",
    )

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    request_timeout_s: float = Field(default=10.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    retry_after_max_s: float = Field(
        default=300.0, gt=0, description="A 429's Retry-After is honoured up to this."
    )
