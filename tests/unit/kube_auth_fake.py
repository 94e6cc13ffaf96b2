"""A fake API server for TokenReview and SubjectAccessReview (unit tests).

It answers as kube-apiserver does: a TokenReview of a known token (and one of
its audiences, if the review names some) is authenticated with that token's
user; a SubjectAccessReview is allowed when the user, or one of the groups the
review carries, is granted those exact resource attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.runtime.kube import KubeApiError
from services.runtime.kube_auth import ACCESS_REVIEWS, SELF_ACCESS_REVIEWS, TOKEN_REVIEWS

SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated")


@dataclass
class FakeApiServer:
    #: token -> (username, audiences the token is valid for)
    tokens: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    #: (user or group, frozenset of resourceAttributes items) granted
    grants: set[tuple[str, frozenset[tuple[str, str]]]] = field(default_factory=set)
    #: raise this instead of answering
    fail_with: Exception | None = None
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    self_allowed: bool = True

    def token(self, token: str, username: str, *audiences: str) -> None:
        self.tokens[token] = (username, audiences or ("https://kubernetes.default.svc",))

    def grant(self, subject: str, **attributes: str) -> None:
        self.grants.add((subject, frozenset(attributes.items())))

    def reviews(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]

    async def __call__(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append((path, body))
        if self.fail_with is not None:
            raise self.fail_with
        spec = body["spec"]
        if path == TOKEN_REVIEWS:
            return {"status": self._authenticate(spec)}
        if path == ACCESS_REVIEWS:
            attributes = frozenset(spec["resourceAttributes"].items())
            subjects = [spec["user"], *spec.get("groups", ())]
            allowed = any((s, attributes) in self.grants for s in subjects)
            reason = "" if allowed else "no RBAC policy matched"
            return {"status": {"allowed": allowed, "reason": reason}}
        if path == SELF_ACCESS_REVIEWS:
            return {"status": {"allowed": self.self_allowed}}
        raise KubeApiError(404, "NotFound", path, verb="POST", path=path)

    def _authenticate(self, spec: dict[str, Any]) -> dict[str, Any]:
        known = self.tokens.get(spec["token"])
        if known is None:
            return {"authenticated": False, "error": "invalid bearer token"}
        username, valid_for = known
        wanted = spec.get("audiences") or ["https://kubernetes.default.svc"]
        matched = [a for a in wanted if a in valid_for]
        if not matched:
            return {"authenticated": False, "error": "token audiences is invalid"}
        groups = list(SA_GROUPS) if username.startswith("system:serviceaccount:") else []
        return {
            "authenticated": True,
            "user": {
                "username": username,
                "uid": f"uid-{username}",
                "groups": groups,
                "extra": {"authentication.kubernetes.io/pod-name": ["p-1"]},
            },
            "audiences": matched,
        }
