"""Replay on the real stack: after a real end-to-end kill, the pure core re-makes
every recorded decision byte for byte; a changed rule is caught at its first
differing event; a what-if with a lower force timeout force-deletes earlier."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from kubernetes_asyncio import client

from core import Decision, KillerState, decide
from devtools.stack.api import StackInfo
from schemas.config import ConfigSnapshot, KillerConfig
from services.replay.history import History, read_history
from services.replay.report import replay, what_if
from tests.e2e.harness import System
from tests.e2e.test_ladder import FAST, kill_now, stranded
from tests.integration.lossy_nodes import ReservedNodeLoss

pytestmark = pytest.mark.stack


async def _force_deleted_history(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    node: str,
) -> History:
    """The lost-node scenario of test_ladder: delete at once, force delete after 4 s."""
    await system.start(**FAST)
    await stranded(kube_api, namespace, "stranded", node_loss, node)
    await kill_now(kube_api, namespace, "stranded")
    killed = await system.job_killed("stranded", timeout=60)
    assert [p.ended for p in killed.pods] == ["force-deleted"]
    await system.stop()  # nothing more is decided while we read
    return await read_history(system.kafka)


async def test_replay_after_a_real_kill_matches_then_catches_a_changed_rule_and_what_if(
    system: System,
    kube_api: client.ApiClient,
    namespace: str,
    node_loss: ReservedNodeLoss,
    stack: StackInfo,
) -> None:
    history = await _force_deleted_history(
        system, kube_api, namespace, node_loss, node_loss.reserved
    )
    recorded = await system.commands()
    assert [c.step for c in recorded] == ["fail-job", "delete", "force-delete"]

    # 1. The same core: no divergence, every command and kill event matched.
    report = replay(history)
    assert report.divergences == []
    assert report.total("decisions") >= 2
    assert report.total("commands") == 4  # and the Job shown killed (annotate-job)
    assert report.total("events") == len(await system.kill_events())

    # 2. A changed rule (the force timeout, 4 s -> 1 s, same config version): the
    # first divergence is the force deletion, with the last input folded before it.
    changed = ConfigSnapshot(
        version=system.version,
        config=KillerConfig.model_validate({**FAST, "forceDeleteTaskTimeoutSeconds": 1}),
        changed_at=datetime.now().astimezone(),
    )

    def changed_decide(state: KillerState, now: datetime) -> Decision:
        return decide(state, now, changed)

    diverged = replay(history, decide_fn=changed_decide)
    assert diverged.divergences, "a changed rule must be reported"
    first = diverged.divergences[0]
    force = recorded[2]
    assert first.kind == "command"
    assert first.expected_id == force.command_id
    assert first.problem in (
        "same id, different bytes",
        "the killer decided a command the replay did not",
    )
    assert first.decided_at == force.decided_at
    assert first.last_input is not None and "@" in first.last_input

    # 3. What-if with forceDeleteTaskTimeoutSeconds 1: the force deletion comes 3 s
    # before its recorded due time (the same deletionTimestamp, 3 s less to wait).
    snapshot = changed.model_copy(update={"version": system.version + 1})
    result = what_if(history, snapshot)
    steps = {c.step: c for c in result.steps}
    assert set(steps) == {"fail-job", "delete", "force-delete", "annotate-job"}, result.steps
    assert steps["fail-job"].what_if is not None
    assert steps["fail-job"].what_if <= recorded[0].decided_at, "the kill does not move later"
    assert steps["delete"].recorded == recorded[1].decided_at
    # Decided when the kill annotation arrived (its Kafka timestamp): not after the
    # real killer, which decided once it had read it.
    assert steps["delete"].what_if is not None
    assert steps["delete"].what_if <= recorded[1].decided_at
    assert steps["force-delete"].what_if == force.due_at - timedelta(seconds=3)
    (ns,) = result.namespaces
    assert ns.namespace == namespace
    assert len(ns.force_deletions.earlier) == 1
    assert ns.force_deletions.added == ns.force_deletions.removed == 0
    assert ns.commands.added == ns.commands.removed == 0
    assert ns.kills.added == ns.kills.removed == 0
