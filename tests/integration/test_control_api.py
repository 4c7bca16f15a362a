"""The control API's contract (shared/design/blaxel-api.md §6), against the real in-process
gateway with the embedded store and with Redis: shapes, status codes, validation, conflicts,
`force`, PUT, tokens, and that every error has the `{"error", "code", "message"}` body."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.control import openapi
from gateway.control.api_keys import KeyRing
from gateway.control.handlers import ApiConfig, ControlApi
from gateway.control.models import PreviewIn, SandboxIn, TokenIn
from gateway.control.service import ServiceConfig
from gateway.core.records import TokenRecord, utcnow
from gateway.core.tokens import TokenSigner, generate_key
from gateway.store.memory import MemoryStore
from tests.helpers.api import assert_error
from tests.helpers.gateway import Gateway, expires_in, host_of

STATUSES = {"DEPLOYED", "DELETING", "TERMINATED"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {"reserved_ports": "2375"}


def assert_preview(body: dict[str, Any], name: str, sandbox: str = "sb") -> None:
    meta, spec = body["metadata"], body["spec"]
    assert meta["name"] == name
    assert meta["resourceName"] == sandbox and meta["resourceType"] == "sandbox"
    assert meta["workspace"] == "default"
    assert TS.match(meta["createdAt"]) and TS.match(meta["updatedAt"])
    assert spec["url"].startswith("http://") and isinstance(spec["port"], int)
    assert body["status"] in STATUSES and body["events"] == []


# ── sandboxes ───────────────────────────────────────────────────────────────────────────────
async def test_sandbox_lifecycle_and_shapes(gw: Gateway) -> None:
    created = await gw.sandbox("sb", labels_ignored=True)  # an unknown spec key is ignored
    assert created["metadata"]["name"] == "sb" and created["metadata"]["workspace"] == "default"
    assert created["spec"]["target"] == {"host": "127.0.0.1"}
    assert created["status"] == "DEPLOYED"
    # No spec.region on sandboxes: @blaxel/core would open HTTP/2 to any.<region>.bl.run.
    assert "region" not in created["spec"]

    status, got = await gw.call("GET", "/sandboxes/sb")
    assert status == 200 and got == created
    status, listed = await gw.call("GET", "/sandboxes")
    assert status == 200 and listed == [created]  # a bare array

    status, replaced = await gw.call(
        "PUT",
        "/sandboxes/sb",
        json={
            "metadata": {"name": "sb", "labels": {"team": "a"}},
            "spec": {"target": {"host": "127.0.0.2"}, "ttl": "1d"},
        },
    )
    assert status == 200, replaced
    assert replaced["metadata"]["labels"] == {"team": "a"}
    assert replaced["spec"]["target"]["host"] == "127.0.0.2" and replaced["spec"]["ttl"] == "1d"
    assert replaced["metadata"]["createdAt"] == created["metadata"]["createdAt"]

    status, deleted = await gw.call("DELETE", "/sandboxes/sb")
    assert status == 200 and deleted["status"] == "TERMINATED"
    # Deletion is synchronous: the very next read is a 404.
    assert_error(*await gw.call("GET", "/sandboxes/sb"), 404, "sb")
    assert_error(*await gw.call("DELETE", "/sandboxes/sb"), 404)
    assert (await gw.call("GET", "/sandboxes"))[1] == []


async def test_sandbox_conflicts_and_create_if_not_exist(gw: Gateway) -> None:
    first = await gw.sandbox("sb")
    body = {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.9"}}}
    assert_error(*await gw.call("POST", "/sandboxes", json=body), 409, "already exists")
    status, existing = await gw.call("POST", "/sandboxes?createIfNotExist=true", json=body)
    assert status == 200 and existing == first  # the existing one, unchanged


async def test_sandbox_put_needs_an_existing_sandbox_and_the_same_name(gw: Gateway) -> None:
    body = {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}}
    assert_error(*await gw.call("PUT", "/sandboxes/sb", json=body), 404)
    await gw.sandbox("sb")
    body["metadata"]["name"] = "other"
    assert_error(*await gw.call("PUT", "/sandboxes/sb", json=body), 400, "metadata.name")


@pytest.mark.parametrize(
    ("host", "words"),
    [("8.8.8.8", "allowed_targets"), ("not a host", "spec.target.host"), ("", "spec.target.host")],
)
async def test_sandbox_target_is_checked(gw: Gateway, host: str, words: str) -> None:
    body = {"metadata": {"name": "sb"}, "spec": {"target": {"host": host}}}
    assert_error(*await gw.call("POST", "/sandboxes", json=body), 400, words)


# ── previews ────────────────────────────────────────────────────────────────────────────────
async def test_preview_lifecycle_and_shapes(gw: Gateway, upstream: int) -> None:
    await gw.sandbox()
    created = await gw.preview(
        upstream, public=False, responseHeaders={"Access-Control-Allow-Origin": "*"}
    )
    assert_preview(created, "web")
    assert created["spec"]["public"] is False and created["status"] == "DEPLOYED"
    assert created["spec"]["responseHeaders"] == {"Access-Control-Allow-Origin": "*"}
    assert created["spec"]["region"] == "local"

    status, got = await gw.call("GET", "/sandboxes/sb/previews/web")
    assert status == 200 and got == created
    status, listed = await gw.call("GET", "/sandboxes/sb/previews")
    assert status == 200 and listed == [created]

    status, token = await gw.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": ""}, "spec": {"expiresAt": expires_in(hours=1)}},
    )
    assert status == 200
    # PUT replaces the spec; the hostname (no prefixUrl) and the tokens stay.
    status, replaced = await gw.call(
        "PUT",
        "/sandboxes/sb/previews/web",
        json={"metadata": {"name": "web"}, "spec": {"port": upstream, "public": True}},
    )
    assert status == 200, replaced
    assert replaced["spec"]["public"] is True and replaced["spec"]["responseHeaders"] == {}
    assert replaced["spec"]["url"] == created["spec"]["url"]
    status, tokens = await gw.call("GET", "/sandboxes/sb/previews/web/tokens")
    assert [t["metadata"]["name"] for t in tokens] == [token["metadata"]["name"]]
    async with gw.session.get(gw.edge("/"), headers={"Host": host_of(created)}) as r:
        assert r.status == 200  # public now: no token needed

    status, deleted = await gw.call("DELETE", "/sandboxes/sb/previews/web")
    assert status == 200 and deleted["status"] == "DELETING"
    assert_preview(deleted, "web")
    assert_error(*await gw.call("GET", "/sandboxes/sb/previews/web"), 404, "web")
    assert_error(*await gw.call("GET", "/sandboxes/sb/previews/web/tokens"), 404)
    assert (await gw.call("GET", "/sandboxes/sb/previews"))[1] == []
    async with gw.session.get(gw.edge("/"), headers={"Host": host_of(created)}) as r:
        assert r.status == 404


async def test_preview_create_conflicts(gw: Gateway, upstream: int) -> None:
    await gw.sandbox()
    await gw.preview(upstream)
    body = {"metadata": {"name": "web"}, "spec": {"port": upstream}}
    assert_error(*await gw.call("POST", "/sandboxes/sb/previews", json=body), 409, "web")
    # Unknown sandbox: 404, whatever the body.
    assert_error(*await gw.call("POST", "/sandboxes/nope/previews", json=body), 404, "nope")


async def test_force_replaces_a_prefix_clash_in_the_same_workspace(
    gw: Gateway, upstream: int
) -> None:
    await gw.sandbox("a")
    await gw.sandbox("b")
    old = await gw.preview(upstream, sandbox="a", name="one", prefixUrl="app", public=False)
    await gw.call(
        "POST",
        "/sandboxes/a/previews/one/tokens",
        json={"metadata": {"name": "t1"}, "spec": {"expiresAt": expires_in(hours=1)}},
    )
    body = {"metadata": {"name": "two"}, "spec": {"port": upstream, "prefixUrl": "app"}}
    assert_error(*await gw.call("POST", "/sandboxes/b/previews", json=body), 409, "already uses")
    status, new = await gw.call("POST", "/sandboxes/b/previews?force=true", json=body)
    assert status == 200, new
    assert new["spec"]["url"] == old["spec"]["url"]
    assert new["spec"]["url"].startswith("http://app-default.preview.localhost:")
    # The clashing preview is gone, with its tokens; the hostname now routes to the new one.
    assert_error(*await gw.call("GET", "/sandboxes/a/previews/one"), 404)
    assert (await gw.call("GET", "/sandboxes/a/previews"))[1] == []
    async with gw.session.get(gw.edge("/"), headers={"Host": host_of(new)}) as r:
        assert r.status == 401  # `two` is private (the default); `one` had tokens


@pytest.mark.parametrize("port", [80, 2375])
async def test_reserved_ports_are_refused(gw: Gateway, port: int) -> None:
    await gw.sandbox()
    body = {"metadata": {"name": "web"}, "spec": {"port": port}}
    assert_error(*await gw.call("POST", "/sandboxes/sb/previews", json=body), 400, "spec.port")


async def test_a_custom_domain_nobody_registered_is_refused_clearly(gw: Gateway) -> None:
    # Issue 11: a customDomain must be under a domain the workspace registered; any other
    # (unregistered, or another workspace's) answers the same 404, naming the field.
    await gw.sandbox()
    body = {"metadata": {"name": "web"}, "spec": {"port": 3000, "customDomain": "app.example.com"}}
    assert_error(
        *await gw.call("POST", "/sandboxes/sb/previews", json=body), 404, "spec.customDomain"
    )


# ── validation ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metadata": {"name": "web"}, "spec": {"port": "3000"}}, "spec.port"),
        ({"metadata": {"name": "web"}, "spec": {"port": 0}}, "spec.port"),
        ({"metadata": {"name": "web"}, "spec": {"port": 65536}}, "spec.port"),
        ({"metadata": {"name": "web"}, "spec": {"port": 3000.5}}, "spec.port"),
        ({"metadata": {"name": "web"}, "spec": {"port": 3000, "public": "yes"}}, "spec.public"),
        ({"metadata": {"name": "Web"}, "spec": {"port": 3000}}, "metadata.name"),
        ({"metadata": {"name": "a" * 64}, "spec": {"port": 3000}}, "metadata.name"),
        ({"metadata": {}, "spec": {"port": 3000}}, "metadata.name"),
        ({"spec": {"port": 3000}}, "metadata"),
        ({"metadata": {"name": "web"}}, "spec"),
        ({"metadata": {"name": "web"}, "spec": {"port": 3000, "ttl": "5y"}}, "spec.ttl"),
        ({"metadata": {"name": "web"}, "spec": {"port": 3000, "expires": "soon"}}, "spec.expires"),
        (
            {
                "metadata": {"name": "web"},
                "spec": {"port": 3000, "expires": "0001-01-01T00:00+01:00"},
            },
            "spec.expires",
        ),
        (
            {"metadata": {"name": "web"}, "spec": {"port": 3000, "expires": "2001-01-01T00:00Z"}},
            "spec.ttl/spec.expires",
        ),
        (
            {"metadata": {"name": "web"}, "spec": {"port": 3000, "requestHeaders": {"Host": "x"}}},
            "spec.requestHeaders",
        ),
        (
            {"metadata": {"name": "web"}, "spec": {"port": 3000, "prefixUrl": "Bad_Prefix"}},
            "spec.prefixUrl",
        ),
        ([{"metadata": {"name": "web"}}], "body"),
        ("web", "body"),
    ],
)
async def test_invalid_bodies_name_the_field(gw: Gateway, body: Any, field: str) -> None:
    await gw.sandbox()
    status, answer = await gw.call("POST", "/sandboxes/sb/previews", json=body)
    assert_error(status, answer, 400, field)


async def test_unknown_keys_are_ignored(gw: Gateway, upstream: int) -> None:
    await gw.sandbox()
    body = {
        "metadata": {"name": "web", "displayName": "x", "resourceName": "elsewhere"},
        "spec": {"port": upstream, "public": True, "url": "https://evil.test/", "region": "x"},
        "events": [],
        "status": "FAILED",
    }
    status, created = await gw.call("POST", "/sandboxes/sb/previews", json=body)
    assert status == 200, created
    assert created["metadata"]["resourceName"] == "sb" and created["status"] == "DEPLOYED"
    assert "evil.test" not in created["spec"]["url"] and created["spec"]["region"] == "local"


@pytest.mark.parametrize(
    ("data", "expected", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "JSON body is required"),
        (b"\xff\xfe{}", 400, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, ""),
        (
            b'{"metadata": {"name": "sb"}, "spec": {"target": {"host": "'
            + b"a" * 2_000_000
            + b'"}}}',
            413,
            "too large",
        ),
        (b"NaN", 400, "body"),
    ],
)
async def test_malformed_bodies_are_400_never_500(
    gw: Gateway, data: bytes, expected: int, words: str
) -> None:
    # A BytesIO: aiohttp warns about (and the suite's filterwarnings fails on) large raw bytes.
    status, body = await gw.call("POST", "/sandboxes", data=io.BytesIO(data))
    assert_error(status, body, expected, words)


# ── auth and routing errors ─────────────────────────────────────────────────────────────────
async def test_auth_errors(gw: Gateway) -> None:
    async with gw.session.get(gw.api + "/sandboxes") as r:
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert_error(r.status, await r.json(), 401, "API key")
    assert_error(*await gw.call("GET", "/sandboxes", key="not-a-key-at-all-000000"), 401)
    async with gw.session.get(
        gw.api + "/sandboxes", headers={"Authorization": f"Basic {gw.key}"}
    ) as r:
        assert_error(r.status, await r.json(), 401)
    # The SDKs' spelling, with the workspace they claim (blaxel-api.md §1).
    sdk = {"X-Blaxel-Authorization": f"Bearer {gw.key}", "X-Blaxel-Workspace": "default"}
    async with gw.session.get(gw.api + "/sandboxes", headers=sdk) as r:
        assert r.status == 200 and await r.json() == []
    async with gw.session.get(
        gw.api + "/sandboxes", headers={**sdk, "X-Blaxel-Workspace": "other"}
    ) as r:
        assert_error(r.status, await r.json(), 403, "X-Blaxel-Workspace")


async def test_routing_errors_have_the_error_shape(gw: Gateway) -> None:
    status, body = await gw.call("PATCH", "/sandboxes")
    assert_error(status, body, 405)
    assert_error(*await gw.call("GET", "/nothing/here"), 404)
    async with gw.session.get(f"http://127.0.0.1:{gw.api_port}/nothing") as r:
        assert_error(r.status, await r.json(), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sandboxes/UPPER"),
        ("DELETE", "/sandboxes/UPPER"),
        ("GET", "/sandboxes/a%3Ab"),
        ("GET", "/sandboxes/" + "a" * 64),
        ("GET", "/sandboxes/sb/previews/a%3Ab"),
        ("DELETE", "/sandboxes/sb/previews/a%3Ab"),
        ("GET", "/sandboxes/sb/previews/a%3Ab/tokens"),
        ("DELETE", "/sandboxes/sb/previews/web/tokens/%2A"),
    ],
)
async def test_names_that_cannot_exist_are_404(
    gw: Gateway, upstream: int, method: str, path: str
) -> None:
    await gw.sandbox()
    await gw.preview(upstream)
    assert_error(*await gw.call(method, path), 404, "not found")


# ── tokens ──────────────────────────────────────────────────────────────────────────────────
async def _token(gw: Gateway, name: str, expires_at: str) -> tuple[int, Any]:
    return await gw.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": name}, "spec": {"expiresAt": expires_at}},
    )


@pytest.mark.parametrize(
    "expires_at",
    [
        (datetime.now(UTC) + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),  # Python
        (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",  # TS
        (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "Z",  # naive
        (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None).isoformat(),  # no zone
        (datetime.now(UTC) + timedelta(hours=4)).astimezone().isoformat() + "Z",  # SDK bug form
    ],
)
async def test_token_expiry_is_read_leniently(gw: Gateway, upstream: int, expires_at: str) -> None:
    await gw.sandbox()
    await gw.preview(upstream, public=False)
    status, token = await _token(gw, "", expires_at)
    assert status == 200, token
    assert re.match(r"^token-[0-9a-f]{8}$", token["metadata"]["name"])  # made up: name was ""
    assert token["metadata"] | {"createdAt": "x"} == {
        "name": token["metadata"]["name"],
        "previewName": "web",
        "resourceName": "sb",
        "resourceType": "sandbox",
        "workspace": "default",
        "createdAt": "x",
    }
    assert TS.match(token["spec"]["expiresAt"]) and token["spec"]["expired"] is False
    assert token["spec"]["token"]


async def test_token_rules(gw: Gateway, upstream: int) -> None:
    await gw.sandbox()
    await gw.preview(upstream, public=False)
    status, body = await _token(gw, "token-1795990619488", expires_in(hours=1))  # the TS SDK's form
    assert status == 200 and body["metadata"]["name"] == "token-1795990619488"
    assert_error(
        *await _token(gw, "token-1795990619488", expires_in(hours=1)), 409, "already exists"
    )
    assert_error(*await _token(gw, "", expires_in(seconds=-5)), 400, "spec.expiresAt")
    assert_error(*await _token(gw, "", "tomorrow"), 400, "spec.expiresAt")
    assert_error(*await _token(gw, "Bad Name", expires_in(hours=1)), 400, "metadata.name")
    # A later expiry than the gateway allows is capped, not refused.
    status, capped = await _token(gw, "", expires_in(days=400))
    assert status == 200
    assert capped["spec"]["expiresAt"] < expires_in(days=31)

    status, message = await gw.call(
        "DELETE", "/sandboxes/sb/previews/web/tokens/token-1795990619488"
    )
    assert status == 200 and message == {"message": "Preview token deleted successfully"}
    assert_error(
        *await gw.call("DELETE", "/sandboxes/sb/previews/web/tokens/token-1795990619488"), 404
    )


async def test_token_list_computes_expired(gw: Gateway, upstream: int) -> None:
    await gw.sandbox()
    await gw.preview(upstream, public=False)
    await _token(gw, "live", expires_in(hours=1))
    # An expired token can't be made through the API (a past expiry is a 400), so one is put in
    # the store as a token that simply outlived its expiry.
    assert gw.running is not None
    store = gw.running.store
    preview = await store.get_preview("default", "sb", "web")
    assert preview is not None
    past = utcnow() - timedelta(minutes=5)
    old = TokenRecord(name="old", jti="j-old", expires_at=past, created_at=past)
    await store.put_preview(
        preview.model_copy(update={"tokens": {**preview.tokens, "old": old}}),
        create=False,
        force=False,
    )
    status, tokens = await gw.call("GET", "/sandboxes/sb/previews/web/tokens")
    assert status == 200
    assert [(t["metadata"]["name"], t["spec"]["expired"]) for t in tokens] == [
        ("old", True),
        ("live", False),
    ]


async def test_tokens_need_a_live_preview(gw: Gateway) -> None:
    await gw.sandbox()
    assert_error(*await _token(gw, "", expires_in(hours=1)), 404, "web")
    assert_error(*await gw.call("GET", "/sandboxes/sb/previews/web/tokens"), 404)
    assert_error(*await gw.call("DELETE", "/sandboxes/sb/previews/web/tokens/t"), 404)


# ── the OpenAPI document ────────────────────────────────────────────────────────────────────
async def test_openapi_is_served_without_a_key_and_documents_every_route(gw: Gateway) -> None:
    async with gw.session.get(f"http://127.0.0.1:{gw.api_port}{openapi.OPENAPI_PATH}") as r:
        assert r.status == 200
        served = await r.json()
    assert served == openapi.document()

    async def ready() -> bool:
        return True

    api = ControlApi(
        ApiConfig(ServiceConfig("preview.localhost", "local", frozenset({80}), []), "http", 8080),
        MemoryStore(),
        KeyRing([]),
        ready,
        TokenSigner([generate_key()]),
    )
    routed = {
        (route.method, route.resource.canonical)
        for route in api.app().router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method.upper(), path) for path, ops in served["paths"].items() for method in ops}
    assert routed == documented | {("GET", openapi.OPENAPI_PATH)}


@pytest.mark.parametrize(
    ("model", "ref"),
    [(SandboxIn, "SandboxIn"), (PreviewIn, "PreviewIn"), (TokenIn, "TokenIn")],
)
def test_openapi_request_schemas_are_the_validating_models(model: type, ref: str) -> None:
    """The documented body schema is pydantic's own schema of the model that validates it."""
    doc = openapi.document()
    own = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    assert doc["components"]["schemas"][ref] == {k: v for k, v in own.items() if k != "$defs"}
    for name, schema in own.get("$defs", {}).items():
        assert doc["components"]["schemas"][name] == schema
    bodies = [
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for ops in doc["paths"].values()
        for op in ops.values()
        if "requestBody" in op
    ]
    assert f"#/components/schemas/{ref}" in bodies
