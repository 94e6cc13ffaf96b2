"""How the real Job controller reacts to each way of ending a running Job (issue #17).

    eval "$(uv run jobreaper-dev stack env --name dev)"; export KUBECONFIG
    uv run python bench/probe_job_kill.py MECHANISM [--stubborn] [--force-after S]
        [--then MECHANISM] [--cronjob] [--timeout S] [--keep]

Creates a scratch namespace and a Job (``parallelism`` 3, ``completions`` 3,
``backoffLimit`` 6, pods that run for ever on kwok), waits until its 3 pods
are Ready, applies MECHANISM to the Job and watches the Job and its pods
until the Job has a terminal condition (``Failed``/``Complete``) or
``--timeout`` s passed, then 10 s more to catch late replacements. Prints,
with seconds counted from the call: each Job condition as it appeared, every
pod created or marked for deletion after the call, the API answer of the
call, the Job's final conditions and the Events of the Job. Figures for
docs/design/job-level-kill.md.

MECHANISM:
  deadline        PATCH jobs/NAME   spec.activeDeadlineSeconds = max(1, now - status.startTime)
  suspend         PATCH jobs/NAME   spec.suspend = true
  failure-target  PATCH jobs/NAME/status  adds condition FailureTarget, reason JobReaperKilled
  failed          PATCH jobs/NAME/status  adds FailureTarget and Failed at once (expected 422)
  pod-condition   the Job is created with a podFailurePolicy FailJob on pod condition
                  DisruptionTarget; PATCH pods/NAME/status adds that condition
                  (reason JobReaperKill), then PATCH pods/NAME spec.activeDeadlineSeconds=1
                  (kwok fails the pod, as a kubelet would)
  delete          DELETE jobs/NAME  propagationPolicy Background
  none            nothing (with --then: a baseline)

--stubborn: the pods ignore their deadline and their graceful deletion hangs
for an hour (a pod on a lost node, per docs/stack.md). --force-after S:
S seconds after the call, force-delete (grace 0) every pod still Terminating
(the ladder's last rung) and keep watching. --then M: 15 s after the first
call, apply M too (e.g. ``suspend --then failure-target``). --cronjob: the
Job is made by a CronJob (``*/1 * * * *``, ``concurrencyPolicy: Forbid``);
the probe applies MECHANISM to its first Job and reports when the next Job
is created. Each answer of the API server is printed as is, errors included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from kubernetes_asyncio import client

from services.runtime.kube import KubeApiError, load_api_client, raw_request, request_json

IMAGE = "registry.invalid/jobreaper/noop:1"  # kwok never pulls images
KILL_REASON = "JobReaperKilled"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class Probe:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.t0 = 0.0
        self.log: list[tuple[float, str]] = []
        self.job_conditions: dict[str, dict[str, str]] = {}  # job -> condition type -> status
        self.pods: dict[str, dict[str, Any]] = {}  # name -> first seen, deletion seen
        self.jobs_seen: dict[str, float] = {}

    def note(self, what: str) -> None:
        at = time.time() - self.t0 if self.t0 else 0.0
        self.log.append((at, what))
        print(f"{at:+8.2f}s  {what}", flush=True)

    async def call(self, verb: str, path: str, body: Any = None, ctype: str = MERGE) -> Any:
        try:
            raw = await request_json(self.api, verb, path, body=body, content_type=ctype)
        except KubeApiError as exc:
            self.note(f"{verb} {path} -> HTTP {exc.status} {exc.reason}: {exc.message}")
            return None
        return orjson.loads(raw) if raw else None

    async def watch(self, path: str, on_event: Any) -> None:
        listed = await self.call("GET", path)
        version = listed["metadata"]["resourceVersion"]
        for item in listed["items"]:
            on_event("ADDED", item)
        while True:
            response = await raw_request(
                self.api,
                "GET",
                path,
                query=[("watch", "true"), ("resourceVersion", version)],
                timeout=None,
            )
            try:
                async for line in response.content:
                    event = orjson.loads(line)
                    obj = event["object"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        version = obj["metadata"]["resourceVersion"]
                        on_event(event["type"], obj)
            finally:
                response.release()

    def on_job(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if name not in self.jobs_seen:
            self.jobs_seen[name] = time.time()
            if self.t0:
                self.note(f"job {name} created ({job['metadata']['creationTimestamp']})")
        seen = self.job_conditions.setdefault(name, {})
        for cond in job.get("status", {}).get("conditions") or []:
            if seen.get(cond["type"]) != cond["status"]:
                seen[cond["type"]] = cond["status"]
                self.note(
                    f"job {name} condition {cond['type']}={cond['status']} "
                    f"reason={cond.get('reason')} message={cond.get('message')!r}"
                )
        if kind == "DELETED":
            self.note(f"job {name} deleted")

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        name = meta["name"]
        record = self.pods.get(name)
        if record is None:
            record = self.pods[name] = {"seen": time.time(), "created": meta["creationTimestamp"]}
            if self.t0:
                self.note(f"pod {name} created ({meta['creationTimestamp']})")
        if meta.get("deletionTimestamp") and "deleting" not in record:
            record["deleting"] = time.time()
            if self.t0:
                self.note(f"pod {name} marked for deletion, phase {pod['status'].get('phase')}")
        phase = pod.get("status", {}).get("phase")
        if phase != record.get("phase"):
            record["phase"] = phase
            if self.t0 and phase in ("Failed", "Succeeded"):
                self.note(f"pod {name} phase {phase} reason {pod['status'].get('reason')}")
        if kind == "DELETED":
            record["gone"] = time.time()
            if self.t0:
                self.note(f"pod {name} gone")


def job_spec(stubborn: bool, pod_failure_policy: bool) -> dict[str, Any]:
    labels = {"jobreaper.test/ignore-deadline": "true"} if stubborn else {}
    annotations = {"pod-complete.stage.kwok.x-k8s.io/delay": "never"}
    if stubborn:
        annotations["pod-delete.stage.kwok.x-k8s.io/delay"] = "1h"
    spec: dict[str, Any] = {
        "parallelism": 3,
        "completions": 3,
        "backoffLimit": 6,
        "template": {
            "metadata": {"labels": labels, "annotations": annotations},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "main", "image": IMAGE}],
            },
        },
    }
    if pod_failure_policy:
        spec["podFailurePolicy"] = {
            "rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}]
        }
    return spec


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def apply(probe: Probe, mechanism: str, job: str) -> None:
    jobs = f"/apis/batch/v1/namespaces/{probe.ns}/jobs/{job}"
    if mechanism == "deadline":
        current = await probe.call("GET", jobs)
        start = current["status"].get("startTime")
        elapsed = 1
        if start:
            started = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            elapsed = max(1, math.floor(time.time() - started.timestamp()))
        probe.note(f"PATCH {jobs} spec.activeDeadlineSeconds={elapsed} (startTime {start})")
        answer = await probe.call("PATCH", jobs, {"spec": {"activeDeadlineSeconds": elapsed}})
    elif mechanism == "suspend":
        probe.note(f"PATCH {jobs} spec.suspend=true")
        answer = await probe.call("PATCH", jobs, {"spec": {"suspend": True}})
    elif mechanism in ("failure-target", "failed"):
        types = ["FailureTarget"] if mechanism == "failure-target" else ["FailureTarget", "Failed"]
        stamp = now_rfc3339()
        conditions = [
            {
                "type": kind,
                "status": "True",
                "reason": KILL_REASON,
                "message": "killed by jobreaper: kill time 2026-01-01T00:00:00Z reached (probe)",
                "lastProbeTime": stamp,
                "lastTransitionTime": stamp,
            }
            for kind in types
        ]
        probe.note(f"PATCH {jobs}/status (strategic) add conditions {types}")
        answer = await probe.call(
            "PATCH", f"{jobs}/status", {"status": {"conditions": conditions}}, STRATEGIC
        )
    elif mechanism == "pod-condition":
        pods = await probe.call("GET", f"/api/v1/namespaces/{probe.ns}/pods")
        answer = None
        for pod in pods["items"]:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            path = f"/api/v1/namespaces/{probe.ns}/pods/{pod['metadata']['name']}"
            cond = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "JobReaperKill",
                "message": "killed by jobreaper (probe)",
                "lastTransitionTime": now_rfc3339(),
            }
            probe.note(f"PATCH {path}/status (strategic) add condition DisruptionTarget")
            answer = await probe.call(
                "PATCH", f"{path}/status", {"status": {"conditions": [cond]}}, STRATEGIC
            )
            probe.note(f"PATCH {path} spec.activeDeadlineSeconds=1")
            await probe.call("PATCH", path, {"spec": {"activeDeadlineSeconds": 1}})
    elif mechanism == "delete":
        probe.note(f"DELETE {jobs} propagationPolicy=Background")
        answer = await probe.call(
            "DELETE",
            jobs,
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            "application/json",
        )
    elif mechanism == "none":
        return
    else:
        raise SystemExit(f"unknown mechanism {mechanism}")
    if answer is not None and answer.get("kind") == "Job":
        spec = answer["spec"]
        probe.note(
            f"answered 2xx: spec.suspend={spec.get('suspend')} "
            f"spec.activeDeadlineSeconds={spec.get('activeDeadlineSeconds')}"
        )


def terminal(probe: Probe, job: str) -> bool:
    seen = probe.job_conditions.get(job, {})
    return seen.get("Failed") == "True" or seen.get("Complete") == "True"


async def main(args: argparse.Namespace) -> None:
    api = await load_api_client(None)
    ns = f"jk-{args.mechanism}-{uuid.uuid4().hex[:6]}"
    probe = Probe(api, ns)
    await probe.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, "application/json")
    print(f"namespace {ns}", flush=True)
    tasks: list[asyncio.Task[None]] = []
    try:
        spec = job_spec(args.stubborn, args.mechanism == "pod-condition")
        if args.cronjob:
            await probe.call(
                "POST",
                f"/apis/batch/v1/namespaces/{ns}/cronjobs",
                {
                    "metadata": {"name": "cj"},
                    "spec": {
                        "schedule": "*/1 * * * *",
                        "concurrencyPolicy": "Forbid",
                        "jobTemplate": {"spec": spec},
                    },
                },
                "application/json",
            )
        else:
            await probe.call(
                "POST",
                f"/apis/batch/v1/namespaces/{ns}/jobs",
                {"metadata": {"name": "victim"}, "spec": spec},
                "application/json",
            )
        tasks.append(
            asyncio.create_task(probe.watch(f"/apis/batch/v1/namespaces/{ns}/jobs", probe.on_job))
        )
        tasks.append(
            asyncio.create_task(probe.watch(f"/api/v1/namespaces/{ns}/pods", probe.on_pod))
        )
        job = await ready_job(probe, args.cronjob)
        probe.t0 = time.time()
        await apply(probe, args.mechanism, job)
        forced = args.force_after is None
        then_done = args.then is None
        settle_until: float | None = None
        while time.time() - probe.t0 < args.timeout:
            elapsed = time.time() - probe.t0
            if not then_done and elapsed >= 15:
                then_done = True
                await apply(probe, args.then, job)
            if not forced and elapsed >= args.force_after:
                forced = True
                await force_delete_terminating(probe)
            done = terminal(probe, job) or (args.mechanism == "delete" and job_gone(probe))
            if args.cronjob:
                done = done and any(name != job for name in probe.jobs_seen)
            if done and then_done and settle_until is None:
                settle_until = time.time() + 10
            if settle_until is not None and time.time() >= settle_until:
                break
            await asyncio.sleep(0.1)
        await report(probe, job)
    finally:
        for task in tasks:
            task.cancel()
        if not args.keep:
            await cleanup(probe)
        await api.close()


def job_gone(probe: Probe) -> bool:
    return any(what.endswith("deleted") and what.startswith("job ") for _, what in probe.log)


async def ready_job(probe: Probe, cronjob: bool) -> str:
    """The Job to act on, once its 3 pods are Ready."""
    while True:
        jobs = await probe.call("GET", f"/apis/batch/v1/namespaces/{probe.ns}/jobs")
        for job in jobs["items"]:
            if job.get("status", {}).get("ready") == 3:
                name: str = job["metadata"]["name"]
                print(f"job {name} has 3 ready pods; acting now", flush=True)
                return name
        await asyncio.sleep(0.5 if not cronjob else 1)


async def force_delete_terminating(probe: Probe) -> None:
    pods = await probe.call("GET", f"/api/v1/namespaces/{probe.ns}/pods")
    for pod in pods["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            path = f"/api/v1/namespaces/{probe.ns}/pods/{pod['metadata']['name']}"
            probe.note(f"DELETE {path} gracePeriodSeconds=0 (force)")
            await probe.call(
                "DELETE",
                path,
                {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
                "application/json",
            )


def first_at(probe: Probe, *needles: str) -> str:
    """Seconds from the call to the first log line holding one of ``needles``."""
    at = next((at for at, what in probe.log if any(n in what for n in needles)), None)
    return "never" if at is None else f"{at:.2f} s"


async def report(probe: Probe, job: str) -> None:
    print("\n== summary", flush=True)
    after = [(n, r) for n, r in probe.pods.items() if r["seen"] > probe.t0]
    print(f"pods created after the call: {len(after)}")
    for name, record in sorted(after, key=lambda x: x[1]["seen"]):
        print(f"  {name} +{record['seen'] - probe.t0:.2f}s (creationTimestamp {record['created']})")
    print(f"call -> FailureTarget: {first_at(probe, f'job {job} condition FailureTarget=True')}")
    terminal = first_at(
        probe, f"job {job} condition Failed=True", f"job {job} condition Complete=True"
    )
    print(f"call -> terminal condition: {terminal}")
    current = await probe.call("GET", f"/apis/batch/v1/namespaces/{probe.ns}/jobs/{job}")
    if current:
        spec = {k: current["spec"].get(k) for k in ("suspend", "activeDeadlineSeconds")}
        print("final job status:")
        print(json.dumps({"spec": spec, "status": current["status"]}, indent=2))
    events = await probe.call("GET", f"/api/v1/namespaces/{probe.ns}/events")
    print("events:")
    for ev in sorted(events["items"], key=lambda e: e.get("lastTimestamp") or ""):
        about = f"{ev['involvedObject']['kind']}/{ev['involvedObject']['name']}"
        print(f"  {about}: {ev['type']} {ev['reason']}: {ev['message']} (x{ev.get('count', 1)})")
    pods = await probe.call("GET", f"/api/v1/namespaces/{probe.ns}/pods")
    print("pods left:")
    for pod in pods["items"]:
        meta = pod["metadata"]
        deleting = bool(meta.get("deletionTimestamp"))
        print(
            f"  {meta['name']} phase={pod['status'].get('phase')} deleting={deleting} "
            f"finalizers={meta.get('finalizers')}"
        )


async def cleanup(probe: Probe) -> None:
    """Force-delete every pod (some hang for an hour by design), then the namespace."""
    for kind, path in (("cronjobs", "/apis/batch/v1"), ("jobs", "/apis/batch/v1")):
        await probe.call(
            "DELETE",
            f"{path}/namespaces/{probe.ns}/{kind}",
            {"propagationPolicy": "Background"},
            "application/json",
        )
    pods = await probe.call("GET", f"/api/v1/namespaces/{probe.ns}/pods")
    for pod in (pods or {}).get("items", []):
        path = f"/api/v1/namespaces/{probe.ns}/pods/{pod['metadata']['name']}"
        if pod["metadata"].get("finalizers"):
            await probe.call("PATCH", path, {"metadata": {"finalizers": None}})
        await probe.call("DELETE", path, {"gracePeriodSeconds": 0}, "application/json")
    await probe.call("DELETE", f"/api/v1/namespaces/{probe.ns}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mechanism")
    parser.add_argument("--stubborn", action="store_true")
    parser.add_argument("--force-after", type=float)
    parser.add_argument("--then")
    parser.add_argument("--cronjob", action="store_true")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--keep", action="store_true")
    asyncio.run(main(parser.parse_args()))
