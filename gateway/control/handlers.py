"""The control API under ``/v0``, in the shape the Blaxel SDKs call (shared/design/blaxel-api.md).

Every success is 200 with a JSON body; every error is ``{"error", "code", "message"}`` with
``code`` the HTTP status; lists are bare arrays. A key sees only its own workspace: another
workspace's objects answer 404, so names do not leak. ``/healthz``, ``/readyz`` and
``/v0/openapi.json`` need no key. The routes come from ``openapi.ENDPOINTS``, which the OpenAPI
document describes.

Expiry: whatever has expired is answered 404 and left out of lists even before the sweeper
(``app.sweep_expired``) deletes it; a create that collides with an expired name or hostname
deletes the expired object first, so "GET, then POST on 404" always works.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.control import openapi
from gateway.control.api_keys import KeyRing
from gateway.control.models import (
    Lifetime,
    Out,
    PreviewIn,
    SandboxIn,
    Status,
    TokenIn,
    parse_expiry,
    preview_out,
    sandbox_out,
    token_out,
)
from gateway.core import hostnames
from gateway.core.errors import (
    ApiKeyRequired,
    BadRequest,
    Conflict,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    WorkspaceMismatch,
)
from gateway.core.netpolicy import IPNetwork, address_allowed, is_ip_literal
from gateway.core.records import Preview, Sandbox, TokenRecord, utcnow
from gateway.core.tokens import TokenSigner, new_token_id
from gateway.store.base import PutResult, Store

log = logging.getLogger("gateway.control")

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_body(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": message, "code": status, "message": message}, status=status, headers=headers
    )


def render(exc: GatewayError) -> web.Response:
    """The control API's one error renderer: ``{"error", "code", "message"}``, ``code`` being
    the HTTP status (the Blaxel SDKs read it)."""
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after_s:
        headers["Retry-After"] = str(exc.retry_after_s)
    return _error_body(exc.status, exc.message, headers or None)


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


WORKSPACE = web.RequestKey("workspace", str)
PATH_NAMES = {k: re.compile(v) for k, v in openapi.PATH_PATTERNS.items()}
MAX_TOKENS_PER_PREVIEW = 256
TOKEN_RETENTION = timedelta(days=1)
"""Expired tokens stay listed (with `expired: true`) this long, then are pruned on a write."""
UNAUTHENTICATED = frozenset({"/healthz", "/readyz", openapi.OPENAPI_PATH})


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
        self._openapi = json.dumps(openapi.document()).encode()

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
        r.add_get(openapi.OPENAPI_PATH, self.openapi_json)
        for ep in openapi.ENDPOINTS:
            r.add_route(ep.method, ep.path, getattr(self, ep.handler))
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return render(exc)
        except web.HTTPException as exc:  # aiohttp's own: no such route, wrong method
            if exc.status < 400:
                raise
            allow = exc.headers.get("Allow")  # 405 says which methods would do
            headers = {"Allow": allow} if allow else None
            return _error_body(exc.status, exc.reason or "error", headers)
        except Exception:
            log.exception("control API bug")
            return render(GatewayError("Internal error"))

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNAUTHENTICATED or not request.path.startswith("/v0/"):
            return await handler(request)
        key = _bearer(request.headers.get("X-Blaxel-Authorization")) or _bearer(
            request.headers.get("Authorization")
        )
        workspace = self._keys.workspace_for(key) if key else None
        if workspace is None:
            raise ApiKeyRequired()
        claimed = request.headers.get("X-Blaxel-Workspace")
        if claimed and claimed != workspace:
            raise WorkspaceMismatch()
        request[WORKSPACE] = workspace
        return await handler(request)

    # ── health and description ────────────────────────────────────────────────────────────
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if await self._ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    # ── sandboxes ─────────────────────────────────────────────────────────────────────────
    async def list_sandboxes(self, request: web.Request) -> web.Response:
        sandboxes = await self._store.list_sandboxes(request[WORKSPACE])
        now = utcnow()
        return _ok([self._sandbox_out(s) for s in sandboxes if not s.expired(now)])

    async def create_sandbox(self, request: web.Request) -> web.Response:
        body = await _body(request, SandboxIn)
        workspace = request[WORKSPACE]
        sandbox = self._sandbox_from(body, workspace, existing=None)
        result = await self._store.put_sandbox(sandbox, create=True)
        if result is not PutResult.OK and await self._reap(workspace, sandbox.name):
            # The name was held by an expired sandbox, now gone: try once more.
            result = await self._store.put_sandbox(sandbox, create=True)
        if result is PutResult.OK:
            return _ok(self._sandbox_out(sandbox))
        if _flag(request, "createIfNotExist"):
            existing = await self._live_sandbox(workspace, sandbox.name)
            if existing is not None:
                return _ok(self._sandbox_out(existing))
        raise Conflict(f"Sandbox {sandbox.name} already exists")

    async def get_sandbox(self, request: web.Request) -> web.Response:
        return _ok(self._sandbox_out(await self._sandbox(request)))

    async def put_sandbox(self, request: web.Request) -> web.Response:
        existing = await self._sandbox(request)
        body = await _body(request, SandboxIn)
        if body.metadata.name != existing.name:
            raise BadRequest("metadata.name: must match the sandbox name in the path")
        sandbox = self._sandbox_from(body, existing.workspace, existing=existing)
        # must_exist: a sandbox deleted while this PUT was on its way stays deleted.
        if (
            await self._store.put_sandbox(sandbox, create=False, must_exist=True)
            is not PutResult.OK
        ):
            raise NotFound(f"Sandbox {sandbox.name} not found")
        return _ok(self._sandbox_out(sandbox))

    async def delete_sandbox(self, request: web.Request) -> web.Response:
        name = _path(request, "sandboxName")
        deleted = await self._store.delete_sandbox(request[WORKSPACE], name)
        if deleted is None or deleted.expired(utcnow()):
            # An expired sandbox is deleted all the same, but it was already "not found".
            raise NotFound(f"Sandbox {name} not found")
        return _ok(self._sandbox_out(deleted, status="TERMINATED"))

    # ── previews ──────────────────────────────────────────────────────────────────────────
    async def list_previews(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        previews = await self._store.list_previews(sandbox.workspace, sandbox.name)
        now = utcnow()
        return _ok([self._preview_out(p) for p in previews if not p.expired(now)])

    async def create_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        body = await _body(request, PreviewIn)
        preview = self._preview_from(body, sandbox, existing=None)
        force = _flag(request, "force")
        result = await self._store.put_preview(preview, create=True, force=force)
        if result is not PutResult.OK and await self._reap_conflict(result, preview):
            # The name or hostname was held by an expired preview, now gone: try once more.
            result = await self._store.put_preview(preview, create=True, force=force)
        self._raise_for(result, preview)
        return _ok(self._preview_out(preview))

    async def get_preview(self, request: web.Request) -> web.Response:
        return _ok(self._preview_out(await self._preview(request)))

    async def put_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        body = await _body(request, PreviewIn)
        if body.metadata.name != _path(request, "previewName"):
            raise BadRequest("metadata.name: must match the preview name in the path")

        def replace(current: Preview) -> Preview:
            return self._preview_from(body, sandbox, existing=current)

        updated = await self._update_preview(request, replace, force=_flag(request, "force"))
        return _ok(self._preview_out(updated))

    async def delete_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        name = _path(request, "previewName")
        deleted = await self._store.delete_preview(sandbox.workspace, sandbox.name, name)
        if deleted is None or deleted.expired(utcnow()):
            raise NotFound(f"Preview {name} not found")
        # Deletion is synchronous, so DELETING is already over: the SDKs' poll gets 404 at once.
        return _ok(self._preview_out(deleted, status="DELETING"))

    # ── tokens ────────────────────────────────────────────────────────────────────────────
    async def list_tokens(self, request: web.Request) -> web.Response:
        preview = await self._preview(request)
        now = utcnow()
        records = sorted(preview.tokens.values(), key=lambda t: t.created_at)
        return _ok([self._token_out(preview, t, now) for t in records])

    async def create_token(self, request: web.Request) -> web.Response:
        await self._preview(request)  # 404 before 400: don't validate for what isn't there
        body = await _body(request, TokenIn)
        now = utcnow()
        try:
            expires_at = parse_expiry(body.spec.expires_at)
        except ValueError as exc:
            raise BadRequest(f"spec.expiresAt: {exc}") from exc
        if expires_at <= now:
            raise BadRequest("spec.expiresAt: the expiry is in the past")
        expires_at = min(expires_at, now + timedelta(seconds=self._c.token_max_lifetime_s))
        # The Python SDK always sends an empty name and needs one back to delete the token.
        name = body.metadata.name or f"token-{secrets.token_hex(4)}"
        if not PATH_NAMES["tokenName"].match(name):
            raise BadRequest("metadata.name: use lower-case letters, digits and '-'")
        record = TokenRecord(name=name, jti=new_token_id(), expires_at=expires_at, created_at=now)

        def add(preview: Preview) -> Preview:
            if name in preview.tokens:
                raise Conflict(f"Token {name} already exists")
            live = {k: t for k, t in preview.tokens.items() if t.expires_at > now - TOKEN_RETENTION}
            if len(live) >= MAX_TOKENS_PER_PREVIEW:
                raise BadRequest(f"A preview may have at most {MAX_TOKENS_PER_PREVIEW} tokens")
            return preview.model_copy(update={"tokens": {**live, name: record}, "updated_at": now})

        preview = await self._update_preview(request, add)
        return _ok(self._token_out(preview, record, now))

    async def delete_token(self, request: web.Request) -> web.Response:
        name = _path(request, "tokenName")

        def remove(preview: Preview) -> Preview:
            if name not in preview.tokens:
                raise NotFound(f"Token {name} not found")
            tokens = {k: t for k, t in preview.tokens.items() if k != name}
            return preview.model_copy(update={"tokens": tokens, "updated_at": utcnow()})

        await self._update_preview(request, remove)
        # Revocation is immediate: the route no longer lists the token, and every replica's
        # cache entry for the hostname was invalidated by the same write.
        return _ok({"message": "Preview token deleted successfully"})

    # ── reads ─────────────────────────────────────────────────────────────────────────────
    async def _live_sandbox(self, workspace: str, name: str) -> Sandbox | None:
        sandbox = await self._store.get_sandbox(workspace, name)
        return None if sandbox is None or sandbox.expired(utcnow()) else sandbox

    async def _sandbox(self, request: web.Request) -> Sandbox:
        name = _path(request, "sandboxName")
        sandbox = await self._live_sandbox(request[WORKSPACE], name)
        if sandbox is None:
            raise NotFound(f"Sandbox {name} not found")
        return sandbox

    async def _preview(self, request: web.Request) -> Preview:
        sandbox = await self._sandbox(request)
        name = _path(request, "previewName")
        preview = await self._store.get_preview(sandbox.workspace, sandbox.name, name)
        if preview is None or preview.expired(utcnow()):
            raise NotFound(f"Preview {name} not found")
        return preview

    # ── writes ────────────────────────────────────────────────────────────────────────────
    async def _update_preview(
        self, request: web.Request, change: Callable[[Preview], Preview], *, force: bool = False
    ) -> Preview:
        """Read, change and write a preview, retrying when another write got in between (so a
        token minted meanwhile is never lost)."""
        for attempt in range(8):
            current = await self._preview(request)
            updated = change(current)
            result = await self._store.put_preview(
                updated, create=False, force=force, expect_revision=current.revision
            )
            if result is PutResult.OK:
                return updated
            if result is PutResult.CHANGED:
                continue
            if attempt == 0 and await self._reap_conflict(result, updated):
                continue
            self._raise_for(result, updated)
        raise Conflict("The preview is being changed concurrently; try again")

    async def _reap(self, workspace: str, sandbox: str, preview: str | None = None) -> bool:
        """Delete the named sandbox, or else the preview, if it has expired (the sweeper may
        not have come by yet). True if it had expired, whoever deleted it: the caller may then
        retry, as the name is free."""
        now = utcnow()
        sb = await self._store.get_sandbox(workspace, sandbox)
        if sb is not None and sb.expired(now):
            # Deleted only if still expired inside the store's transaction: never a sandbox
            # that someone recreated under this name in between.
            await self._store.delete_sandbox(workspace, sandbox, only_expired_at=now)
            return True
        if preview is None:
            return False
        pv = await self._store.get_preview(workspace, sandbox, preview)
        if pv is not None and pv.expired(now):
            await self._store.delete_preview(workspace, sandbox, preview, only_expired_at=now)
            return True
        return False

    async def _reap_conflict(self, result: PutResult, preview: Preview) -> bool:
        if result is PutResult.NAME_EXISTS:
            return await self._reap(preview.workspace, preview.sandbox, preview.name)
        if result is PutResult.HOST_TAKEN:
            holder = await self._store.get_route(preview.hostname)
            if holder is not None and holder.expired(utcnow()):
                return await self._reap(holder.workspace, holder.sandbox, holder.preview)
        return False

    @staticmethod
    def _raise_for(result: PutResult, preview: Preview) -> None:
        if result is PutResult.NAME_EXISTS:
            raise Conflict(f"Preview {preview.name} already exists")
        if result is PutResult.HOST_TAKEN:
            raise Conflict(f"Another preview already uses {preview.hostname}")
        if result is PutResult.NO_SANDBOX:
            raise NotFound(f"Sandbox {preview.sandbox} not found")
        if result is PutResult.CHANGED:
            raise NotFound(f"Preview {preview.name} not found")

    # ── building records ──────────────────────────────────────────────────────────────────
    @staticmethod
    def _expiry(spec: Lifetime, created: datetime) -> datetime | None:
        expires_at = spec.expires_at(created)
        if expires_at is not None and expires_at <= utcnow():
            raise BadRequest("spec.ttl/spec.expires: the expiry is already in the past")
        return expires_at

    def _sandbox_from(self, body: SandboxIn, workspace: str, existing: Sandbox | None) -> Sandbox:
        host = body.spec.target.host.strip().lower()
        if is_ip_literal(host):
            if not address_allowed(host, self._c.allowed_targets):
                raise BadRequest("spec.target.host: outside the gateway's allowed_targets")
        elif not hostnames.is_valid_dns_name(host):
            raise BadRequest("spec.target.host: must be an IP address or a DNS name")
        now = utcnow()
        created = existing.created_at if existing else now
        return Sandbox(
            workspace=workspace,
            name=body.metadata.name,
            target_host=host,
            created_at=created,
            updated_at=now,
            expires_at=self._expiry(body.spec, created),
            ttl=body.spec.ttl,
            labels=body.metadata.labels or {},
        )

    def _preview_from(self, body: PreviewIn, sandbox: Sandbox, existing: Preview | None) -> Preview:
        """A preview from a request body. A replacement (``existing``) keeps its identity
        (uid, so tokens stay valid), its tokens and, without a prefixUrl, its random hostname."""
        spec = body.spec
        if spec.port in self._c.blocked_ports:
            raise BadRequest(f"spec.port: port {spec.port} is reserved and cannot be previewed")
        if spec.custom_domain:
            raise BadRequest("spec.customDomain: custom domains are not supported yet")
        if spec.prefix_url:
            hostname = hostnames.prefix_hostname(
                spec.prefix_url, sandbox.workspace, self._c.preview_domain
            )
            if not hostnames.is_valid_dns_name(hostname):
                raise BadRequest("spec.prefixUrl: makes an invalid hostname")
        elif existing is not None and existing.prefix_url is None:
            hostname = existing.hostname
        else:
            hostname = hostnames.random_hostname(
                hostnames.random_preview_id(), self._c.region, self._c.preview_domain
            )
        now = utcnow()
        created = existing.created_at if existing else now
        values: dict[str, Any] = {}
        if existing is not None:
            values = {"uid": existing.uid, "revision": existing.revision, "tokens": existing.tokens}
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
            expires_at=self._expiry(spec, created),
            ttl=spec.ttl,
            expires=spec.expires,
            **values,
        )

    # ── answers ───────────────────────────────────────────────────────────────────────────
    def _sandbox_out(self, sandbox: Sandbox, status: Status = "DEPLOYED") -> Out:
        return sandbox_out(sandbox, status=status)

    def _preview_out(self, preview: Preview, status: Status = "DEPLOYED") -> Out:
        url = hostnames.public_url(preview.hostname, self._c.public_scheme, self._public_port)
        return preview_out(preview, url=url, region=self._c.region, status=status)

    def _token_out(self, preview: Preview, token: TokenRecord, now: datetime) -> Out:
        # Only the claims are stored; the token is signed again for every answer.
        value = self._signer.issue(
            preview_uid=preview.uid,
            jti=token.jti,
            expires_at=token.expires_at,
            issued_at=token.created_at,
        )
        return token_out(preview, token, value=value, now=now)


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _path(request: web.Request, name: str) -> str:
    """A name from the path. One that breaks the naming rules cannot exist: 404, and it never
    reaches the store (where it could otherwise form another object's key)."""
    value = request.match_info[name]
    if not PATH_NAMES[name].match(value) or len(value) > 63:
        kind = name.removesuffix("Name").capitalize()
        raise NotFound(f"{kind} {value[:80]!r} not found")
    return value


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


def _ok(data: Out | list[Out] | dict[str, Any]) -> web.Response:
    if isinstance(data, Out):
        payload: Any = data.wire()
    elif isinstance(data, list):
        payload = [item.wire() for item in data]
    else:
        payload = data
    return web.json_response(payload, status=200)


async def _body(request: web.Request, model: type[ModelT]) -> ModelT:
    if not request.body_exists:
        raise BadRequest("A JSON body is required")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("The request body is too large") from exc
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest("The body is not valid JSON") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(_describe(exc)) from exc
    except RecursionError as exc:
        raise BadRequest("The body is nested too deeply") from exc


def _describe(exc: ValidationError) -> str:
    """``spec.port: Input should be ...`` for the first few errors: the field comes first, so
    the message always names it. Input values are left out (they may be secrets)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "Invalid body: " + "; ".join(parts)
