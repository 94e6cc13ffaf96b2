"""Topic names (without the configurable prefix) of the design, in one place."""

from __future__ import annotations

from typing import Final

K8S_OBJECTS: Final = "k8s.objects"
K8S_NODES: Final = "k8s.nodes"
KILL_REQUESTS: Final = "kill.requests"
CONFIG: Final = "config"
KILL_COMMANDS: Final = "kill.commands"
KILL_RESULTS: Final = "kill.results"
KILL_EVENTS: Final = "kill.events"
KILL_DECISIONS: Final = "kill.decisions"
DEADLETTER: Final = "deadletter"
FORCE_RESUMES: Final = "force.resumes"
"""Operators' resumes of the mass-disruption guard (``jobreaper force resume``)."""

ALL_TOPICS: Final = (
    K8S_OBJECTS,
    K8S_NODES,
    KILL_REQUESTS,
    CONFIG,
    KILL_COMMANDS,
    KILL_RESULTS,
    KILL_EVENTS,
    KILL_DECISIONS,
    DEADLETTER,
    FORCE_RESUMES,
)
