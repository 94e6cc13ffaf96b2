"""``jobreaper-dev demo``: the live demo on the local stack (the README's first command)."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path

import typer
from kubernetes_asyncio import client
from rich.console import Console

from devtools.stack.api import StackError, StackInfo, ensure_stack, stack_from_env, stop_stack
from devtools.stack.stack import Stack
from services.runtime.cli_support import fail
from services.runtime.kube import load_api_client

from . import processes
from .run import Demo, Options

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def demo(
    stack: str = typer.Option(
        "demo", "--stack", metavar="NAME", help="The local stack to use (started if needed)"
    ),
    from_env: bool = typer.Option(
        False,
        "--from-env",
        help="Use the running stack that `jobreaper-dev stack env` exported (JOBREAPER_STACK_DIR); "
        "never start or stop it (tests, CI)",
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Leave the stack, the services and the namespace up to explore"
    ),
    plain: bool | None = typer.Option(
        None,
        "--plain/--live",
        help="Plain lines instead of a live table (default: plain when stdout is not a terminal)",
    ),
    timeout: float = typer.Option(
        150, "--timeout", min=30, help="Seconds the scenarios may take before the demo fails"
    ),
    later: int = typer.Option(
        20, "--later", min=5, max=300, help="Seconds ahead of the kill-later Job's kill time"
    ),
    stop: bool = typer.Option(
        False, "--stop", help="Stop what a --keep run left (services, namespace) and exit"
    ),
    picture: Path | None = typer.Option(
        None,
        "--picture",
        metavar="FILE.svg",
        help="Also write the node-lost Job's audit timeline as a picture (the one in "
        "docs/pictures/ is made so: docs/pictures/README.md)",
    ),
) -> None:
    """Watch jobreaper kill Jobs on a real (local) Kubernetes, in about a minute.

    The demo brings up the local stack (Kafka, etcd, kube-apiserver, controller
    manager, scheduler, kwok nodes; the first run builds them: minutes), runs
    jobreaper's services as processes (watcher, killer, executor, config),
    creates four Jobs in a fresh namespace, and shows each one live:

      finishes    completes by itself: jobreaper does nothing

      kill-now    `jobreaper kill`: its pod's deadline is lowered, it fails

      kill-later  a kill time 20 s ahead: nothing until then, then the same

      node-lost   its node is lost: deadline, then delete, then force delete

    The ladder timeouts are shortened for the demo's namespace by a config
    version (4 s and 6 s instead of 180 s and 900 s). At the end: a summary
    with kill latencies, the audit of the node-lost Job, and cleanup (also on
    Ctrl-C). Exit status 1 if a scenario did not reach its expected end.

    Examples:

      ./dev demo                      (sets up Python, then runs this)

      uv run jobreaper-dev demo --keep    (then explore; `jobreaper-dev demo --stop` after)
    """
    if plain is None:
        plain = not sys.stdout.isatty()
    # Plain: no colours, and no wrapping (one line per event, for logs and grep).
    console = Console(no_color=plain, soft_wrap=plain)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # CI logs show each line as it happens
    if stop:
        _stop_kept(stack, from_env, console)
        return
    begin = time.monotonic()
    info, started = _stack(stack, from_env, console)

    def stop_our_stack() -> None:
        if started:
            console.print(f"==> stopping the local stack '{stack}' (the demo started it)")
            stop_stack(stack)

    if picture is not None and picture.suffix.lower() != ".svg":
        raise typer.BadParameter(f"{picture}: the picture's name must end in .svg")
    options = Options(keep=keep, plain=plain, timeout_s=timeout, later_s=later, picture=picture)
    try:
        code = asyncio.run(Demo(info, options, console, stop_stack=stop_our_stack).run())
    except KeyboardInterrupt:
        console.print("jobreaper demo: interrupted; cleaned up")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # one line, not a traceback, for a person watching a demo
        raise fail(f"demo failed: {type(exc).__name__}: {exc}", EXIT_FAILED) from exc
    console.print(f"demo finished in {time.monotonic() - begin:.0f}s")
    raise typer.Exit(code)


def _stack(name: str, from_env: bool, console: Console) -> tuple[StackInfo, bool]:
    """The stack to use, and whether this run started it (then it stops it too)."""
    if from_env:
        try:
            info = stack_from_env()
        except StackError as exc:
            raise fail(str(exc), EXIT_USAGE) from exc
        if info is None:
            raise fail(
                "--from-env: JOBREAPER_STACK_DIR is not set "
                '(run: eval "$(jobreaper-dev stack env --name NAME)")',
                EXIT_USAGE,
            )
        return info, False
    was_up = Stack(name, lambda _: None).info() is not None
    if not was_up:
        console.print(
            f"==> bringing up the local stack '{name}': Kafka, Kubernetes control plane, kwok. "
            "The first run on a machine builds them from source (several minutes, cached in "
            "~/.cache/jobreaper); later runs take seconds"
        )
    try:
        info = ensure_stack(name, say=lambda line: console.print(f"    {line}"))
    except StackError as exc:
        raise fail(f"the local stack: {exc}", EXIT_FAILED) from exc
    except KeyboardInterrupt:
        raise fail("interrupted while starting the stack", EXIT_INTERRUPTED) from None
    return info, not was_up


def _stop_kept(name: str, from_env: bool, console: Console) -> None:
    info = stack_from_env() if from_env else None
    if info is None:
        info = Stack(name, lambda _: None).info()
    if info is None or info.stack_dir is None:
        console.print(f"no running stack '{name}': nothing to stop")
        return
    namespace = processes.stop_kept(info.stack_dir, lambda line: console.print(f"==> {line}"))
    if namespace is None:
        console.print("no services left by a --keep run")
        return

    async def delete() -> None:
        api = await load_api_client(str(info.kubeconfig))
        try:
            await client.CoreV1Api(api).delete_namespace(namespace)
        finally:
            await api.close()

    console.print(f"==> deleting namespace {namespace}")
    try:
        asyncio.run(delete())
    except Exception as exc:
        console.print(f"    could not delete it: {exc}")
    console.print(f"the stack is still up: uv run jobreaper-dev stack down --name {name}")
