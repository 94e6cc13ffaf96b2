"""Killer settings (``JOBREAPER_KILLER_*``)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class KillerServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBREAPER_KILLER_", extra="ignore")

    group_id: str = Field(
        default="jobreaper-killer",
        description="Consumer group of the killer instances (they split the partitions).",
    )
    identity: str = Field(
        default_factory=_default_identity, description="This instance's name (client ids, logs)."
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        description="How long a dead instance keeps its partitions before the group moves them.",
    )
    max_poll_wait_s: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="Longest wait for records before looking at timers and node/config changes.",
    )
    clock: Literal["api", "local"] = Field(
        default="api",
        description=(
            "Whose clock decisions use: 'api' measures the API server's clock (Date header "
            "of GET /version, any authenticated identity may ask) and decides on it, so a "
            "skewed host clock neither kills early nor force-deletes early; 'local' trusts "
            "this host's clock (and needs no Kubernetes credentials)."
        ),
    )
    clock_first_sample_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long to wait for the API server's clock at start before deciding on this host's."
        ),
    )
    decide_failure_hold_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "After the core's decide raised on a partition (a bug: the core is total by "
            "design), how long that partition is held before it is rebuilt and tried again."
        ),
    )
    snapshot_dir: str = Field(
        default="",
        description=(
            "Directory of state snapshots (empty: none, every assignment replays its "
            "partitions from the log). Instances that may take over each other's "
            "partitions need it on a shared volume to benefit; without a usable "
            "snapshot a partition is replayed in full, which is always correct."
        ),
    )
    snapshot_every_records: int = Field(
        default=50_000,
        ge=1,
        description="Snapshot a partition after this many records folded since its last one...",
    )
    snapshot_every_s: float = Field(
        default=60.0,
        gt=0,
        description="...or this many seconds after it, whichever comes first (if it changed).",
    )
