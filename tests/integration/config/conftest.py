"""Who may write the configuration, on the real API server: the manifests'
ClusterRoles (deploy/kubernetes/base/config.yaml) applied for one test, and
ServiceAccounts whose tokens (TokenRequest) the tests send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest_asyncio
import yaml
from kubernetes_asyncio import client

from devtools.stack.api import StackInfo
from services.runtime.kube import KubeApiError, raw_request, request_json
from tests.integration.helpers import eventually, service_account_kubeconfig

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "deploy" / "kubernetes" / "base" / "config.yaml"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def manifest_cluster_role(name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == name:
            return dict(doc)
    raise AssertionError(f"no ClusterRole {name} in {MANIFEST}")


@dataclass
class Accounts:
    """ServiceAccounts in the test's namespace: ``writer`` is bound (RoleBinding) to the
    manifests' ``jobreaper-config-writer``, ``reader`` to nothing, ``service`` (the
    config service's own) to ``jobreaper-config-auth`` (ClusterRoleBinding)."""

    api: client.ApiClient
    stack: StackInfo
    namespace: str
    service_kubeconfig: Path

    def user(self, account: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{account}"

    async def token(self, account: str, *audiences: str) -> str:
        """A 10-minute token of ``account`` (TokenRequest); no audience: the API server's."""
        answer = await client.CoreV1Api(self.api).create_namespaced_service_account_token(
            account,
            self.namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=list(audiences), expiration_seconds=600)
            ),
        )
        token: str = answer.status.token
        return token

    async def token_file(self, path: Path, account: str, *audiences: str) -> Path:
        path.write_text(await self.token(account, *audiences) + "\n")
        return path


async def _allowed(api: client.ApiClient, user: str, groups: list[str], **attrs: str) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attrs},
    }
    answer = orjson.loads(
        await request_json(
            api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
        )
    )
    return bool(answer["status"].get("allowed"))


@pytest_asyncio.fixture(loop_scope="session")
async def accounts(
    kube_api: client.ApiClient, stack: StackInfo, namespace: str, tmp_path: Path
) -> AsyncIterator[Accounts]:
    core = client.CoreV1Api(kube_api)
    for name in ("service", "writer", "reader"):
        await core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    auth_role = manifest_cluster_role("jobreaper-config-auth")
    writer_role = manifest_cluster_role("jobreaper-config-writer")
    cluster_objects: list[str] = []
    for role in (auth_role, writer_role):
        role["metadata"] = {"name": f"{role['metadata']['name']}-{namespace}"}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"jobreaper-config-auth-{namespace}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": auth_role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "service", "namespace": namespace}],
    }
    writers = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "config-writers", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": writer_role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": namespace}],
    }
    try:
        for path, body in (
            (f"{RBAC}/clusterroles", auth_role),
            (f"{RBAC}/clusterroles", writer_role),
            (f"{RBAC}/clusterrolebindings", binding),
        ):
            await request_json(kube_api, "POST", path, body=body)
            cluster_objects.append(f"{path}/{body['metadata']['name']}")
        await request_json(
            kube_api, "POST", f"{RBAC}/namespaces/{namespace}/rolebindings", body=writers
        )
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]

        async def in_effect() -> bool:
            # The API server's RBAC cache sees new bindings a moment later: wait, so
            # that no review (cached by the service) is made before.
            return await _allowed(
                kube_api,
                f"system:serviceaccount:{namespace}:writer",
                groups,
                verb="update",
                group="jobreaper.io",
                resource="configs",
                namespace=namespace,
            ) and await _allowed(
                kube_api,
                f"system:serviceaccount:{namespace}:service",
                groups,
                verb="create",
                group="authentication.k8s.io",
                resource="tokenreviews",
            )

        await eventually("the RBAC bindings in effect", in_effect)
        kubeconfig = await service_account_kubeconfig(
            kube_api, stack, namespace, "service", tmp_path / "service.kubeconfig"
        )
        yield Accounts(kube_api, stack, namespace, kubeconfig)
    finally:
        for path in reversed(cluster_objects):
            try:
                (await raw_request(kube_api, "DELETE", path)).release()
            except KubeApiError as exc:
                if exc.status != 404:
                    raise
