"""Executor settings (``JOBREAPER_EXECUTOR_*``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBREAPER_EXECUTOR_", extra="ignore")

    group_id: str = Field(
        default="jobreaper-executor", description="Kafka consumer group of kill.commands."
    )
    transactional_id_prefix: str = Field(
        default="jobreaper-executor",
        description=(
            "Start of the transactional ids, one per input partition: "
            "<prefix>.<group>.<commands topic>.<partition>. Unique per installation."
        ),
    )
    identity: str = Field(
        default_factory=_default_identity,
        description="This replica's name (Kubernetes Events' reportingInstance, logs).",
    )
    command_budget_s: float = Field(
        default=60.0,
        gt=0,
        description="Total time one command may take with its retries; then it is 'failed'.",
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="One API call's timeout.")
    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    max_batch: int = Field(
        default=50, ge=1, description="Commands of one partition applied per Kafka transaction."
    )
    concurrency: int = Field(
        default=16, ge=1, description="API calls in flight per partition (distinct pods only)."
    )
    session_timeout_ms: int = Field(default=10_000, ge=6_000)
    events: bool = Field(default=True, description="Publish Kubernetes Events on pods and Jobs.")
    commit_delay_s: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Fault injection for tests only: wait this long between the API calls of a batch "
            "and its transaction commit, widening the window a crash can hit."
        ),
    )
