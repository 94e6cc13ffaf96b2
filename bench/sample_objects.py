"""Realistic Kubernetes objects as the API server sends them in watch lines.

The pod is a Job pod as kube-apiserver 1.34 serves it, managed fields
included, about 3.5 KB of JSON: the size the watcher sees most.
"""

from __future__ import annotations

import json
from typing import Any


def job_pod(
    i: int = 0, *, phase: str = "Running", node: str | None = "kwok-node-0"
) -> dict[str, Any]:
    uid = f"6f1c2d3e-{i:04d}-4a5b-9c8d-{i:012d}"
    job_uid = f"0a1b2c3d-{i:04d}-4e5f-8a9b-{i:012d}"
    started = "2026-11-23T10:00:05Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"nightly-report-{i}-x7k2p",
            "generateName": f"nightly-report-{i}-",
            "namespace": "analytics",
            "uid": uid,
            "resourceVersion": str(100000 + i),
            "creationTimestamp": "2026-11-23T10:00:00Z",
            "labels": {
                "batch.kubernetes.io/controller-uid": job_uid,
                "batch.kubernetes.io/job-name": f"nightly-report-{i}",
                "controller-uid": job_uid,
                "job-name": f"nightly-report-{i}",
                "team": "analytics",
            },
            "annotations": {
                "batch.kubernetes.io/job-completion-index": "0",
                "jobreaper.io/running-timeout-seconds": "3600",
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": f"nightly-report-{i}",
                    "uid": job_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "finalizers": ["batch.kubernetes.io/job-tracking"],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-23T10:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:finalizers": {".": {}, 'v:"batch.kubernetes.io/job-tracking"': {}},
                            "f:generateName": {},
                            "f:labels": {
                                ".": {},
                                "f:batch.kubernetes.io/controller-uid": {},
                                "f:batch.kubernetes.io/job-name": {},
                                "f:controller-uid": {},
                                "f:job-name": {},
                            },
                            "f:ownerReferences": {".": {}, f'k:{{"uid":"{job_uid}"}}': {}},
                        },
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"main"}': {
                                    ".": {},
                                    "f:image": {},
                                    "f:name": {},
                                    "f:resources": {},
                                }
                            },
                            "f:restartPolicy": {},
                            "f:schedulerName": {},
                        },
                    },
                },
                {
                    "manager": "kwok",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-23T10:00:06Z",
                    "fieldsType": "FieldsV1",
                    "subresource": "status",
                    "fieldsV1": {
                        "f:status": {
                            "f:conditions": {},
                            "f:containerStatuses": {},
                            "f:hostIP": {},
                            "f:phase": {},
                            "f:podIP": {},
                            "f:startTime": {},
                        }
                    },
                },
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example.com/analytics/report:2026.11.1",
                    "args": ["--date", "2026-11-22", "--output", "s3://reports/nightly"],
                    "resources": {
                        "limits": {"cpu": "2", "memory": "4Gi"},
                        "requests": {"cpu": "1", "memory": "2Gi"},
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": node,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "PodReadyToStartContainers",
                    "status": "True",
                    "lastTransitionTime": "2026-11-23T10:00:05Z",
                },
                {
                    "type": "Initialized",
                    "status": "True",
                    "lastTransitionTime": "2026-11-23T10:00:05Z",
                },
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T10:00:06Z"},
                {
                    "type": "ContainersReady",
                    "status": "True",
                    "lastTransitionTime": "2026-11-23T10:00:06Z",
                },
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-11-23T10:00:01Z",
                },
            ],
            "hostIP": "10.0.0.17",
            "hostIPs": [{"ip": "10.0.0.17"}],
            "podIP": "10.244.3.21",
            "podIPs": [{"ip": "10.244.3.21"}],
            "startTime": started,
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {"running": {"startedAt": "2026-11-23T10:00:06Z"}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.example.com/analytics/report:2026.11.1",
                    "imageID": "registry.example.com/analytics/report@sha256:" + "ab" * 32,
                    "containerID": "containerd://" + "cd" * 32,
                    "started": True,
                }
            ],
            "qosClass": "Burstable",
        },
    }


def watch_line(obj: dict[str, Any], event: str = "MODIFIED") -> bytes:
    return json.dumps({"type": event, "object": obj}, separators=(",", ":")).encode() + b"\n"


if __name__ == "__main__":
    print(len(watch_line(job_pod())), "bytes")
