"""Authenticating and authorizing HTTP callers as Kubernetes components do
(kube-rbac-proxy, aggregated API servers, the kubelet).

The caller sends ``Authorization: Bearer <token>``. A **TokenReview**
(``authentication.k8s.io/v1``) asks the API server who holds that token; a
**SubjectAccessReview** (``authorization.k8s.io/v1``) asks whether RBAC (or
whatever authorizer the cluster runs) lets that user do one
:class:`Permission`. The answer is cached for a few seconds, keyed by a hash
of the token: the token itself is never stored, logged or echoed.

Every step of the decision is a pure function (:func:`bearer_token`,
:func:`token_review`, :func:`user_of`, :func:`access_review`,
:func:`verdict_of`); :class:`KubeAuthorizer` runs them against the API
server through a :data:`Reviewer` (:func:`api_reviewer` in production, a fake
in unit tests). It fails closed: when a review cannot be made, the answer is
503, never "allowed".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from .kube import KubeApiError, request_json

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
SELF_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

#: What the reviewing service's own account must be allowed (``system:auth-delegator``
#: grants exactly these two).
REVIEW_PERMISSIONS: tuple[tuple[str, str, str], ...] = (
    ("create", "authentication.k8s.io", "tokenreviews"),
    ("create", "authorization.k8s.io", "subjectaccessreviews"),
)

#: POST ``body`` (a dict) to ``path`` on the API server; return the parsed answer.
#: Raises on a non-2xx answer or a transport failure.
Reviewer = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

NO_CREDENTIALS = (
    "no credentials: send 'Authorization: Bearer <token>' with a Kubernetes token "
    "(e.g. kubectl create token <serviceaccount>)"
)


@dataclass(frozen=True)
class Permission:
    """The resource attributes of a SubjectAccessReview."""

    verb: str
    group: str
    resource: str
    namespace: str = ""
    name: str = ""

    def attributes(self) -> dict[str, str]:
        out = {"verb": self.verb, "group": self.group, "resource": self.resource}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.name:
            out["name"] = self.name
        return out

    def __str__(self) -> str:
        what = f"{self.verb} {self.resource}" + (f".{self.group}" if self.group else "")
        if self.name:
            what += f" named {self.name}"
        return what + (f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)")


@dataclass(frozen=True)
class User:
    """Who a TokenReview says the token belongs to."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """200 allowed; 401 no or bad credentials; 403 authenticated but not allowed;
    503 the API server could not be asked (not cached)."""

    status: int
    error: str = ""
    user: User | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


# -- the pure steps ----------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str | Decision:
    """The token of an ``Authorization: Bearer <token>`` header, or the 401 to answer.

    Never echoes what was sent: a token sent without its scheme is still a token.
    """
    if authorization is None or not authorization.strip():
        return Decision(401, NO_CREDENTIALS)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return Decision(
            401, "the Authorization header must be 'Bearer <token>' (no other scheme is accepted)"
        )
    token = token.strip()
    if not token:
        return Decision(401, "the Authorization header carries an empty bearer token")
    if any(c.isspace() for c in token) or not token.isprintable():
        return Decision(401, "the bearer token is malformed (whitespace or control characters)")
    return token


def token_review(token: str, audiences: Sequence[str] = ()) -> dict[str, Any]:
    """The TokenReview to POST; no audiences means the API server's own."""
    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = list(audiences)
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}


def user_of(answer: Mapping[str, Any], audiences: Sequence[str] = ()) -> User | Decision:
    """The authenticated user of a TokenReview answer, or the 401 to answer."""
    status = answer.get("status") or {}
    if not status.get("authenticated"):
        why = str(status.get("error") or "").strip()
        return Decision(
            401,
            "the API server did not authenticate this token"
            + (f" for the audience {', '.join(audiences)}" if audiences else "")
            + (f": {why[:300]}" if why else ""),
        )
    if audiences and not set(status.get("audiences") or ()) & set(audiences):
        return Decision(
            401, f"the token is not meant for this service (audience {', '.join(audiences)})"
        )
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username:
        return Decision(401, "the API server authenticated the token but named no user")
    extra = {
        str(k): tuple(str(v) for v in values or ())
        for k, values in (user.get("extra") or {}).items()
    }
    return User(
        username=username,
        uid=str(user.get("uid") or ""),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        extra=extra,
    )


def access_review(user: User, permission: Permission) -> dict[str, Any]:
    """The SubjectAccessReview to POST: the user exactly as the TokenReview named it."""
    spec: dict[str, Any] = {
        "user": user.username,
        "groups": list(user.groups),
        "resourceAttributes": permission.attributes(),
    }
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def verdict_of(answer: Mapping[str, Any], user: User, permission: Permission) -> Decision:
    """200 if the SubjectAccessReview allowed it, else the 403 naming user and permission."""
    status = answer.get("status") or {}
    if status.get("allowed") and not status.get("denied"):
        return Decision(200, user=user)
    reason = str(status.get("reason") or status.get("evaluationError") or "").strip()
    rule = (
        f"verb {permission.verb} on resource {permission.resource} in API group "
        f"{permission.group or '(core)'}"
        + (f", namespace {permission.namespace}" if permission.namespace else "")
    )
    return Decision(
        403,
        f"{user.username} may not {permission}: it needs an RBAC grant of {rule}"
        + (f" ({reason[:300]})" if reason else ""),
        user=user,
    )


# -- against the API server ----------------------------------------------------------------


class KubeAuthorizer:
    """``authorize(Authorization header) -> Decision`` with TokenReview +
    SubjectAccessReview, each token's decision cached ``cache_s`` seconds (allowed
    and refused alike, like kube-rbac-proxy; failures to ask are not cached)."""

    def __init__(
        self,
        review: Reviewer,
        permission: Permission,
        *,
        audiences: Sequence[str] = (),
        cache_s: float = 10.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.review = review
        self.permission = permission
        self.audiences = tuple(audiences)
        self.cache_s = cache_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache: dict[bytes, tuple[float, Decision]] = {}
        self.reviews = 0
        """TokenReviews sent (tests read it to see the cache work)."""

    async def authorize(self, authorization: str | None) -> Decision:
        token = bearer_token(authorization)
        if isinstance(token, Decision):
            return token
        key = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            decision = await self._ask(token)
        except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return Decision(503, f"cannot check the credentials now: {_failure(exc)}")
        if self.cache_s > 0:
            self._remember(key, decision, now)
        return decision

    async def _ask(self, token: str) -> Decision:
        self.reviews += 1
        answer = await self.review(TOKEN_REVIEWS, token_review(token, self.audiences))
        user = user_of(answer, self.audiences)
        if isinstance(user, Decision):
            return user
        verdict = await self.review(ACCESS_REVIEWS, access_review(user, self.permission))
        return verdict_of(verdict, user, self.permission)

    def _remember(self, key: bytes, decision: Decision, now: float) -> None:
        if len(self._cache) >= self.max_entries:
            for old in [k for k, (until, _) in self._cache.items() if until <= now]:
                del self._cache[old]
            while len(self._cache) >= self.max_entries:
                del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[key] = (now + self.cache_s, decision)


def _failure(exc: Exception) -> str:
    if isinstance(exc, KubeApiError) and exc.status == 403:
        kinds = " and ".join(f"{r}.{g}" for _, g, r in REVIEW_PERMISSIONS)
        return (
            f"this service's own account may not review credentials ({exc.message[:200]}); "
            f"it needs create on {kinds} (ClusterRole system:auth-delegator grants both)"
        )
    return f"the API server's review failed: {type(exc).__name__}: {str(exc)[:300]}"


def api_reviewer(api: client.ApiClient, *, timeout: float = 10.0) -> Reviewer:
    """A :data:`Reviewer` posting with this service's own credentials."""

    async def review(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = orjson.loads(await request_json(api, "POST", path, body=body, timeout=timeout))
        if not isinstance(answer, dict):
            raise ValueError(f"{path} answered {type(answer).__name__}, not an object")
        return answer

    return review


async def missing_review_permissions(review: Reviewer) -> list[str]:
    """Which of :data:`REVIEW_PERMISSIONS` this service's own account lacks
    (SelfSubjectAccessReview, allowed to everyone by ``system:basic-user``)."""
    missing = []
    for verb, group, resource in REVIEW_PERMISSIONS:
        attributes = {"verb": verb, "group": group, "resource": resource}
        answer = await review(
            SELF_ACCESS_REVIEWS,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        if not (answer.get("status") or {}).get("allowed"):
            missing.append(f"{verb} {resource}.{group}")
    return missing
