"""The contract: every jobreaper message model, and ``ALL_MESSAGES``, the tuple of
them all (for the CloudEvents codec registry and the generated JSON Schemas)."""

from __future__ import annotations

from .base import Message
from .commands import CommandApplied, CommandIssued
from .config import ConfigSnapshot, KillerConfig, KillerSettings
from .decisions import DecisionRecorded
from .events import ForceDeletionForbidden, ForceDeletionHeld, JobKilled, KillStarted, KillStep
from .observations import JobObserved, NodeObserved, PodObserved
from .requests import KillCancelRequested, KillRequested

ALL_MESSAGES: tuple[type[Message], ...] = (
    PodObserved,
    JobObserved,
    NodeObserved,
    KillRequested,
    KillCancelRequested,
    ConfigSnapshot,
    CommandIssued,
    CommandApplied,
    KillStarted,
    KillStep,
    ForceDeletionForbidden,
    ForceDeletionHeld,
    JobKilled,
    DecisionRecorded,
)

__all__ = [
    "ALL_MESSAGES",
    "CommandApplied",
    "CommandIssued",
    "ConfigSnapshot",
    "DecisionRecorded",
    "ForceDeletionForbidden",
    "ForceDeletionHeld",
    "JobKilled",
    "JobObserved",
    "KillCancelRequested",
    "KillRequested",
    "KillStarted",
    "KillStep",
    "KillerConfig",
    "KillerSettings",
    "Message",
    "NodeObserved",
    "PodObserved",
]
