"""The live demo: the services as real processes on the local stack, four Jobs, the
ladder shown as it happens, a summary, the audit of the lost-node Job, cleanup.

Order of work (each step says what it is doing, cleanup undoes what was done):
namespace -> config file -> services (until /readyz) -> config in force ->
read kill.events/kill.results from their end -> Jobs -> act when each pod
runs (kill now, kill at +N s, lose the node and kill) -> until every scenario
reached its end or the time bound -> summary -> audit -> cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import json
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from devtools.stack.api import StackInfo, lose_node, node_is_lost, restore_node
from schemas.cloudevents import DecodeError
from schemas.topics import KILL_EVENTS, KILL_RESULTS
from services.kill.request import request_kill
from services.runtime.kafka import make_consumer, topic_partitions
from services.runtime.kube import load_api_client
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames

from . import processes
from .board import Board
from .scenarios import (
    KILL_LATER,
    KILL_NOW,
    NODE_LOST,
    SCENARIOS,
    Scenario,
    demo_config,
    job_manifest,
)

PART_OF = "app.kubernetes.io/part-of=jobreaper-demo"


@dataclass(frozen=True)
class Options:
    keep: bool = False
    plain: bool = False
    timeout_s: float = 150.0
    """How long the scenarios may take, from the Jobs' creation, before the demo fails."""
    later_s: int = 20
    ready_timeout_s: float = 120.0
    picture: Path | None = None
    """Where to write the node-lost Job's audit timeline as SVG (``--picture``)."""


class Demo:
    def __init__(
        self, info: StackInfo, options: Options, console: Console, *, stop_stack: Callable[[], None]
    ) -> None:
        self.info = info
        self.options = options
        self.console = console
        self.stop_stack = stop_stack
        self.namespace = f"jobreaper-demo-{uuid.uuid4().hex[:5]}"
        self.kafka = KafkaSettings(bootstrap=info.kafka_bootstrap)
        self.names = TopicNames(self.kafka.topic_prefix)
        base = info.stack_dir if info.stack_dir is not None else Path.cwd()
        self.run_dir = base / "demo" / self.namespace
        self.scenarios = tuple(
            dataclasses.replace(
                s, explain=s.explain.format(ns=self.namespace, later=options.later_s)
            )
            for s in SCENARIOS
            if s.job != NODE_LOST.job or len(info.nodes) > 1
        )
        self.api: client.ApiClient | None = None
        self.namespace_created = False
        self.services: list[processes.ServiceProcess] = []
        self.consumer: AIOKafkaConsumer | None = None
        self.lost: str | None = None
        self.uids: dict[str, str] = {}
        self.acted: set[str] = set()
        self.board: Board | None = None
        self.printed = 0
        self.succeeded = False

    def say(self, message: str) -> None:
        self.console.print(Text(f"==> {message}", style="bold"))

    # -- the whole run -----------------------------------------------------------

    async def run(self) -> int:
        try:
            await self.setup()
            board = await self.play()
            self.report(board)
            await self.audit(NODE_LOST.job)
            missed = board.unreached()
            for row in missed:
                why = row.failed_early() or f"not within {self.options.timeout_s:.0f}s"
                self.console.print(
                    Text(
                        f"jobreaper demo: {row.scenario.job} did not reach its expected end "
                        f"({row.scenario.expect_text}): {why}",
                        style="bold red",
                    )
                )
            if missed:
                self.console.print(f"the services' logs are in {self.run_dir}")
            self.succeeded = not missed
            return 1 if missed else 0
        except asyncio.CancelledError:
            self.say("interrupted: cleaning up (Ctrl-C again abandons the cleanup)")
            raise
        finally:
            await self.cleanup()

    async def setup(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.info.stack_dir is not None:
            old = processes.stop_kept(self.info.stack_dir, self.say)
            if old:
                await self._delete_namespace(old, quiet=True)
        self.api = await load_api_client(str(self.info.kubeconfig))
        await self._create_namespace()
        node = self.info.nodes[-1] if self.info.nodes else None
        if node is not None and self.info.stack_dir is not None and node_is_lost(self.info, node):
            self.say(f"node {node} is still lost from an earlier run: restoring it")
            await asyncio.to_thread(restore_node, self.info, node)
        config_file = self.run_dir / "config.json"
        config_file.write_text(json.dumps(demo_config(self.namespace), indent=2))
        await self._start_services(config_file)
        await self._wait_config()
        self.consumer = await self._open_feed()

    # -- setup steps ---------------------------------------------------------------

    async def _create_namespace(self) -> None:
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        self.say(f"creating namespace {self.namespace}")
        await core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(name=self.namespace, labels={"jobreaper/demo": "1"})
            )
        )
        self.namespace_created = True
        # Pods can be created once the namespace's default ServiceAccount exists.
        deadline = time.monotonic() + 30
        while True:
            try:
                await core.read_namespaced_service_account("default", self.namespace)
                return
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _start_services(self, config_file: Path) -> None:
        env = {
            **self.info.env(),
            "JOBREAPER_KAFKA_BOOTSTRAP": self.info.kafka_bootstrap,
            "JOBREAPER_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            "JOBREAPER_LOG_FORMAT": "json",
        }
        config_api_port = processes.free_port()
        self.config_url = f"http://127.0.0.1:{config_api_port}"
        logs = self.run_dir
        self.services = [
            processes.ServiceProcess.jobreaper(
                "watcher",
                {
                    **env,
                    # Only the demo's namespace, and its own Lease: other watchers on the
                    # same stack (yours, a test's) neither disturb nor are disturbed.
                    "JOBREAPER_WATCHER_NAMESPACES": self.namespace,
                    "JOBREAPER_WATCHER_LEASE_NAMESPACE": self.namespace,
                },
                logs,
            ),
            processes.ServiceProcess.jobreaper("killer", env, logs),
            processes.ServiceProcess.jobreaper("executor", env, logs),
            processes.ServiceProcess.jobreaper(
                "config",
                {
                    **env,
                    "JOBREAPER_CONFIG_SOURCE": "file",
                    "JOBREAPER_CONFIG_FILE": str(config_file),
                    "JOBREAPER_CONFIG_LEASE": "false",
                    "JOBREAPER_CONFIG_API_PORT": str(config_api_port),
                },
                logs,
            ),
        ]
        names = ", ".join(s.name for s in self.services)
        self.say(f"starting {names} as processes (logs in {logs})")
        began = time.monotonic()
        for service in self.services:
            service.start()
        last = [""]

        def progress(waiting: list[str]) -> None:
            line = "waiting for " + ", ".join(waiting)
            if line != last[0]:
                last[0] = line
                self.console.print(f"    {line}")

        await processes.wait_ready(self.services, self.options.ready_timeout_s, progress)
        took = time.monotonic() - began
        self.say(f"every service is ready after {took:.0f}s (/readyz answers 200)")

    async def _wait_config(self) -> None:
        """Until the config service has published the demo's configuration."""
        wanted = demo_config(self.namespace)["overrides"]["namespaces"][self.namespace]
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                body: dict[str, Any] = {}
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(f"{self.config_url}/config") as response:
                        body = await response.json()
                config = body.get("config") or {}
                ours = (config.get("overrides") or {}).get("namespaces", {}).get(self.namespace)
                if ours is not None and all(ours.get(k) == v for k, v in wanted.items()):
                    self.say(
                        f"config version {body.get('version')} in force: in {self.namespace}, "
                        + ", ".join(f"{k}={v}" for k, v in wanted.items())
                    )
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the config service did not publish the demo's config: {body}"
                    )
                await asyncio.sleep(0.3)

    async def _open_feed(self) -> AIOKafkaConsumer:
        """A consumer on kill.events and kill.results, positioned at their current end."""
        partitions = await topic_partitions(
            self.kafka, [self.names(KILL_EVENTS), self.names(KILL_RESULTS)]
        )
        consumer = make_consumer(self.kafka, client_id="jobreaper-demo", group_id=None)
        await consumer.start()
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the positions now, before any Job exists
            await consumer.position(tp)
        return consumer

    # -- the scenarios ---------------------------------------------------------------

    async def play(self) -> Board:
        assert self.api is not None
        board = self.board = Board(self.scenarios, self.namespace, datetime.now(UTC))
        batch = client.BatchV1Api(self.api)
        normal = self.info.nodes[0] if self.info.nodes else ""
        self.say(f"creating {len(self.scenarios)} Jobs; watch each one's ladder:")
        for scenario in self.scenarios:
            self.console.print(f"    {scenario.job}: {scenario.explain}")
        for scenario in self.scenarios:
            node = self.info.nodes[-1] if scenario.job == NODE_LOST.job else normal
            created = await batch.create_namespaced_job(
                self.namespace,
                job_manifest(scenario, node),  # type: ignore[arg-type]  # a dict body is accepted
            )
            self.uids[scenario.job] = created.metadata.uid
            board.note(datetime.now(UTC), scenario.job, f"Job created (pod pinned to {node})")
        deadline = time.monotonic() + self.options.timeout_s
        if self.options.plain:
            await self._loop(board, deadline, lambda: self._print_log(board))
        else:
            with Live(self._view(board), console=self.console, auto_refresh=False) as live:
                await self._loop(
                    board, deadline, lambda: live.update(self._view(board), refresh=True)
                )
        return board

    async def _loop(self, board: Board, deadline: float, render: Callable[[], None]) -> None:
        next_observe = 0.0
        settle: float | None = None
        while time.monotonic() < deadline:
            if board.done():
                # Every scenario is at its end; wait a little for results still on their way.
                settle = settle or time.monotonic() + 5
                if board.settled() or time.monotonic() > settle:
                    break
            for message in await self._poll():
                board.fold(message, datetime.now(UTC))
            if time.monotonic() >= next_observe:
                next_observe = time.monotonic() + 0.5
                await self._observe(board)
            await self._act(board)
            render()
        # One last look so the summary has the newest pod phases.
        await self._observe(board)
        render()

    def _view(self, board: Board) -> Group:
        recent = board.log[-8:]
        return Group(board.table(datetime.now(UTC)), Text("\n".join(recent), style="dim"))

    def _print_log(self, board: Board) -> None:
        for line in board.log[self.printed :]:
            self.console.print(line)
        self.printed = len(board.log)

    async def _poll(self) -> list[object]:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=200)
        out: list[object] = []
        for records in batches.values():
            for record in records:
                with contextlib.suppress(DecodeError):
                    out.append(CODEC.decode(record.headers, record.value).message)
        return out

    async def _observe(self, board: Board) -> None:
        """Pod phases, Job conditions and node readiness, from the API server."""
        assert self.api is not None
        core, batch = client.CoreV1Api(self.api), client.BatchV1Api(self.api)
        pods = (await core.list_namespaced_pod(self.namespace, label_selector=PART_OF)).items
        jobs = (await batch.list_namespaced_job(self.namespace)).items
        ready: dict[str, bool] = {}
        if self.lost is not None:
            node = await core.read_node(self.lost)
            ready[self.lost] = any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
            )
        now = datetime.now(UTC)
        for scenario in self.scenarios:
            mine = [
                p
                for p in pods
                if (p.metadata.labels or {}).get("batch.kubernetes.io/job-name") == scenario.job
            ]
            row = board.rows[scenario.job]
            if mine:
                board.observe_pod(scenario.job, _pod_text(mine, ready), now)
            elif row.pod != "not created yet":
                board.observe_pod(scenario.job, "gone", now)
        for job in jobs:
            status = None
            for condition in job.status.conditions or []:
                if condition.type in ("Complete", "Failed") and condition.status == "True":
                    status = condition.type
            board.observe_job(job.metadata.name, status, now)

    async def _act(self, board: Board) -> None:
        """Once a scenario's pod runs: kill now, kill later, or lose the node and kill."""
        for scenario in self.scenarios:
            row = board.rows[scenario.job]
            if scenario.job in self.acted or not row.pod.startswith("Running"):
                continue
            self.acted.add(scenario.job)
            now = datetime.now(UTC)
            if scenario.job == KILL_NOW.job:
                await self._kill(board, scenario, None, "demo: killed now")
            elif scenario.job == KILL_LATER.job:
                at = now + timedelta(seconds=self.options.later_s)
                await self._kill(board, scenario, at, f"demo: killed at +{self.options.later_s}s")
            elif scenario.job == NODE_LOST.job:
                node = self.info.nodes[-1]
                await asyncio.to_thread(lose_node, self.info, node)
                self.lost = node
                board.note(
                    now, scenario.job, f"node {node} lost: kwok stopped, NotReady in about 8 s"
                )
                await self._kill(board, scenario, None, "demo: its node is lost")

    async def _kill(
        self, board: Board, scenario: Scenario, at: datetime | None, reason: str
    ) -> None:
        published = await request_kill(
            self.kafka,
            self.namespace,
            scenario.job,
            kill_at=at,
            reason=reason,
            job_uid=self.uids.get(scenario.job),
            requested_by="jobreaper demo",
        )
        row = board.rows[scenario.job]
        row.requested = True
        row.kill_at = at or published.request.requested_at
        when = "now" if at is None else f"at +{self.options.later_s}s"
        board.note(
            datetime.now(UTC),
            scenario.job,
            f"kill requested {when} (request {published.request.request_id[:8]})",
        )

    # -- the end ------------------------------------------------------------------

    def report(self, board: Board) -> None:
        if self.options.plain:
            self.console.print("summary:")
            for row in board.rows.values():
                mark = "ok  " if row.reached() else "FAIL"
                latency = row.kill_latency_s
                extra = "" if latency is None else f" (kill latency {latency * 1000:.0f} ms)"
                self.console.print(f"  {mark} {row.scenario.job}: {row.what_happened()}{extra}")
        else:
            self.console.print(board.summary())

    async def audit(self, job: str) -> None:
        """The audit timeline of one Job (services/audit), if this build has it."""
        if job not in {s.job for s in self.scenarios}:
            return
        self.say(f"the audit of {self.namespace}/{job}: every input, decision and result")
        await show_audit(self.kafka, self.namespace, job, self.console, self.options.picture)

    async def cleanup(self) -> None:
        """Undo what was done; each step on its own, so one failure does not skip the rest."""
        keep = self.options.keep
        if self.consumer is not None:
            await _quietly(self.consumer.stop())
        if self.services and not keep:
            self.say("stopping the services")
            await asyncio.gather(*(_quietly(s.stop()) for s in self.services))
        if self.succeeded and not keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)  # logs are kept after a failure
        if self.lost is not None:
            self.say(f"restoring node {self.lost}")
            await _quietly(asyncio.to_thread(restore_node, self.info, self.lost))
        if self.namespace_created and not keep:
            await self._delete_namespace(self.namespace)
        if self.api is not None:
            await _quietly(self.api.close())
        if keep:
            self._explain_keep()
        else:
            await _quietly(asyncio.to_thread(self.stop_stack))

    async def _delete_namespace(self, name: str, *, quiet: bool = False) -> None:
        api = self.api or await load_api_client(str(self.info.kubeconfig))
        if not quiet:
            self.say(f"deleting namespace {name}")
        try:
            await client.CoreV1Api(api).delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                self.console.print(f"    could not delete namespace {name}: {exc.reason}")
        except Exception as exc:  # cleanup goes on whatever happens
            self.console.print(f"    could not delete namespace {name}: {exc}")
        finally:
            if api is not self.api:
                await api.close()

    def _explain_keep(self) -> None:
        if self.info.stack_dir is not None and self.services:
            processes.save_kept(self.info.stack_dir, self.namespace, self.services)
        name = self.info.name
        ports = ", ".join(f"{s.name} :{s.http_port}" for s in self.services)
        self.console.print(
            "\n".join(
                [
                    "",
                    "The stack and the services are still up. Explore:",
                    f'  eval "$(uv run jobreaper-dev stack env --name {name})"',
                    f"  uv run jobreaper events --follow --namespace {self.namespace}",
                    f"  uv run jobreaper audit {self.namespace}/{NODE_LOST.job}",
                    f"  uv run jobreaper config get --url {self.config_url}",
                    f"  kubectl get jobs,pods -n {self.namespace}",
                    f"  /readyz and /metrics: {ports} (http://127.0.0.1:PORT/metrics)",
                    f"  service logs: {self.run_dir}",
                    "When done:",
                    f"  uv run jobreaper-dev demo --stop --stack {name}"
                    "    (stops the services, deletes the namespace)",
                    f"  uv run jobreaper-dev stack down --name {name}",
                ]
            )
        )


async def show_audit(
    kafka: KafkaSettings, namespace: str, job: str, console: Console, picture: Path | None = None
) -> None:
    """``services.audit``'s timeline of one Job, rendered on ``console`` (and, with
    ``picture``, as SVG into that file).

    Looked up at run time: the audit module is built separately, and a build
    without it still runs the demo. Only its absence is forgiven; an error
    inside it is not hidden.
    """
    try:
        audit = importlib.import_module("services.audit")
    except ModuleNotFoundError as exc:
        if exc.name != "services.audit":
            raise
        console.print("audit not available in this build")
        return
    timeline = audit.load_timeline(kafka, namespace, job)
    if inspect.isawaitable(timeline):
        timeline = await timeline
    audit.render_terminal(timeline, console)
    if picture is not None:
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_text(audit.render_svg(timeline))
        console.print(f"the timeline as a picture: {picture}")


def _pod_text(pods: list[Any], node_ready: dict[str, bool]) -> str:
    pod = max(pods, key=lambda p: p.metadata.creation_timestamp)
    phase = pod.status.phase or "Pending"
    if pod.metadata.deletion_timestamp is not None:
        phase = "Terminating"
    elif pod.status.reason:
        phase = f"{phase} ({pod.status.reason})"
    node = pod.spec.node_name
    text = f"{phase} on {node}" if node else phase
    if node in node_ready and not node_ready[node]:
        text += ", node NotReady"
    if len(pods) > 1:
        text += f" (+{len(pods) - 1} more)"
    return text


async def _quietly(step: Awaitable[Any]) -> None:
    """Run one cleanup step; report, never raise (the others must still run)."""
    try:
        await step
    except Exception as exc:
        print(f"jobreaper demo: cleanup step failed: {exc}")
