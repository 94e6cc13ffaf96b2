"""The HTTP API of the config service (its own port, beside /healthz and /metrics).

- ``GET /config``: the configuration in force, its version and ``ETag: "<version>"``.
- ``PUT /config`` (only with ``source=http``): a whole new configuration.
  The caller must send ``Authorization: Bearer <token>``: the API server
  authenticates the token (TokenReview; 401 when it is missing or refused) and
  authorizes its user for verb ``update`` on ``configs`` in API group
  ``jobreaper.io`` in ``api_auth_namespace`` (SubjectAccessReview; 403 naming
  the user and the permission). That user is the author recorded in the
  snapshot; no request header can set it (``X-Remote-User`` and
  ``X-Jobreaper-Author`` are ignored). ``api_auth=none`` (local development,
  loopback only) skips the check and records ``unauthenticated@<peer>``.
  ``If-Match`` is required (428 without it): the ETag it was based on, or
  ``*`` to overwrite whatever is current. A stale ETag gets 409 and nothing
  is published; a rejected document gets 422 with every problem and its
  JSON path; an unchanged one 200 with ``"published": false``.
- ``POST /config/validate``: the same checks and the diff against the
  version in force, publishing nothing (200 valid, 422 invalid).
- ``GET /config/history``: the snapshots this replica has read.

A standby replica answers GETs and validation; a PUT there gets 503 with
``Retry-After``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.runtime.logging import get_logger

from .diff import canonical, diff
from .validation import Report, validate_text
from .versioning import BadIfMatch, Head, etag, parse_if_match

if TYPE_CHECKING:
    from schemas.config import ConfigSnapshot

    from .service import ConfigService

log = get_logger(__name__)

JSON = "application/json"
REALM = 'Bearer realm="jobreaper-config"'
WRITER_ROLE = "jobreaper-config-writer"
_RESULTS = {200: "allowed", 401: "unauthenticated", 403: "forbidden"}


def snapshot_json(snapshot: ConfigSnapshot) -> dict[str, Any]:
    return {
        "version": snapshot.version,
        "config": canonical(snapshot.config),
        "author": snapshot.author,
        "source": snapshot.source,
        "changed_at": snapshot.changed_at.isoformat().replace("+00:00", "Z"),
        "diff": list(snapshot.diff),
        "digest": snapshot.digest,
    }


def head_json(head: Head) -> dict[str, Any]:
    if head.snapshot is not None:
        return snapshot_json(head.snapshot)
    return {
        "version": 0,
        "config": canonical(head.config),
        "author": "",
        "source": "built-in defaults (nothing published yet)",
        "changed_at": None,
        "diff": [],
        "digest": head.digest,
    }


def report_json(report: Report) -> dict[str, Any]:
    return {
        "errors": [issue.as_json() for issue in report.errors],
        "warnings": [issue.as_json() for issue in report.warnings],
    }


def grant_hint(username: str, namespace: str) -> str:
    """The kubectl command that would let ``username`` write (for a 403's message)."""
    parts = username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        subject = f"--serviceaccount={parts[2]}:{parts[3]}"
    else:
        subject = f"--user={username}"
    where = f"-n {namespace} create rolebinding" if namespace else "create clusterrolebinding"
    return f"kubectl {where} <name> --clusterrole={WRITER_ROLE} {subject}"


class ConfigApi:
    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/config", self.get_config)
        app.router.add_put("/config", self.put_config)
        app.router.add_post("/config/validate", self.validate)
        app.router.add_get("/config/history", self.history)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -------------------------------------------------------------------

    async def get_config(self, request: web.Request) -> web.Response:
        head = self.service.head
        if not self.service.tail.read:
            return web.json_response(
                {"error": "still reading the config topic"},
                status=503,
                headers={"Retry-After": "1"},
            )
        return web.json_response(head_json(head), headers={"ETag": head.etag})

    async def history(self, request: web.Request) -> web.Response:
        snapshots = [snapshot_json(s) for s in self.service.tail.history]
        return web.json_response(
            {"history": snapshots, "duplicate_versions": self.service.tail.duplicates}
        )

    async def validate(self, request: web.Request) -> web.Response:
        report = validate_text(await request.read())
        head = self.service.head
        body: dict[str, Any] = {"valid": report.ok, "version": head.version, **report_json(report)}
        if report.ok and report.config is not None:
            body["diff"] = list(diff(head.config, report.config))
            body["config"] = canonical(report.config)
        else:
            body["error"] = report.summary()
        return web.json_response(body, status=200 if report.ok else 422)

    async def put_config(self, request: web.Request) -> web.Response:
        service = self.service
        source = service.settings.source
        if source != "http":
            where = (
                f"the ConfigMap {service.settings.configmap_namespace}/"
                f"{service.settings.configmap_name}"
                if source == "configmap"
                else f"the file {service.settings.file}"
            )
            return web.json_response(
                {
                    "error": f"this service's writer is {where} (source={source}): edit that; "
                    "PUT /config is accepted only with source=http"
                },
                status=405,
                headers={"Allow": "GET"},
            )
        peer = request.remote or "unknown"
        author = await self._author(request, peer)
        if isinstance(author, web.Response):
            return author
        try:
            if_match = parse_if_match(request.headers.get("If-Match"))
        except BadIfMatch as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if if_match is None:
            return web.json_response(
                {
                    "error": "If-Match is required: send the ETag of GET /config "
                    f'(now {service.head.etag}), or "*" to overwrite whatever is current',
                    "version": service.head.version,
                },
                status=428,
                headers={"ETag": service.head.etag},
            )
        outcome = await service.submit(
            await request.read(),
            author=author,
            origin=f"http:{peer}",
            kind="http",
            if_match=if_match,
        )
        head = outcome.head
        tag = {"ETag": head.etag}
        if outcome.result == "rejected" and outcome.report is not None:
            return web.json_response(
                {
                    "error": f"rejected, version {head.version} stays in force: "
                    + outcome.report.summary(),
                    "version": head.version,
                    **report_json(outcome.report),
                },
                status=422,
                headers=tag,
            )
        if outcome.result == "stale":
            sent = request.headers.get("If-Match", "")
            return web.json_response(
                {
                    "error": f"version {head.version} is current, your change was based on "
                    f"{sent}: GET /config again and re-apply your change",
                    "version": head.version,
                },
                status=409,
                headers=tag,
            )
        if outcome.result == "not_writer":
            return web.json_response(
                {"error": f"not published: {outcome.detail}", "version": head.version},
                status=503,
                headers={"Retry-After": "1", **tag},
            )
        published = outcome.result == "published"
        body: dict[str, Any] = {"published": published, "version": head.version}
        if published and outcome.snapshot is not None:
            body["diff"] = list(outcome.snapshot.diff)
        if outcome.report is not None:
            body["warnings"] = report_json(outcome.report)["warnings"]
        return web.json_response(body, status=200, headers=tag)

    async def _author(self, request: web.Request, peer: str) -> str | web.Response:
        """Who writes: the TokenReview's username, or the answer refusing the request."""
        metrics = self.service.metrics.writes_checked
        authorizer = self.service.authorizer
        if authorizer is None:  # api_auth=none: settings allow it on loopback only
            metrics.labels("unauthenticated-mode").inc()
            return f"unauthenticated@{peer}"
        decision = await authorizer.authorize(request.headers.get("Authorization"))
        metrics.labels(_RESULTS.get(decision.status, "error")).inc()
        if decision.allowed and decision.user is not None:
            return decision.user.username
        user = decision.user.username if decision.user is not None else None
        body: dict[str, Any] = {"error": decision.error}
        headers: dict[str, str] = {}
        if decision.status == 401:
            headers["WWW-Authenticate"] = REALM
        elif decision.status == 403:
            body["user"] = user
            body["missing_permission"] = authorizer.permission.attributes()
            hint = grant_hint(user or "", authorizer.permission.namespace)
            body["error"] += f"; the ClusterRole {WRITER_ROLE} grants it: {hint}"
        else:
            headers["Retry-After"] = "1"
        log.warning(
            "config.write_refused",
            status=decision.status,
            user=user,
            peer=peer,
            reason=decision.error,
        )
        return web.json_response(body, status=decision.status, headers=headers)


__all__ = ["ConfigApi", "etag", "head_json", "snapshot_json"]
