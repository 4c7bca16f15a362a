"""The control API under ``/v0``, in the shape the Blaxel SDKs call (shared/design/blaxel-api.md).

Every success is 200 with a JSON body; every error is ``{"error", "code", "message"}`` with
``code`` the HTTP status; lists are bare arrays. A key sees only its own workspace: another
workspace's objects answer 404, so names do not leak. ``/healthz``, ``/readyz`` and
``/v0/openapi.json`` need no key. The routes come from ``openapi.ENDPOINTS``, which the OpenAPI
document describes.

The domain rules (expiry, compare-and-swap, token retention, hostname choice) are in
``control.service``; these handlers translate between HTTP and it, and render its errors.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.control import openapi, tls_ask
from gateway.control.api_keys import KeyRing
from gateway.control.domain_models import DomainIn, domain_out
from gateway.control.domains import DomainConfig, DomainService, Resolver
from gateway.control.models import (
    Out,
    PreviewIn,
    SandboxIn,
    StateIn,
    Status,
    TokenIn,
    preview_out,
    sandbox_out,
    token_out,
)
from gateway.control.service import ControlService, ServiceConfig
from gateway.core import hostnames
from gateway.core.errors import (
    ApiKeyRequired,
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    WorkspaceMismatch,
)
from gateway.core.records import Domain, Preview, Sandbox, TokenRecord, utcnow
from gateway.core.tokens import TokenSigner
from gateway.ops.dns_check import TxtResolver
from gateway.store.base import Registry

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
    rules: ServiceConfig
    """What the service needs; the rest is how the API answers over HTTP."""
    public_scheme: str
    public_port: int
    max_body_bytes: int = 1024 * 1024
    domains: DomainConfig = field(default_factory=DomainConfig)


WORKSPACE = web.RequestKey("workspace", str)
PATH_NAMES = {k: re.compile(v) for k, v in openapi.PATH_PATTERNS.items()}
UNAUTHENTICATED = frozenset({"/healthz", "/readyz", openapi.OPENAPI_PATH, tls_ask.ASK_PATH})


class ControlApi:
    def __init__(
        self,
        config: ApiConfig,
        store: Registry,
        keys: KeyRing,
        ready: Callable[[], Awaitable[bool]],
        signer: TokenSigner,
        resolver: Resolver | None = None,
    ) -> None:
        self._config = config
        self._signer = signer
        self.service = ControlService(config.rules, store)
        rules, domains = config.rules, config.domains
        self.domains = DomainService(
            store,
            resolver or TxtResolver(domains.nameservers, domains.dns_timeout_s),
            preview_domain=rules.preview_domain,
            region=rules.region,
            config=domains,
        )
        """The domain rules; the handlers below only translate HTTP to and from it."""
        self._keys = keys
        self._ready = ready
        self._public_port = config.public_port
        self._openapi = json.dumps(openapi.document()).encode()

    def set_public_port(self, port: int) -> None:
        self._public_port = port

    # ── app ───────────────────────────────────────────────────────────────────────────────
    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors, self._auth], client_max_size=self._config.max_body_bytes
        )
        router = app.router
        router.add_get("/healthz", self.healthz)
        router.add_get("/readyz", self.readyz)
        router.add_get(openapi.OPENAPI_PATH, self.openapi_json)
        for endpoint in openapi.ENDPOINTS:
            router.add_route(endpoint.method, endpoint.path, getattr(self, endpoint.handler))
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
        return _ok([sandbox_out(s) for s in await self.service.sandboxes(request[WORKSPACE])])

    async def create_sandbox(self, request: web.Request) -> web.Response:
        body = await _body(request, SandboxIn)
        if_not_exists = _flag(request, "createIfNotExist")
        sandbox = await self.service.create_sandbox(
            request[WORKSPACE], body, if_not_exists=if_not_exists
        )
        return _ok(sandbox_out(sandbox))

    async def get_sandbox(self, request: web.Request) -> web.Response:
        return _ok(sandbox_out(await self._sandbox(request)))

    async def put_sandbox(self, request: web.Request) -> web.Response:
        existing = await self._sandbox(request)
        body = await _body(request, SandboxIn)
        return _ok(sandbox_out(await self.service.replace_sandbox(existing, body)))

    async def set_sandbox_state(self, request: web.Request) -> web.Response:
        existing = await self._sandbox(request)
        body = await _body(request, StateIn)
        return _ok(sandbox_out(await self.service.set_state(existing, body)))

    async def delete_sandbox(self, request: web.Request) -> web.Response:
        name = _path(request, "sandboxName")
        deleted = await self.service.delete_sandbox(request[WORKSPACE], name)
        return _ok(sandbox_out(deleted, status="TERMINATED"))

    # ── previews ──────────────────────────────────────────────────────────────────────────
    async def list_previews(self, request: web.Request) -> web.Response:
        previews = await self.service.previews(await self._sandbox(request))
        return _ok([self._preview_out(p) for p in previews])

    async def create_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        body = await _body(request, PreviewIn)
        force = _flag(request, "force")
        return _ok(self._preview_out(await self.service.create_preview(sandbox, body, force=force)))

    async def get_preview(self, request: web.Request) -> web.Response:
        return _ok(self._preview_out(await self._preview(request)))

    async def put_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        body = await _body(request, PreviewIn)
        name = _path(request, "previewName")
        force = _flag(request, "force")
        updated = await self.service.replace_preview(sandbox, name, body, force=force)
        return _ok(self._preview_out(updated))

    async def delete_preview(self, request: web.Request) -> web.Response:
        sandbox = await self._sandbox(request)
        deleted = await self.service.delete_preview(sandbox, _path(request, "previewName"))
        # Deletion is synchronous, so DELETING is already over: the SDKs' poll gets 404 at once.
        return _ok(self._preview_out(deleted, status="DELETING"))

    # ── tokens ────────────────────────────────────────────────────────────────────────────
    async def list_tokens(self, request: web.Request) -> web.Response:
        preview = await self._preview(request)
        now = utcnow()
        return _ok([self._token_out(preview, t, now) for t in self.service.tokens(preview)])

    async def create_token(self, request: web.Request) -> web.Response:
        preview = await self._preview(request)  # 404 before 400: don't validate what isn't there
        body = await _body(request, TokenIn)
        preview, record = await self.service.create_token(
            preview.workspace, preview.sandbox, preview.name, body
        )
        return _ok(self._token_out(preview, record, utcnow()))

    async def delete_token(self, request: web.Request) -> web.Response:
        name = _path(request, "tokenName")
        workspace, sandbox, preview = self._preview_path(request)
        await self.service.delete_token(workspace, sandbox, preview, name)
        return _ok({"message": "Preview token deleted successfully"})

    # ── custom domains ────────────────────────────────────────────────────────────────────
    async def list_domains(self, request: web.Request) -> web.Response:
        return _ok([self._domain_out(d) for d in await self.domains.list(request[WORKSPACE])])

    async def create_domain(self, request: web.Request) -> web.Response:
        body = await _body(request, DomainIn)
        return _ok(self._domain_out(await self.domains.create(request[WORKSPACE], body)))

    async def get_domain(self, request: web.Request) -> web.Response:
        name = _path(request, "domainName")
        return _ok(self._domain_out(await self.domains.get(request[WORKSPACE], name)))

    async def put_domain(self, request: web.Request) -> web.Response:
        name = _path(request, "domainName")
        await self.domains.get(request[WORKSPACE], name)  # 404 before 400
        body = await _body(request, DomainIn)
        return _ok(self._domain_out(await self.domains.update(request[WORKSPACE], name, body)))

    async def delete_domain(self, request: web.Request) -> web.Response:
        name = _path(request, "domainName")
        return _ok(self._domain_out(await self.domains.delete(request[WORKSPACE], name)))

    async def verify_domain(self, request: web.Request) -> web.Response:
        name = _path(request, "domainName")
        return _ok(self._domain_out(await self.domains.verify(request[WORKSPACE], name)))

    def _domain_out(self, domain: Domain) -> Out:
        return domain_out(domain, gateway_host=self._config.rules.preview_domain)

    # ── reads ─────────────────────────────────────────────────────────────────────────────
    async def _sandbox(self, request: web.Request) -> Sandbox:
        return await self.service.sandbox(request[WORKSPACE], _path(request, "sandboxName"))

    @staticmethod
    def _preview_path(request: web.Request) -> tuple[str, str, str]:
        """Workspace, sandbox and preview named by the request (in this order, as the 404s)."""
        sandbox = _path(request, "sandboxName")
        return request[WORKSPACE], sandbox, _path(request, "previewName")

    async def _preview(self, request: web.Request) -> Preview:
        return await self.service.preview(*self._preview_path(request))

    # ── answers ───────────────────────────────────────────────────────────────────────────
    def _preview_out(self, preview: Preview, status: Status = "DEPLOYED") -> Out:
        config = self._config
        # A custom hostname is the preview's address once set; the random one keeps working.
        host = preview.custom_domain or preview.hostname
        url = hostnames.public_url(host, config.public_scheme, self._public_port)
        return preview_out(preview, url=url, region=config.rules.region, status=status)

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
    if not PATH_NAMES[name].match(value) or len(value) > openapi.MAX_LENGTHS.get(name, 63):
        kind = {"domainName": "Custom domain"}.get(name) or name.removesuffix("Name").capitalize()
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
