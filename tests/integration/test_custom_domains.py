"""Custom domains (issue 11, without TLS) through the real gateway on both stores: the API and
its isolation, DNS verification against a real DNS server on loopback, custom-domain and
fallback routing through the protocol edge, grace after a record vanishes, the cascade, and two
replicas on one Redis."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers.api import api_gateway, assert_error
from tests.helpers.dns_server import DnsServer, dns_server
from tests.helpers.edge_client import echoed, one
from tests.helpers.gateway import OTHER_KEY, Gateway, run_gateway
from tests.helpers.polling import eventually

CHALLENGE = "_preview-gateway-challenge.acme.test"
STORES = ["memory", "redis"]


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with dns_server() as server:
        yield server


def domain_settings(dns: DnsServer, **overrides: Any) -> dict[str, Any]:
    return {
        "dns_nameservers": dns.address,
        "dns_timeout_s": 0.3,
        **overrides,
    }


@pytest.fixture(params=STORES)
async def gw(request: pytest.FixtureRequest, dns: DnsServer) -> AsyncIterator[Gateway]:
    async with api_gateway(request.param, request, **domain_settings(dns)) as gateway:
        yield gateway


async def register(gw: Gateway, name: str = "acme.test", **spec: Any) -> dict[str, Any]:
    status, body = await gw.call(
        "POST", "/customdomains", json={"metadata": {"name": name}, "spec": spec}
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def verified(gw: Gateway, dns: DnsServer, name: str = "acme.test") -> dict[str, Any]:
    body = await register(gw, name)
    txt = body["spec"]["txtRecords"][0]
    dns.txt[txt["name"]] = [txt["value"]]
    status, body = await gw.call("POST", f"/customdomains/{name}/verify")
    assert status == 200 and body["spec"]["status"] == "verified", body
    return body


async def random_hostname(gw: Gateway, preview: str) -> str:
    """The preview's own hostname (``spec.url`` shows the custom one)."""
    assert gw.running is not None
    found = await gw.running.store.get_preview("default", "sb", preview)
    assert found is not None
    return found.hostname


async def edge_get(gw: Gateway, host: str, headers: dict[str, str] | None = None) -> Any:
    async with gw.session.get(gw.edge(), headers={"Host": host, **(headers or {})}) as r:
        return r.status, await r.read()


# ── the API ─────────────────────────────────────────────────────────────────────────────────
async def test_create_answers_pending_with_the_txt_challenge(gw: Gateway) -> None:
    body = await register(gw, "Acme.Test", region="eu")
    assert body["metadata"]["name"] == "acme.test"
    assert body["metadata"]["workspace"] == "default"
    spec = body["spec"]
    assert spec["status"] == "pending" and spec["region"] == "eu"
    [txt] = spec["txtRecords"]
    assert txt["name"] == CHALLENGE and txt["type"] == "TXT" and len(txt["value"]) > 20
    assert {r["name"] for r in spec["cnameRecords"]} == {"*.acme.test", "acme.test"}
    assert await gw.call("GET", "/customdomains/acme.test") == (200, body)
    assert await gw.call("GET", "/customdomains") == (200, [body])
    # Another domain gets another random value.
    other = await register(gw, "beta.test")
    assert other["spec"]["txtRecords"][0]["value"] != txt["value"]


@pytest.mark.parametrize(
    "name",
    ["not a domain", "acme", "-acme.test", "preview.localhost", "x.preview.localhost", "localhost"],
)
async def test_invalid_names_and_the_preview_domain_are_400(gw: Gateway, name: str) -> None:
    status, body = await gw.call("POST", "/customdomains", json={"metadata": {"name": name}})
    assert_error(status, body, 400, "metadata.name")


async def test_a_domain_tree_belongs_to_one_workspace(gw: Gateway) -> None:
    await register(gw, "acme.test")
    assert_error(*await gw.call("POST", "/customdomains", json={"metadata": {"name": "acme.test"}}),
                 409, "already exists")  # fmt: skip
    for name in ("acme.test", "app.acme.test", "x.y.acme.test"):
        body = {"metadata": {"name": name}}
        assert_error(*await gw.call("POST", "/customdomains", key=OTHER_KEY, json=body), 409)
    # The owner may register names under its own domain.
    await register(gw, "app.acme.test")
    # A parent of someone else's domain would take their tree: 409 as well.
    await register(gw, "shop.beta.test")
    body = {"metadata": {"name": "beta.test"}}
    assert_error(*await gw.call("POST", "/customdomains", key=OTHER_KEY, json=body), 409)
    # Once deleted, the tree is free for another workspace.
    for name in ("app.acme.test", "acme.test"):
        assert (await gw.call("DELETE", f"/customdomains/{name}"))[0] == 200
    body = {"metadata": {"name": "acme.test"}}
    assert (await gw.call("POST", "/customdomains", key=OTHER_KEY, json=body))[0] == 200


async def test_another_workspace_cannot_see_or_touch_a_domain(gw: Gateway, dns: DnsServer) -> None:
    await register(gw)
    body = {"metadata": {"name": "acme.test"}}
    for method, path, payload in [
        ("GET", "/customdomains/acme.test", None),
        ("PUT", "/customdomains/acme.test", body),
        ("POST", "/customdomains/acme.test/verify", None),
        ("DELETE", "/customdomains/acme.test", None),
    ]:
        assert_error(*await gw.call(method, path, key=OTHER_KEY, json=payload), 404)
    assert await gw.call("GET", "/customdomains", key=OTHER_KEY) == (200, [])
    assert dns.queries == 0  # a foreign verify never even looked
    # Nor attach a preview to it.
    await gw.sandbox()
    sandbox = {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}}
    assert (await gw.call("POST", "/sandboxes", key=OTHER_KEY, json=sandbox))[0] == 200
    preview = {"metadata": {"name": "web"}, "spec": {"port": 80, "customDomain": "app.acme.test"}}
    status, answer = await gw.call("POST", "/sandboxes/sb/previews", key=OTHER_KEY, json=preview)
    assert_error(status, answer, 404, "spec.customDomain")
    assert (await gw.call("GET", "/customdomains/acme.test"))[0] == 200


async def test_put_changes_display_name_and_fallback_only(gw: Gateway, upstream: int) -> None:
    created = await register(gw)
    await gw.sandbox()
    await gw.preview(upstream, name="fb")
    body = {"metadata": {"name": "acme.test", "displayName": "Acme"},
            "spec": {"fallbackPreviewId": "sb/fb"}}  # fmt: skip
    status, updated = await gw.call("PUT", "/customdomains/acme.test", json=body)
    assert status == 200, updated
    assert updated["metadata"]["displayName"] == "Acme"
    assert updated["spec"]["fallbackPreviewId"] == "sb/fb"
    assert updated["spec"]["txtRecords"] == created["spec"]["txtRecords"]
    assert updated["spec"]["status"] == "pending"
    bad = {"metadata": {"name": "acme.test"}, "spec": {"fallbackPreviewId": "sb/nope"}}
    assert_error(*await gw.call("PUT", "/customdomains/acme.test", json=bad), 400,
                 "spec.fallbackPreviewId")  # fmt: skip
    renamed = {"metadata": {"name": "other.test"}}
    assert_error(*await gw.call("PUT", "/customdomains/acme.test", json=renamed), 400)


# ── verification against a real DNS server ─────────────────────────────────────────────────
async def test_verification_outcomes(gw: Gateway, dns: DnsServer) -> None:
    body = await register(gw)
    value = body["spec"]["txtRecords"][0]["value"]

    async def verify() -> dict[str, Any]:
        status, answer = await gw.call("POST", "/customdomains/acme.test/verify")
        assert status == 200, answer
        return answer["spec"]  # type: ignore[no-any-return]

    spec = await verify()  # withheld: NXDOMAIN
    assert spec["status"] == "failed" and "No TXT record" in spec["verificationError"]
    dns.txt[CHALLENGE] = ["something-else"]
    spec = await verify()
    assert spec["status"] == "failed" and "another value" in spec["verificationError"]
    dns.silent = True
    spec = await verify()
    assert spec["status"] == "failed" and "timeout" in spec["verificationError"]
    dns.silent = False
    dns.txt[CHALLENGE] = ["unrelated", value]
    spec = await verify()
    assert spec["status"] == "verified" and "verificationError" not in spec
    assert spec["lastVerifiedAt"]


# ── routing ─────────────────────────────────────────────────────────────────────────────────
async def test_a_preview_answers_on_its_custom_host_once_verified(
    gw: Gateway, dns: DnsServer, upstream: int
) -> None:
    body = await register(gw)
    await gw.sandbox()
    preview = await gw.preview(upstream, customDomain="app.acme.test")
    assert preview["spec"]["url"].startswith("http://app.acme.test")
    assert preview["spec"]["customDomain"] == "app.acme.test"
    random_host = await random_hostname(gw, "web")
    assert (await edge_get(gw, random_host))[0] == 200
    assert (await edge_get(gw, "app.acme.test"))[0] == 404  # pending: never served
    dns.txt[CHALLENGE] = [body["spec"]["txtRecords"][0]["value"]]
    assert (await gw.call("POST", "/customdomains/acme.test/verify"))[0] == 200
    # The 404 above was cached; the verification's invalidation clears it.
    status, raw = await edge_get(gw, "app.acme.test")
    assert status == 200
    assert one(echoed(raw), "Host") == "app.acme.test"
    # A name under the domain that no preview takes, with no fallback: 404.
    assert (await edge_get(gw, "nope.acme.test"))[0] == 404
    # Deleting the domain stops the custom host; the random one still works.
    assert (await gw.call("DELETE", "/customdomains/acme.test"))[0] == 200
    assert (await edge_get(gw, "app.acme.test"))[0] == 404
    assert (await edge_get(gw, random_host))[0] == 200


async def test_a_custom_host_is_taken_once_unless_forced(gw: Gateway, upstream: int) -> None:
    await register(gw)
    await gw.sandbox()
    await gw.preview(upstream, name="one", customDomain="app.acme.test")
    body = {
        "metadata": {"name": "two"},
        "spec": {"port": upstream, "customDomain": "app.acme.test"},
    }
    assert_error(*await gw.call("POST", "/sandboxes/sb/previews", json=body), 409)
    status, _ = await gw.call("POST", "/sandboxes/sb/previews?force=true", json=body)
    assert status == 200
    assert (await gw.call("GET", "/sandboxes/sb/previews/one"))[0] == 404
    assert gw.running is not None
    holder = await gw.running.store.get_custom_host("app.acme.test")
    assert holder is not None and holder.preview == "two"


@pytest.fixture
async def memory_gateway(request: pytest.FixtureRequest, dns: DnsServer) -> AsyncIterator[Gateway]:
    """The embedded store: the edge reads routes through ``RouteLookup.find``."""
    settings = domain_settings(dns)
    async with api_gateway("memory", request, **settings) as gateway:
        yield gateway


async def test_the_edge_routes_custom_hosts_and_fallbacks(
    memory_gateway: Gateway, dns: DnsServer, upstream: int
) -> None:
    gw = memory_gateway
    await verified(gw, dns)
    await gw.sandbox()
    await gw.preview(upstream, name="fb")
    await gw.preview(upstream, name="app", customDomain="app.acme.test")
    body = {"metadata": {"name": "acme.test"}, "spec": {"fallbackPreviewId": "sb/fb"}}
    assert (await gw.call("PUT", "/customdomains/acme.test", json=body))[0] == 200
    status, raw = await edge_get(gw, "app.acme.test", {"X-Blaxel-Fallback": "spoofed"})
    assert status == 200 and "x-blaxel-fallback" not in echoed(raw)["header_map"]
    status, raw = await edge_get(gw, "other.acme.test", {"X-Blaxel-Fallback": "spoofed"})
    assert status == 200 and one(echoed(raw), "X-Blaxel-Fallback") == "true"


async def test_fallback_takes_unknown_names_and_client_copies_are_stripped(
    gw: Gateway, dns: DnsServer, upstream: int
) -> None:
    await verified(gw, dns)
    await gw.sandbox()
    await gw.preview(upstream, name="fb")
    await gw.preview(upstream, name="app", customDomain="app.acme.test")
    spoof = {"X-Blaxel-Fallback": "spoofed", "X-Blaxel-Fallback-Domain": "evil.test"}
    assert (await edge_get(gw, "new.acme.test", spoof))[0] == 404  # no fallback yet (cached)
    body = {"metadata": {"name": "acme.test"}, "spec": {"fallbackPreviewId": "sb/fb"}}
    assert (await gw.call("PUT", "/customdomains/acme.test", json=body))[0] == 200
    for host in ("new.acme.test", "a.b.acme.test", "acme.test"):
        status, raw = await edge_get(gw, host, spoof)
        assert status == 200, host
        seen = echoed(raw)
        assert one(seen, "X-Blaxel-Fallback") == "true"
        assert one(seen, "X-Blaxel-Fallback-Preview") == "sb/fb"
        assert one(seen, "X-Blaxel-Fallback-Domain") == "acme.test"
    # The exact custom host beats the fallback, and spoofed copies never reach the sandbox.
    for host in ("app.acme.test", await random_hostname(gw, "app")):
        status, raw = await edge_get(gw, host, spoof)
        assert status == 200
        assert "x-blaxel-fallback" not in echoed(raw)["header_map"]
        assert "x-blaxel-fallback-domain" not in echoed(raw)["header_map"]
    # Deleting the fallback's sandbox removes its previews from the domain's table.
    assert (await gw.call("DELETE", "/sandboxes/sb"))[0] == 200
    assert gw.running is not None
    assert await gw.running.store.get_custom_host("app.acme.test") is None
    assert (await edge_get(gw, "new.acme.test"))[0] == 404
    assert (await edge_get(gw, "app.acme.test"))[0] == 404


async def spec_of(gw: Gateway) -> dict[str, Any]:
    status, body = await gw.call("GET", "/customdomains/acme.test")
    assert status == 200, body
    return body["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("store", STORES)
async def test_a_vanished_record_is_forgiven_within_the_grace_period(
    request: pytest.FixtureRequest, dns: DnsServer, upstream: int, store: str
) -> None:
    # Re-checks every 0.1 s, a grace far longer than the test: the domain must stay served.
    settings = domain_settings(dns, domain_recheck_interval_s=0.1, domain_grace_s=600)
    async with api_gateway(store, request, **settings) as gw:
        body = await verified(gw, dns)
        await gw.sandbox()
        await gw.preview(upstream, customDomain="app.acme.test")
        saved = dict(dns.txt)
        dns.txt.clear()

        async def noticed() -> bool:
            return "No TXT record" in (await spec_of(gw)).get("verificationError", "")

        await eventually(noticed)
        assert (await spec_of(gw))["status"] == "verified"
        assert (await edge_get(gw, "app.acme.test"))[0] == 200
        dns.txt.update(saved)  # back in time: the error clears, nothing else changes

        async def forgiven() -> bool:
            return "verificationError" not in await spec_of(gw)

        await eventually(forgiven)
        assert (await spec_of(gw))["txtRecords"] == body["spec"]["txtRecords"]
        assert (await edge_get(gw, "app.acme.test"))[0] == 200


@pytest.mark.parametrize("store", STORES)
async def test_after_the_grace_period_the_domain_fails_and_is_refused(
    request: pytest.FixtureRequest, dns: DnsServer, upstream: int, store: str
) -> None:
    settings = domain_settings(dns, domain_recheck_interval_s=0.1, domain_grace_s=0.3)
    async with api_gateway(store, request, **settings) as gw:
        await verified(gw, dns)
        await gw.sandbox()
        await gw.preview(upstream, customDomain="app.acme.test")
        assert (await edge_get(gw, "app.acme.test"))[0] == 200
        saved = dict(dns.txt)
        dns.txt.clear()

        async def refused() -> bool:
            return (await spec_of(gw))["status"] == "failed"

        await eventually(refused)
        assert "No TXT record" in (await spec_of(gw))["verificationError"]
        assert (await edge_get(gw, "app.acme.test"))[0] == 404
        # The random hostname never stopped; a new verification serves the custom one again.
        assert (await edge_get(gw, await random_hostname(gw, "web")))[0] == 200
        dns.txt.update(saved)
        assert (await gw.call("POST", "/customdomains/acme.test/verify"))[0] == 200
        assert (await edge_get(gw, "app.acme.test"))[0] == 200


# ── two replicas on one Redis ───────────────────────────────────────────────────────────────
@contextlib.asynccontextmanager
async def replicas(
    request: pytest.FixtureRequest, dns: DnsServer
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    redis = request.getfixturevalue("redis_server")
    shared = {"redis_url": redis.url, "redis_prefix": request.getfixturevalue("redis_prefix")}
    async with (
        run_gateway(**shared, **domain_settings(dns)) as a,
        run_gateway(**shared, **domain_settings(dns)) as b,
    ):
        yield a, b


async def test_a_domain_verified_through_one_replica_serves_on_the_other(
    request: pytest.FixtureRequest, dns: DnsServer, upstream: int
) -> None:
    async with replicas(request, dns) as (a, b):
        body = await register(a)
        await a.sandbox()
        await a.preview(upstream, name="fb")
        await a.preview(upstream, name="app", customDomain="app.acme.test")
        assert (await edge_get(b, "app.acme.test"))[0] == 404  # b caches the miss
        assert (await edge_get(b, "other.acme.test"))[0] == 404
        dns.txt[CHALLENGE] = [body["spec"]["txtRecords"][0]["value"]]
        assert (await a.call("POST", "/customdomains/acme.test/verify"))[0] == 200
        put = {"metadata": {"name": "acme.test"}, "spec": {"fallbackPreviewId": "sb/fb"}}
        assert (await a.call("PUT", "/customdomains/acme.test", json=put))[0] == 200

        async def served_on_b() -> bool:
            return (await edge_get(b, "app.acme.test"))[0] == 200

        async def fallback_on_b() -> bool:
            return (await edge_get(b, "other.acme.test"))[0] == 200

        await eventually(served_on_b)
        await eventually(fallback_on_b)
        assert (await b.call("DELETE", "/customdomains/acme.test"))[0] == 200

        async def gone_on_a() -> bool:
            return (await edge_get(a, "app.acme.test"))[0] == 404

        await eventually(gone_on_a)


async def test_custom_routes_follow_preview_and_sandbox_changes(
    gw: Gateway, dns: DnsServer, upstream: int
) -> None:
    assert gw.running is not None
    store = gw.running.store
    await verified(gw, dns)
    await gw.sandbox()
    await gw.preview(upstream, customDomain="app.acme.test")
    # The sandbox moves: the custom hostname's route follows its target.
    moved = {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.7"}}}
    assert (await gw.call("PUT", "/sandboxes/sb", json=moved))[0] == 200
    route = await store.get_route("app.acme.test")
    assert route is not None and route.target_host == "127.0.0.7"
    # The preview moves to another name of the domain: the old one is freed and unrouted.
    spec = {"port": upstream, "public": True, "customDomain": "www.acme.test"}
    body: dict[str, Any] = {"metadata": {"name": "web"}, "spec": spec}
    status, answer = await gw.call("PUT", "/sandboxes/sb/previews/web", json=body)
    assert status == 200 and answer["spec"]["url"].startswith("http://www.acme.test")
    assert await store.get_route("app.acme.test") is None
    assert await store.get_custom_host("app.acme.test") is None
    assert (await store.get_route("www.acme.test")) is not None
    # Without customDomain, it keeps only its random hostname.
    body["spec"].pop("customDomain")
    status, answer = await gw.call("PUT", "/sandboxes/sb/previews/web", json=body)
    assert status == 200 and "acme.test" not in answer["spec"]["url"]
    assert await store.get_route("www.acme.test") is None
    assert await store.get_custom_host("www.acme.test") is None


async def test_a_revoked_token_stops_working_on_the_custom_host_too(
    gw: Gateway, dns: DnsServer, upstream: int
) -> None:
    await verified(gw, dns)
    await gw.sandbox()
    await gw.preview(upstream, public=False, customDomain="app.acme.test")
    assert (await edge_get(gw, "app.acme.test"))[0] == 401
    token = await gw.mint()
    header = {"X-Blaxel-Preview-Token": token["spec"]["token"]}
    for host in ("app.acme.test", await random_hostname(gw, "web")):
        assert (await edge_get(gw, host, header))[0] == 200, host
    name = token["metadata"]["name"]
    assert (await gw.call("DELETE", f"/sandboxes/sb/previews/web/tokens/{name}"))[0] == 200
    for host in ("app.acme.test", await random_hostname(gw, "web")):
        assert (await edge_get(gw, host, header))[0] == 401, host


async def test_a_deleted_domains_previews_never_block_its_next_owner(
    gw: Gateway, dns: DnsServer, upstream: int
) -> None:
    await register(gw)
    await gw.sandbox()
    await gw.preview(upstream, public=False, customDomain="app.acme.test")
    assert (await gw.call("DELETE", "/customdomains/acme.test"))[0] == 200
    await gw.mint()  # rewrites the preview, which still names app.acme.test in its spec
    body = {"metadata": {"name": "acme.test"}}
    assert (await gw.call("POST", "/customdomains", key=OTHER_KEY, json=body))[0] == 200
    sandbox = {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}}
    assert (await gw.call("POST", "/sandboxes", key=OTHER_KEY, json=sandbox))[0] == 200
    preview = {"metadata": {"name": "web"},
               "spec": {"port": upstream, "customDomain": "app.acme.test"}}  # fmt: skip
    status, answer = await gw.call("POST", "/sandboxes/sb/previews", key=OTHER_KEY, json=preview)
    assert status == 200, answer
    assert gw.running is not None
    holder = await gw.running.store.get_custom_host("app.acme.test")
    assert holder is not None and holder.workspace == "other"
