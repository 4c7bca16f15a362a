"""The control API under ``/v0``, in the shape the Blaxel SDKs call (shared/design/blaxel-api.md).

Every success is 200 with a JSON body; every error is ``{"error", "code", "message"}``; lists are
bare arrays. A key sees only its own workspace: another workspace's objects answer 404, so
names do not leak. ``/healthz`` and ``/readyz`` need no key.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway import hostnames
from gateway.api_keys import KeyRing
from gateway.api_models import (
    PreviewIn,
    SandboxIn,
    TokenIn,
    preview_json,
    sandbox_json,
)
from gateway.errors import GatewayError
from gateway.routes import Preview, Sandbox, TokenRecord, utcnow
from gateway.routing_table import PutResult, Store
from gateway.timeparse import format_timestamp, parse_timestamp
from gateway.tokens import TokenSigner, new_token_id
from gateway.upstream import IPNetwork, address_allowed, is_ip_literal

log = logging.getLogger("gateway.control")

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": message, "code": status, "message": message}, status=status, headers=headers
    )


@dataclass(frozen=True)
class ApiConfig:
    preview_domain: str
    region: str
    public_scheme: str
    public_port: int
    blocked_ports: frozenset[int]
    allowed_targets: list[IPNetwork]
    token_max_lifetime_s: int = 30 * 86400
    max_body_bytes: int = 1024 * 1024
    extra: dict[str, Any] = field(default_factory=dict)


WORKSPACE = web.RequestKey("workspace", str)
TOKEN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_TOKENS_PER_PREVIEW = 256
TOKEN_RETENTION = timedelta(days=1)
"""Expired tokens stay listed (with `expired: true`) this long, then are pruned on a write."""


class ControlApi:
    def __init__(
        self,
        config: ApiConfig,
        store: Store,
        keys: KeyRing,
        ready: Callable[[], Awaitable[bool]],
        signer: TokenSigner,
    ) -> None:
        self._c = config
        self._signer = signer
        self._store = store
        self._keys = keys
        self._ready = ready
        self._public_port = config.public_port

    def set_public_port(self, port: int) -> None:
        self._public_port = port

    # ── app ───────────────────────────────────────────────────────────────────────────────
    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors, self._auth], client_max_size=self._c.max_body_bytes
        )
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/v0/sandboxes", self.list_sandboxes)
        r.add_post("/v0/sandboxes", self.create_sandbox)
        r.add_get("/v0/sandboxes/{sb}", self.get_sandbox)
        r.add_put("/v0/sandboxes/{sb}", self.put_sandbox)
        r.add_delete("/v0/sandboxes/{sb}", self.delete_sandbox)
        r.add_get("/v0/sandboxes/{sb}/previews", self.list_previews)
        r.add_post("/v0/sandboxes/{sb}/previews", self.create_preview)
        r.add_get("/v0/sandboxes/{sb}/previews/{p}", self.get_preview)
        r.add_put("/v0/sandboxes/{sb}/previews/{p}", self.put_preview)
        r.add_delete("/v0/sandboxes/{sb}/previews/{p}", self.delete_preview)
        r.add_get("/v0/sandboxes/{sb}/previews/{p}/tokens", self.list_tokens)
        r.add_post("/v0/sandboxes/{sb}/previews/{p}/tokens", self.create_token)
        r.add_delete("/v0/sandboxes/{sb}/previews/{p}/tokens/{t}", self.delete_token)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except GatewayError as exc:
            headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
            return error_response(exc.status, exc.message, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason or "error")
        except Exception:
            log.exception("control API bug")
            return error_response(500, "Internal error")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v0/"):
            return await handler(request)
        key = _bearer(request.headers.get("X-Blaxel-Authorization")) or _bearer(
            request.headers.get("Authorization")
        )
        workspace = self._keys.workspace_for(key) if key else None
        if workspace is None:
            raise ApiError(401, "A valid API key is required (Authorization: Bearer <key>).")
        claimed = request.headers.get("X-Blaxel-Workspace")
        if claimed and claimed != workspace:
            raise ApiError(403, "X-Blaxel-Workspace does not match the API key's workspace.")
        request[WORKSPACE] = workspace
        return await handler(request)

    # ── health ────────────────────────────────────────────────────────────────────────────
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if await self._ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    # ── sandboxes ─────────────────────────────────────────────────────────────────────────
    async def list_sandboxes(self, request: web.Request) -> web.Response:
        sandboxes = await self._store.list_sandboxes(request[WORKSPACE])
        now = utcnow()
        return _ok([self._sandbox_json(s) for s in sandboxes if not s.expired(now)])

    async def create_sandbox(self, request: web.Request) -> web.Response:
        body = await _body(request, SandboxIn)
        sandbox = self._sandbox_from(body, request[WORKSPACE], existing=None)
        result = await self._store.put_sandbox(sandbox, create=True)
        if result is PutResult.NAME_EXISTS:
            raise ApiError(409, f"Sandbox {sandbox.name} already exists")
        return _ok(self._sandbox_json(sandbox))

    async def get_sandbox(self, request: web.Request) -> web.Response:
        return _ok(self._sandbox_json(await self._sandbox(request)))

    async def put_sandbox(self, request: web.Request) -> web.Response:
        body = await _body(request, SandboxIn)
        name = request.match_info["sb"]
        if body.metadata.name != name:
            raise ApiError(400, "metadata.name must match the sandbox name in the path")
        existing = await self._store.get_sandbox(request[WORKSPACE], name)
        sandbox = self._sandbox_from(body, request[WORKSPACE], existing=existing)
        await self._store.put_sandbox(sandbox, create=False)
        return _ok(self._sandbox_json(sandbox))

    async def delete_sandbox(self, request: web.Request) -> web.Response:
        deleted = await self._store.delete_sandbox(request[WORKSPACE], request.match_info["sb"])
        if deleted is None:
            raise ApiError(404, f"Sandbox {request.match_info['sb']} not found")
        return _ok(self._sandbox_json(deleted, status="TERMINATED"))

    # ── previews ──────────────────────────────────────────────────────────────────────────
    async def list_previews(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        previews = await self._store.list_previews(sandbox.workspace, sandbox.name)
        now = utcnow()
        return _ok([self._preview_json(p) for p in previews if not p.expired(now)])

    async def create_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        body = await _body(request, PreviewIn)
        force = request.query.get("force", "").lower() == "true"
        preview = self._preview_from(body, sandbox, existing=None)
        result = await self._store.put_preview(preview, create=True, force=force)
        self._raise_for(result, preview)
        return _ok(self._preview_json(preview))

    async def get_preview(self, request: web.Request) -> web.Response:
        return _ok(self._preview_json(await self._preview(request)))

    async def put_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        body = await _body(request, PreviewIn)
        name = request.match_info["p"]
        if body.metadata.name != name:
            raise ApiError(400, "metadata.name must match the preview name in the path")
        existing = await self._store.get_preview(sandbox.workspace, sandbox.name, name)
        preview = self._preview_from(body, sandbox, existing=existing)
        force = request.query.get("force", "").lower() == "true"
        result = await self._store.put_preview(preview, create=False, force=force)
        self._raise_for(result, preview)
        return _ok(self._preview_json(preview))

    async def delete_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        name = request.match_info["p"]
        deleted = await self._store.delete_preview(sandbox.workspace, sandbox.name, name)
        if deleted is None:
            raise ApiError(404, f"Preview {name} not found")
        # Deletion is synchronous, so DELETING is already over: the SDKs' poll gets 404 at once.
        return _ok(self._preview_json(deleted, status="DELETING"))

    # ── tokens ────────────────────────────────────────────────────────────────────────────
    async def list_tokens(self, request: web.Request) -> web.Response:
        preview = await self._preview(request)
        now = utcnow()
        records = sorted(preview.tokens.values(), key=lambda t: t.created_at)
        return _ok([self._token_json(preview, t, now) for t in records])

    async def create_token(self, request: web.Request) -> web.Response:
        body = await _body(request, TokenIn)
        now = utcnow()
        try:
            expires_at = parse_timestamp(body.spec.expires_at)
        except ValueError as exc:
            raise ApiError(400, f"spec.expiresAt: {exc}") from exc
        if expires_at <= now:
            raise ApiError(400, "spec.expiresAt: the expiry is in the past")
        expires_at = min(expires_at, now + timedelta(seconds=self._c.token_max_lifetime_s))
        name = body.metadata.name or f"token-{secrets.token_hex(4)}"
        if not TOKEN_NAME.match(name):
            raise ApiError(400, "metadata.name: use lower-case letters, digits and '-'")
        record = TokenRecord(name=name, jti=new_token_id(), expires_at=expires_at, created_at=now)

        def add(preview: Preview) -> Preview:
            if name in preview.tokens:
                raise ApiError(409, f"Token {name} already exists")
            live = {k: t for k, t in preview.tokens.items() if t.expires_at > now - TOKEN_RETENTION}
            if len(live) >= MAX_TOKENS_PER_PREVIEW:
                raise ApiError(400, f"A preview may have at most {MAX_TOKENS_PER_PREVIEW} tokens")
            return preview.model_copy(update={"tokens": {**live, name: record}, "updated_at": now})

        preview = await self._update_preview(request, add)
        return _ok(self._token_json(preview, record, now))

    async def delete_token(self, request: web.Request) -> web.Response:
        name = request.match_info["t"]

        def remove(preview: Preview) -> Preview:
            if name not in preview.tokens:
                raise ApiError(404, f"Token {name} not found")
            tokens = {k: t for k, t in preview.tokens.items() if k != name}
            return preview.model_copy(update={"tokens": tokens, "updated_at": utcnow()})

        await self._update_preview(request, remove)
        # Revocation is immediate: the route no longer lists the token, and every replica's
        # cache entry for the hostname was invalidated by the same write.
        return _ok({"message": "Preview token deleted successfully"})

    async def _update_preview(
        self, request: web.Request, change: Callable[[Preview], Preview]
    ) -> Preview:
        """Read, change and write a preview, retrying when another write got in between."""
        for _ in range(8):
            current = await self._preview(request)
            updated = change(current)
            result = await self._store.put_preview(
                updated, create=False, force=False, expect_revision=current.revision
            )
            if result is PutResult.OK:
                return updated
            if result is not PutResult.CHANGED:
                self._raise_for(result, updated)
        raise ApiError(409, "The preview is being changed concurrently; try again")

    def _token_json(self, preview: Preview, token: TokenRecord, now: datetime) -> dict[str, Any]:
        value = self._signer.issue(
            preview_uid=preview.uid,
            jti=token.jti,
            expires_at=token.expires_at,
            issued_at=token.created_at,
        )
        return {
            "metadata": {
                "name": token.name,
                "previewName": preview.name,
                "resourceName": preview.sandbox,
                "resourceType": "sandbox",
                "workspace": preview.workspace,
                "createdAt": format_timestamp(token.created_at),
            },
            "spec": {
                "token": value,
                "expiresAt": format_timestamp(token.expires_at),
                "expired": token.expires_at <= now,
            },
        }

    # ── helpers ───────────────────────────────────────────────────────────────────────────
    async def _sandbox(self, request: web.Request) -> Sandbox:
        name = request.match_info["sb"]
        sandbox = await self._store.get_sandbox(request[WORKSPACE], name)
        if sandbox is None or sandbox.expired(utcnow()):
            raise ApiError(404, f"Sandbox {name} not found")
        return sandbox

    async def _preview(self, request: web.Request) -> Preview:
        sandbox = await self._sandbox(request)
        name = request.match_info["p"]
        preview = await self._store.get_preview(sandbox.workspace, sandbox.name, name)
        if preview is None or preview.expired(utcnow()):
            raise ApiError(404, f"Preview {name} not found")
        return preview

    def _sandbox_from(self, body: SandboxIn, workspace: str, existing: Sandbox | None) -> Sandbox:
        host = body.spec.target.host.strip().lower()
        if is_ip_literal(host):
            if not address_allowed(host, self._c.allowed_targets):
                raise ApiError(400, "spec.target.host is outside the gateway's allowed_targets")
        elif not hostnames.is_valid_dns_name(host):
            raise ApiError(400, "spec.target.host must be an IP address or a DNS name")
        now = utcnow()
        created = existing.created_at if existing else now
        return Sandbox(
            workspace=workspace,
            name=body.metadata.name,
            target_host=host,
            created_at=created,
            updated_at=now,
            expires_at=body.spec.expires_at(created),
            ttl=body.spec.ttl,
            labels=body.metadata.labels or {},
        )

    def _preview_from(self, body: PreviewIn, sandbox: Sandbox, existing: Preview | None) -> Preview:
        spec = body.spec
        if spec.port in self._c.blocked_ports:
            raise ApiError(400, f"spec.port: port {spec.port} is reserved and cannot be previewed")
        if spec.custom_domain:
            raise ApiError(400, "spec.customDomain: custom domains are not supported yet")
        if spec.prefix_url:
            hostname = hostnames.prefix_hostname(
                spec.prefix_url, sandbox.workspace, self._c.preview_domain
            )
            if not hostnames.is_valid_dns_name(hostname):
                raise ApiError(400, "spec.prefixUrl makes an invalid hostname")
        elif existing is not None and existing.prefix_url is None:
            hostname = existing.hostname
        else:
            hostname = hostnames.random_hostname(
                hostnames.random_preview_id(), self._c.region, self._c.preview_domain
            )
        now = utcnow()
        created = existing.created_at if existing else now
        return Preview(
            workspace=sandbox.workspace,
            sandbox=sandbox.name,
            name=body.metadata.name,
            port=spec.port,
            public=spec.public,
            hostname=hostname,
            prefix_url=spec.prefix_url,
            custom_domain=spec.custom_domain,
            request_headers=spec.request_headers or {},
            response_headers=spec.response_headers or {},
            created_at=created,
            updated_at=now,
            expires_at=spec.expires_at(created),
            ttl=spec.ttl,
            expires=spec.expires,
        )

    @staticmethod
    def _raise_for(result: PutResult, preview: Preview) -> None:
        if result is PutResult.NAME_EXISTS:
            raise ApiError(409, f"Preview {preview.name} already exists")
        if result is PutResult.HOST_TAKEN:
            raise ApiError(409, f"Another preview already uses {preview.hostname}")
        if result is PutResult.NO_SANDBOX:
            raise ApiError(404, f"Sandbox {preview.sandbox} not found")

    def _sandbox_json(self, sandbox: Sandbox, status: str = "DEPLOYED") -> dict[str, Any]:
        return sandbox_json(sandbox, region=self._c.region, status=status)  # type: ignore[arg-type]

    def _preview_json(self, preview: Preview, status: str = "DEPLOYED") -> dict[str, Any]:
        url = hostnames.public_url(preview.hostname, self._c.public_scheme, self._public_port)
        return preview_json(preview, url=url, region=self._c.region, status=status)  # type: ignore[arg-type]


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _ok(data: Any) -> web.Response:
    return web.json_response(data, status=200)


async def _body(request: web.Request, model: type[ModelT]) -> ModelT:
    if not request.body_exists:
        raise ApiError(400, "A JSON body is required")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(413, "The request body is too large") from exc
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "The body is not valid JSON") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, _describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "Invalid body: " + "; ".join(parts)
