"""The contract: every jobreaper message model, and ``ALL_MESSAGES``, the tuple of
them all (for the CloudEvents codec registry and the generated JSON Schemas)."""

from __future__ import annotations

from .base import Message
from .commands import CommandApplied, CommandIssued
from .config import ConfigSnapshot, KillerConfig, KillerSettings
from .decisions import DecisionRecorded
from .events import (
    ForceDeletionForbidden,
    ForceDeletionHeld,
    ForceDeletionPaused,
    ForceDeletionResumed,
    JobKilled,
    KillStarted,
    KillStep,
)
from .observations import JobObserved, NodeObserved, PodObserved
from .requests import ForceResumeRequested, KillCancelRequested, KillRequested

ALL_MESSAGES: tuple[type[Message], ...] = (
    PodObserved,
    JobObserved,
    NodeObserved,
    KillRequested,
    KillCancelRequested,
    ForceResumeRequested,
    ConfigSnapshot,
    CommandIssued,
    CommandApplied,
    KillStarted,
    KillStep,
    ForceDeletionForbidden,
    ForceDeletionHeld,
    JobKilled,
    ForceDeletionPaused,
    ForceDeletionResumed,
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
    "ForceDeletionPaused",
    "ForceDeletionResumed",
    "ForceResumeRequested",
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
