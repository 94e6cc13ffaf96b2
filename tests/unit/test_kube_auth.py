"""The caller check of services/runtime/kube_auth.py: each pure step, and the
authorizer (reviews, cache, failures) over a fake API server."""

from __future__ import annotations

import pytest

from services.runtime.kube import KubeApiError
from services.runtime.kube_auth import (
    ACCESS_REVIEWS,
    NO_CREDENTIALS,
    TOKEN_REVIEWS,
    Decision,
    KubeAuthorizer,
    Permission,
    User,
    access_review,
    bearer_token,
    missing_review_permissions,
    token_review,
    user_of,
    verdict_of,
)
from tests.unit.kube_auth_fake import FakeApiServer

WRITE = Permission("update", "jobreaper.io", "configs", namespace="ops")
ALICE = User("alice", uid="u-1", groups=("devs", "system:authenticated"))


# -- bearer_token -----------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_authorization_header_is_a_401_saying_what_to_send(header: str | None) -> None:
    assert bearer_token(header) == Decision(401, NO_CREDENTIALS)
    assert "Authorization: Bearer <token>" in NO_CREDENTIALS


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
    ],
)
def test_the_bearer_scheme_is_case_insensitive(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("Basic c2VjcmV0LXBhc3N3b3Jk", "must be 'Bearer <token>'"),
        ("s3cr3t-token-without-scheme", "must be 'Bearer <token>'"),
        ("Bearer", "empty bearer token"),
        ("Bearer   ", "empty bearer token"),
        ("Bearer s3cr3t extra", "malformed"),
        ("Bearer s3cr3t\x00", "malformed"),
    ],
)
def test_a_malformed_header_is_a_401_that_never_echoes_it(header: str, problem: str) -> None:
    decision = bearer_token(header)
    assert isinstance(decision, Decision) and decision.status == 401
    assert problem in decision.error
    for secret in ("c2VjcmV0", "s3cr3t"):
        assert secret not in decision.error


# -- TokenReview -----------------------------------------------------------------------


def test_the_token_review_names_audiences_only_when_configured() -> None:
    assert token_review("t")["spec"] == {"token": "t"}
    assert token_review("t", ["jobreaper-config"])["spec"] == {
        "token": "t",
        "audiences": ["jobreaper-config"],
    }
    assert token_review("t")["kind"] == "TokenReview"
    assert token_review("t")["apiVersion"] == "authentication.k8s.io/v1"


def test_an_unauthenticated_review_is_a_401_with_the_api_servers_reason() -> None:
    decision = user_of({"status": {"authenticated": False, "error": "token has expired"}})
    assert decision == Decision(
        401, "the API server did not authenticate this token: token has expired"
    )
    assert isinstance(user_of({}), Decision)  # no status at all: not authenticated


def test_a_token_for_another_audience_is_a_401() -> None:
    answer = {
        "status": {
            "authenticated": True,
            "user": {"username": "alice"},
            "audiences": ["https://kubernetes.default.svc"],
        }
    }
    decision = user_of(answer, ["jobreaper-config"])
    assert isinstance(decision, Decision) and decision.status == 401
    assert "audience jobreaper-config" in decision.error
    assert user_of(answer) == User("alice")  # no audience required: accepted


def test_an_authenticated_review_gives_the_user_with_groups_uid_and_extra() -> None:
    answer = {
        "status": {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:ns:writer",
                "uid": "u-9",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
            },
        }
    }
    assert user_of(answer) == User(
        "system:serviceaccount:ns:writer",
        uid="u-9",
        groups=("system:serviceaccounts", "system:authenticated"),
        extra={"authentication.kubernetes.io/pod-name": ("p",)},
    )
    nameless = {"status": {"authenticated": True, "user": {}}}
    assert isinstance(user_of(nameless), Decision)


# -- SubjectAccessReview -----------------------------------------------------------------


def test_the_access_review_asks_for_the_user_exactly_as_authenticated() -> None:
    user = User("alice", uid="u-1", groups=("devs",), extra={"k": ("v",)})
    review = access_review(user, WRITE)
    assert review["kind"] == "SubjectAccessReview"
    assert review["apiVersion"] == "authorization.k8s.io/v1"
    assert review["spec"] == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["devs"],
        "extra": {"k": ["v"]},
        "resourceAttributes": {
            "verb": "update",
            "group": "jobreaper.io",
            "resource": "configs",
            "namespace": "ops",
        },
    }
    cluster_wide = Permission("create", "authentication.k8s.io", "tokenreviews")
    assert "namespace" not in access_review(User("bob"), cluster_wide)["spec"]["resourceAttributes"]


def test_an_allowed_review_is_a_200_with_the_user() -> None:
    assert verdict_of({"status": {"allowed": True}}, ALICE, WRITE) == Decision(200, user=ALICE)


@pytest.mark.parametrize(
    "status",
    [
        {"allowed": False, "reason": "no RBAC policy matched"},
        {"allowed": True, "denied": True, "reason": "no RBAC policy matched"},  # denied wins
        {},
    ],
)
def test_a_refused_review_is_a_403_naming_the_user_and_the_permission(
    status: dict[str, object],
) -> None:
    decision = verdict_of({"status": status}, ALICE, WRITE)
    assert decision.status == 403 and decision.user == ALICE
    assert decision.error.startswith("alice may not update configs.jobreaper.io in namespace ops")
    assert "verb update on resource configs in API group jobreaper.io, namespace ops" in (
        decision.error
    )


def test_permission_reads_as_a_sentence() -> None:
    assert str(WRITE) == "update configs.jobreaper.io in namespace ops"
    assert str(Permission("get", "", "pods", name="p")) == "get pods named p (cluster-wide)"


# -- the authorizer ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> FakeApiServer:
    api = FakeApiServer()
    api.token("good", "system:serviceaccount:ns:writer")
    api.token("reader", "system:serviceaccount:ns:reader")
    api.grant(
        "system:serviceaccount:ns:writer",
        verb="update",
        group="jobreaper.io",
        resource="configs",
        namespace="ops",
    )
    return api


async def test_a_granted_token_is_allowed_and_named(server: FakeApiServer) -> None:
    auth = KubeAuthorizer(server, WRITE)
    decision = await auth.authorize("Bearer good")
    assert decision.allowed and decision.user is not None
    assert decision.user.username == "system:serviceaccount:ns:writer"
    # The SubjectAccessReview carried what the TokenReview said, groups and extra too.
    (review,) = server.reviews(ACCESS_REVIEWS)
    assert review["spec"]["user"] == "system:serviceaccount:ns:writer"
    assert "system:serviceaccounts:ns" in review["spec"]["groups"]
    assert review["spec"]["extra"] == {"authentication.kubernetes.io/pod-name": ["p-1"]}


async def test_a_group_grant_counts(server: FakeApiServer) -> None:
    server.grant(
        "system:serviceaccounts:ns",
        verb="update",
        group="jobreaper.io",
        resource="configs",
        namespace="ops",
    )
    assert (await KubeAuthorizer(server, WRITE).authorize("Bearer reader")).allowed


async def test_unknown_and_ungranted_tokens_are_401_and_403(server: FakeApiServer) -> None:
    auth = KubeAuthorizer(server, WRITE)
    unknown = await auth.authorize("Bearer forged")
    assert unknown.status == 401 and "invalid bearer token" in unknown.error
    assert server.reviews(ACCESS_REVIEWS) == [], "no access review for an unknown token"
    reader = await auth.authorize("Bearer reader")
    assert reader.status == 403
    assert reader.error.startswith("system:serviceaccount:ns:reader may not update configs")
    missing = await auth.authorize(None)
    assert missing.status == 401 and server.reviews(TOKEN_REVIEWS) == [
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}}
        for t in ("forged", "reader")
    ], "no review without a token"


async def test_a_wrong_namespace_grant_is_not_enough(server: FakeApiServer) -> None:
    other = Permission("update", "jobreaper.io", "configs", namespace="elsewhere")
    assert (await KubeAuthorizer(server, other).authorize("Bearer good")).status == 403


async def test_audiences_are_required_when_configured(server: FakeApiServer) -> None:
    server.token("aud", "system:serviceaccount:ns:writer", "jobreaper-config")
    auth = KubeAuthorizer(server, WRITE, audiences=["jobreaper-config"])
    assert (await auth.authorize("Bearer aud")).allowed
    plain = await auth.authorize("Bearer good")  # a token for the API server itself
    assert plain.status == 401 and "audience jobreaper-config" in plain.error
    assert server.reviews(TOKEN_REVIEWS)[-1]["spec"]["audiences"] == ["jobreaper-config"]


async def test_decisions_are_cached_for_their_ttl_allowed_and_refused(
    server: FakeApiServer,
) -> None:
    clock = Clock()
    auth = KubeAuthorizer(server, WRITE, cache_s=10, clock=clock)
    for token, status in (("good", 200), ("reader", 403), ("forged", 401)):
        assert (await auth.authorize(f"Bearer {token}")).status == status
    assert auth.reviews == 3
    clock.now += 9.9
    for token, status in (("good", 200), ("reader", 403), ("forged", 401)):
        assert (await auth.authorize(f"Bearer {token}")).status == status
    assert auth.reviews == 3, "answered from the cache"
    # A grant revoked: seen once the entry expires.
    server.grants.clear()
    assert (await auth.authorize("Bearer good")).allowed
    clock.now += 0.2
    assert (await auth.authorize("Bearer good")).status == 403
    assert auth.reviews == 4
    assert all(len(key) == 32 for key in auth._cache), "keyed by a SHA-256, not the token"
    assert "good" not in repr(auth._cache)


async def test_no_cache_when_ttl_is_zero(server: FakeApiServer) -> None:
    auth = KubeAuthorizer(server, WRITE, cache_s=0)
    for _ in range(3):
        assert (await auth.authorize("Bearer good")).allowed
    assert auth.reviews == 3


async def test_the_cache_is_bounded(server: FakeApiServer) -> None:
    clock = Clock()
    auth = KubeAuthorizer(server, WRITE, cache_s=10, max_entries=2, clock=clock)
    for token in ("good", "reader", "forged"):
        await auth.authorize(f"Bearer {token}")
    assert len(auth._cache) == 2
    await auth.authorize("Bearer good")  # the oldest entry was dropped: reviewed again
    assert auth.reviews == 4


async def test_a_review_that_fails_is_a_503_and_is_not_cached(server: FakeApiServer) -> None:
    auth = KubeAuthorizer(server, WRITE)
    server.fail_with = KubeApiError(
        403,
        "Forbidden",
        'tokenreviews.authentication.k8s.io is forbidden: User "x" cannot create',
        verb="POST",
        path=TOKEN_REVIEWS,
    )
    decision = await auth.authorize("Bearer good")
    assert decision.status == 503 and not decision.allowed
    assert "needs create on tokenreviews.authentication.k8s.io" in decision.error
    assert "system:auth-delegator" in decision.error
    server.fail_with = TimeoutError("slow")
    decision = await auth.authorize("Bearer good")
    assert decision.status == 503 and "TimeoutError" in decision.error
    server.fail_with = None
    assert (await auth.authorize("Bearer good")).allowed, "a failure is not remembered"


async def test_the_token_never_appears_in_any_answer(server: FakeApiServer) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.sig"
    server.token(secret, "system:serviceaccount:ns:reader")
    auth = KubeAuthorizer(server, WRITE, cache_s=0)
    decisions = [
        await auth.authorize(f"Bearer {secret}"),
        await auth.authorize(secret),
        await auth.authorize(f"Basic {secret}"),
        await auth.authorize(f"Bearer {secret} {secret}"),
    ]
    server.fail_with = ValueError("bad answer")
    decisions.append(await auth.authorize(f"Bearer {secret}"))
    assert [d.status for d in decisions] == [403, 401, 401, 401, 503]
    assert all(secret not in d.error and "c2VjcmV0" not in d.error for d in decisions)


async def test_missing_review_permissions_asks_about_itself(server: FakeApiServer) -> None:
    assert await missing_review_permissions(server) == []
    server.self_allowed = False
    assert await missing_review_permissions(server) == [
        "create tokenreviews.authentication.k8s.io",
        "create subjectaccessreviews.authorization.k8s.io",
    ]
