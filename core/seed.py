"""What a killer keeps of the topics every instance reads whole, to seed new states.

Nodes and config are read whole by every killer instance and folded into every
partition's state; a partition's state built later (assignment, restart,
rebalance, a failed transaction) starts from this memory, not from their whole
history. The memory must therefore hold everything a state's decisions depend
on, not just the newest record of each:

* the mass-disruption guard's resumes (``ForceResumeRequested``, on ``force.resumes``):
  the newest per zone;
* config: the newest snapshot (versions only grow; an older one shown again by
  compaction or a replay is ignored);
* a node: its folded state (newest resourceVersion, and since when it is
  lost), not just its newest observation. ``decide`` dates a node's loss from
  the observation that began it (pods on a lost node are deleted from then
  on); a node usually changes more than once while lost (Ready goes Unknown,
  then the node controller adds its taints), so a state seeded with only the
  newest observation would date the loss later, and delete later, than the
  state it replaces.

The memory folds node observations with the core's own ``fold_node``, so a
state seeded with :meth:`GlobalInputs.seed` holds exactly the node states that
folding every observation in order gives (a property test checks it); the
killer's shell and the replay's rebuilds build states this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.config import ConfigSnapshot
from schemas.observations import NodeObserved
from schemas.requests import ForceResumeRequested

from .evolve import evolve, fold_node, fold_resume, seed_node
from .state import KillerState, NodeState


@dataclass(slots=True)
class GlobalInputs:
    """The memory of the nodes and config topics, folded in arrival order."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    """Per node, what folding its whole history gives (the same ``fold_node``)."""
    config: ConfigSnapshot | None = None
    resumes: dict[str, int] = field(default_factory=dict)
    """The guard's resumes (``ForceResumeRequested`` on ``force.resumes``), as a state
    folds them (``fold_resume``): zone -> newest ``requested_at``."""
    resumed_by: dict[str, str] = field(default_factory=dict)

    def fold(self, message: NodeObserved | ConfigSnapshot | ForceResumeRequested) -> bool:
        """Remember ``message``; False when a state would ignore it (a stale node
        observation, a config snapshot not newer than the newest, a resume older than
        one remembered)."""
        if isinstance(message, ForceResumeRequested):
            return fold_resume(self.resumes, self.resumed_by, message)
        if isinstance(message, ConfigSnapshot):
            if self.config is not None and message.version <= self.config.version:
                return False
            self.config = message
            return True
        node = self.nodes.get(message.name)
        if node is None:
            node = self.nodes[message.name] = NodeState()
        return fold_node(node, message) is not None

    def seed(self, state: KillerState) -> KillerState:
        """Give ``state`` the nodes and config remembered: a new state, or one loaded
        from a snapshot, which they supersede (they reflect more of the log)."""
        for name, node in self.nodes.items():
            seed_node(state, name, node)
        for zone, at_us in self.resumes.items():
            known = state.resumes.get(zone)
            if known is None or known < at_us:
                state.resumes[zone] = at_us
                state.resumed_by[zone] = self.resumed_by.get(zone, "")
                state.nodes_version += 1
        if self.config is not None:
            evolve(state, self.config)
        return state
