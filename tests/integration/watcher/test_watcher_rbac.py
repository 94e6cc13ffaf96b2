"""An RBAC denial names the missing permission and exits non-zero (issue 4), with a
real ServiceAccount token on the real API server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from tests.integration.helpers import service_account_kubeconfig

pytestmark = pytest.mark.stack


async def _kubeconfig_for(
    kube_api: client.ApiClient, stack: StackInfo, namespace: str, account: str, path: Path
) -> Path:
    await client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    return await service_account_kubeconfig(kube_api, stack, namespace, account, path)


async def _run_watcher(
    kubeconfig: Path, stack: StackInfo, namespace: str, prefix: str
) -> tuple[int, str]:
    env = {
        **os.environ,
        "JOBREAPER_KUBECONFIG": str(kubeconfig),
        "JOBREAPER_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "JOBREAPER_KAFKA_TOPIC_PREFIX": prefix,
        "JOBREAPER_HTTP_PORT": "0",
        "JOBREAPER_WATCHER_NAMESPACES": namespace,
        "JOBREAPER_WATCHER_LEASE_NAMESPACE": namespace,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "watcher",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    last = err.decode().strip().splitlines()[-1] if err.strip() else ""
    return proc.returncode, last


async def test_each_missing_permission_is_named_and_the_watcher_exits(
    stack: StackInfo, kube_api: client.ApiClient, namespace: str, topic_prefix: str, tmp_path: Path
) -> None:
    kubeconfig = await _kubeconfig_for(kube_api, stack, namespace, "nobody", tmp_path / "kc")

    code, message = await _run_watcher(kubeconfig, stack, namespace, topic_prefix)
    assert code == 3
    assert message.startswith("jobreaper: ")
    assert "leases.coordination.k8s.io" in message, message

    # Grant the Lease only: the next denial names what is still missing.
    rbac = client.RbacAuthorizationV1Api(kube_api)
    await rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="lease"),
            rules=[
                client.V1PolicyRule(
                    api_groups=["coordination.k8s.io"],
                    resources=["leases"],
                    verbs=["get", "create", "update"],
                )
            ],
        ),
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="lease"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="lease"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)
            ],
        ),
    )
    await asyncio.sleep(1)
    code, message = await _run_watcher(kubeconfig, stack, namespace, topic_prefix)
    assert code == 3
    assert "get, list and watch on" in message, message
    kinds = ("jobs", "pods", "nodes", "persistentvolumeclaims")
    assert any(kind in message for kind in kinds), message
