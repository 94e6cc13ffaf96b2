"""``jobreaper-dev stack``: build, start, inspect and stop the local stack, and inject
faults into it (lose or restore a node, restart a component)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from devtools.stack import appimage, config, faults, process, realnode
from devtools.stack import build as buildmod
from devtools.stack.certs import Pki
from devtools.stack.errors import StackError
from devtools.stack.kuberest import KubeRest
from devtools.stack.kwok import node_ready
from devtools.stack.layout import info_from, kwok_proc, load_state, stack_names
from devtools.stack.stack import Stack
from devtools.stack.util import say_stderr

app = typer.Typer(
    help="The real local stack: Kafka, etcd, kube-apiserver, controller manager, scheduler, kwok.",
    no_args_is_help=True,
    add_completion=False,
)

NameOpt = Annotated[
    str, typer.Option("--name", "-n", help="Stack name; stacks with different names coexist.")
]

T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    """Run an action; a StackError becomes one line on stderr and exit status 1."""
    try:
        return action()
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("stack: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None


@app.command()
def up(
    name: NameOpt = "default",
    nodes: Annotated[int, typer.Option(help="Number of kwok nodes.", min=1, max=50)] = 3,
    real_nodes: Annotated[
        int | None,
        typer.Option(
            help="Real nodes (containerd + runc + a kubelet: real-node-0); needs root, "
            "installs Debian packages if missing (docs/stack.md). Default: as the running "
            "stack has, 0 on a fresh start.",
            min=0,
            max=1,
        ),
    ] = None,
) -> None:
    """Build what is missing (cached), then start the stack, or reuse it if it runs."""
    start = time.monotonic()
    info = _run(lambda: Stack(name, say_stderr).up(nodes=nodes, real_nodes=real_nodes))
    say_stderr(f"ready in {time.monotonic() - start:.1f}s; use it with:")
    say_stderr(f'  eval "$(jobreaper-dev stack env --name {name})"')
    print(f"kubeconfig:      {info.kubeconfig}")
    print(f"api server:      {info.api_server}")
    print(f"kafka bootstrap: {info.kafka_bootstrap}")
    print(f"audit log:       {info.audit_log}")
    print(f"nodes:           {', '.join(info.nodes)}")
    if info.real_nodes:
        print(f"real nodes:      {', '.join(info.real_nodes)}")


@app.command()
def down(
    name: NameOpt = "default",
    purge: Annotated[
        bool, typer.Option(help="Also delete the stack's folder (certs, logs).")
    ] = False,
) -> None:
    """Stop the stack's processes (only those it started, found by pid file)."""
    stopped = _run(lambda: Stack(name, say_stderr).down(purge=purge))
    say_stderr(f"stack '{name}' " + ("stopped" if stopped else "was not running"))


@app.command()
def env(name: NameOpt = "default") -> None:
    """Print shell lines exporting the stack's settings: eval "$(jobreaper-dev stack env)"."""
    info = Stack(name, say_stderr).info()
    if info is None:
        print(
            f"stack: stack '{name}' is not up (run: jobreaper-dev stack up --name {name})",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    for key, value in info.env().items():
        print(f"export {key}={shlex.quote(value)}")


@app.command()
def status(
    name: NameOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Processes (pid, RSS), ports, nodes and health of a stack. Exit 1 if not healthy."""
    stack = Stack(name, say_stderr)
    state = stack.state()
    if state is None:
        names = ", ".join(stack_names()) or "none"
        print(f"stack: no stack '{name}' (known stacks: {names})", file=sys.stderr)
        raise typer.Exit(1)
    procs = stack.processes(state)
    rss = {n: process.rss_bytes(r) for n, r in procs.items() if r is not None}
    healthy = stack.healthy(state)
    nodes: dict[str, str] = {}
    if healthy:
        rest = KubeRest(state.ports["apiserver"], Pki(stack.layout.pki_dir))
        for node in state.nodes:
            ready = node_ready(rest, node)
            lost = procs.get(kwok_proc(node)) is None
            nodes[node] = ("Ready" if ready else "NotReady") + (" (lost)" if lost else "")
        for node in state.real_nodes:
            ready = node_ready(rest, node)
            frozen = realnode.frozen(stack.layout, node)
            nodes[node] = ("Ready" if ready else "NotReady") + (
                " (real, kubelet frozen)" if frozen else " (real)"
            )
    report = {
        "name": name,
        "healthy": healthy,
        "dir": str(stack.layout.root),
        "versions": state.versions,
        "ports": state.ports,
        "processes": {
            n: {"pid": r.pid, "rss_mib": round(rss.get(n, 0) / 2**20, 1)} if r else None
            for n, r in procs.items()
        },
        "rss_total_mib": round(sum(rss.values()) / 2**20, 1),
        "nodes": nodes,
    }
    if healthy:
        report.update({"env": info_from(stack.layout, state).env()})
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"stack '{name}': {'healthy' if healthy else 'NOT healthy'}  ({stack.layout.root})")
        for proc, rec in procs.items():
            line = (
                f"pid {rec.pid:<8} rss {rss.get(proc, 0) / 2**20:7.1f} MiB"
                if rec
                else "not running"
            )
            print(f"  {proc:<26} {line}")
        print(f"  {'total rss':<26} {report['rss_total_mib']} MiB")
        print("  ports: " + ", ".join(f"{k}={v}" for k, v in state.ports.items()))
        for node, text in nodes.items():
            print(f"  node {node}: {text}")
    if not healthy:
        raise typer.Exit(1)


@app.command()
def build() -> None:
    """Fetch and build every component now (Kafka jars, Kubernetes, etcd, kwok)."""
    builds = _run(lambda: buildmod.ensure_builds(say_stderr))
    for component, b in builds.items():
        print(f"{component:<6} {b.version:<10} {b.path}")


@app.command()
def tool(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(config.TOOLS)}.")],
) -> None:
    """Build a tool the deployment checks use (cached like the stack) and print its path.

    kustomize renders deploy/kubernetes.
    """
    b = _run(lambda: buildmod.ensure_tool(name, say_stderr))
    print(b.bin(buildmod.tool_binary(name)))


@app.command()
def image(
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Also import it into this stack's real node."),
    ] = None,
) -> None:
    """Build the jobreaper image without Docker (cached; devtools/stack/appimage.py),
    print its reference, and import it into the stack's real node with --name."""
    t0 = time.monotonic()
    built = _run(lambda: appimage.ensure_image(say_stderr))
    imported = False
    if name is not None:
        layout = Stack(name, say_stderr).launcher.layout
        state = load_state(layout)
        nodes = state.real_nodes if state is not None and state.up else []
        if not nodes:
            say_stderr(f"stack {name!r} is not up with a real node: nothing imported")
        for node in nodes:
            imported |= _run(
                lambda node=node: appimage.import_image(layout, node, built)  # type: ignore[misc]
            )
    say_stderr(
        f"{built.ref} ({built.size_bytes / 2**20:.0f} MiB, "
        f"{'built' if built.built else 'cached'}{', imported' if imported else ''}) "
        f"in {time.monotonic() - t0:.1f}s"
    )
    print(built.ref)


@app.command("lose-node")
def lose_node(
    node: Annotated[str, typer.Argument(help="Node name, e.g. kwok-node-0.")],
    name: NameOpt = "default",
    wait: Annotated[bool, typer.Option(help="Wait until the node is NotReady.")] = False,
) -> None:
    """Make a node lost: kwok stops simulating it (no heartbeat, pods frozen)."""
    _run(lambda: faults.lose_node(Stack(name, say_stderr).launcher, node, wait_not_ready=wait))
    say_stderr(f"node {node} is lost" + (" and NotReady" if wait else ""))


@app.command("restore-node")
def restore_node(
    node: Annotated[str, typer.Argument(help="Node name, e.g. kwok-node-0.")],
    name: NameOpt = "default",
) -> None:
    """Bring a lost node back (kwok restarts for it; waits until Ready)."""
    _run(lambda: faults.restore_node(Stack(name, say_stderr).launcher, node))
    say_stderr(f"node {node} is back and Ready")


@app.command()
def restart(
    component: Annotated[
        str,
        typer.Argument(
            help="kafka, etcd, kube-apiserver, kube-controller-manager, kube-scheduler "
            "or kwok-<node>."
        ),
    ],
    name: NameOpt = "default",
    kill: Annotated[
        bool, typer.Option(help="SIGKILL (a crash) instead of SIGTERM (a clean shutdown).")
    ] = False,
    down: Annotated[
        float, typer.Option(help="Seconds to keep it stopped before starting it again.", min=0)
    ] = 0.0,
) -> None:
    """Restart one process of a running stack: same ports, same data, same command line.

    Clients reconnect to the same address and find their topics, offsets and
    objects. Waits until the component serves again. Example:

        jobreaper-dev stack restart kafka --name dev --down 5
    """
    took = _run(
        lambda: faults.restart(Stack(name, say_stderr).launcher, component, kill=kill, down_s=down)
    )
    say_stderr(f"{component} of stack '{name}' is back after {took:.1f}s")


@app.command("list")
def list_stacks() -> None:
    """Known stacks (folders under the cache) and where the cache is."""
    print(f"cache: {config.cache_dir()}")
    for stack_name in stack_names():
        state = Stack(stack_name, say_stderr).state()
        up_flag = "up" if state is not None and state.up else "down"
        print(f"  {stack_name}: {up_flag}")
