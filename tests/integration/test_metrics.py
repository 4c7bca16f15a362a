"""`/metrics` after real traffic: the counts match what was sent."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.gateway import Gateway, run_gateway
from tests.helpers.ports import unused_port
from tests.helpers.redis_server import RedisServer


async def scrape(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with gw.session.get(f"http://127.0.0.1:{gw.api_port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_requests_failures_and_sockets(gateway: Gateway, upstream: int) -> None:
    host = await gateway.public_preview(upstream)
    for _ in range(3):
        async with gateway.session.get(gateway.edge("/"), headers={"Host": host}) as r:
            assert r.status == 200
    async with gateway.session.get(
        gateway.edge("/"), headers={"Host": "nope.local.preview.localhost"}
    ) as r:
        assert r.status == 404
    await gateway.preview(unused_port(), name="dead")
    _, dead = await gateway.call("GET", "/sandboxes/sb/previews/dead")
    dead_host = dead["spec"]["url"].split("//")[1].split(":")[0]
    async with gateway.session.get(gateway.edge("/"), headers={"Host": dead_host}) as r:
        assert r.status == 502
    await gateway.preview(upstream, name="private", public=False)
    _, private = await gateway.call("GET", "/sandboxes/sb/previews/private")
    private_host = private["spec"]["url"].split("//")[1].split(":")[0]
    async with gateway.session.get(gateway.edge("/"), headers={"Host": private_host}) as r:
        assert r.status == 401
    async with gateway.session.ws_connect(gateway.edge("/ws"), headers={"Host": host}) as ws:
        await ws.send_str("x")
        assert (await ws.receive()).type is aiohttp.WSMsgType.TEXT
        during = await scrape(gateway)
        assert during[("gateway_websockets_open", ())] == 1
    m = await scrape(gateway)
    ok = ("gateway_requests_total", (("code", "ok"), ("kind", "http"), ("status_class", "2xx")))
    assert m[ok] == 3
    assert (
        m[
            (
                "gateway_requests_total",
                (("code", "preview_not_found"), ("kind", "http"), ("status_class", "4xx")),
            )
        ]
        == 1
    )
    assert m[("gateway_upstream_failures_total", (("kind", "refused"),))] == 1
    assert m[("gateway_token_rejections_total", (("reason", "token_required"),))] == 1
    assert m[("gateway_request_duration_seconds_count", (("kind", "http"),))] == 6
    assert m[("gateway_upstream_response_seconds_count", ())] == 3
    # The embedded store sits behind the same cache as Redis: each hostname's first lookup is a
    # miss (the unknown one misses on its name and on its wildcard), repeats are hits (the two
    # later GETs and the WebSocket to `host`).
    assert m[("gateway_route_cache_total", (("result", "miss"),))] == 5
    assert m[("gateway_route_cache_total", (("result", "hit"),))] == 3
    # No hostname, sandbox or preview name ever becomes a label value.
    label_values = {value for _, labels in m for _, value in labels}
    assert not label_values & {host, dead_host, private_host, "sb", "web", "dead", "private"}


async def test_a_websocket_session_is_counted_as_101(gateway: Gateway, upstream: int) -> None:
    host = await gateway.public_preview(upstream)
    async with gateway.session.ws_connect(gateway.edge("/ws"), headers={"Host": host}) as ws:
        await ws.send_str("x")
        await ws.receive()
    assert gateway.running is not None
    hub = gateway.running.hub
    for _ in range(200):
        m = await scrape(gateway)
        if hub.open_count == 0 and any(
            k[0] == "gateway_requests_total" and ("kind", "websocket") in k[1] for k in m
        ):
            break
        await asyncio.sleep(0.02)
    key = (
        "gateway_requests_total",
        (("code", "ok"), ("kind", "websocket"), ("status_class", "1xx")),
    )
    assert m.get(key) == 1, {k: v for k, v in m.items() if k[0] == "gateway_requests_total"}


async def test_redis_errors_are_counted(
    redis_server: RedisServer, redis_prefix: str, upstream: int
) -> None:
    async with run_gateway(
        redis_url=redis_server.url, redis_prefix=redis_prefix, cache_ttl_s=0
    ) as gw:
        host = await gw.public_preview(upstream)
        async with gw.session.get(gw.edge("/"), headers={"Host": host}) as r:
            assert r.status == 200
        before = await scrape(gw)
        assert before[("gateway_store_errors_total", (("operation", "route_lookup"),))] == 0
        with redis_server.stopped():
            async with gw.session.get(
                gw.edge("/"), headers={"Host": "gone.local.preview.localhost"}
            ) as r:
                assert r.status == 503
            async with gw.session.get(f"{gw.api}/sandboxes", headers=gw.auth()) as r:
                assert r.status == 503
            m = await scrape(gw)
    assert m[("gateway_store_errors_total", (("operation", "route_lookup"),))] >= 1
    assert m[("gateway_store_errors_total", (("operation", "command"),))] >= 1
    assert m[("gateway_route_cache_total", (("result", "error"),))] >= 1
