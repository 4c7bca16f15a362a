"""Workspaces and API keys: a key sees and changes only its own workspace's objects (another
workspace's answer 404, never 403, so names do not leak), on every endpoint; keys rotate
through the keys file without a restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gateway.control.openapi import ENDPOINTS
from tests.helpers.api import api_gateway, assert_error
from tests.helpers.gateway import OTHER_KEY, Gateway, expires_in, host_of

NAMES = {
    "{sandboxName}": "sb",
    "{previewName}": "web",
    "{tokenName}": "tok",
    "{domainName}": "acme.test",
}


def _body(handler: str, port: int) -> dict[str, Any] | None:
    """A valid body for each endpoint that takes one."""
    return {
        "create_sandbox": {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}},
        "put_sandbox": {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.7"}}},
        "create_preview": {"metadata": {"name": "web"}, "spec": {"port": port}},
        "put_preview": {"metadata": {"name": "web"}, "spec": {"port": port, "public": True}},
        "create_token": {"metadata": {"name": "tok"}, "spec": {"expiresAt": expires_in(hours=1)}},
        "create_domain": {"metadata": {"name": "acme.test"}},
        "put_domain": {"metadata": {"name": "acme.test", "displayName": "theirs"}},
    }.get(handler)


async def _populate(gw: Gateway, port: int, key: str | None = None) -> dict[str, Any]:
    """sb / web (private) / tok in the key's workspace; returns what each read answers."""
    for path, body in (
        ("/sandboxes", _body("create_sandbox", port)),
        ("/sandboxes/sb/previews", _body("create_preview", port)),
        ("/sandboxes/sb/previews/web/tokens", _body("create_token", port)),
        ("/customdomains", _body("create_domain", port) if key is None else None),
    ):
        if body is None:
            continue  # a domain belongs to one workspace: only `default` registers it
        status, answer = await gw.call("POST", path, key=key, json=body)
        assert status == 200, answer
    return await _snapshot(gw, key)


async def _snapshot(gw: Gateway, key: str | None = None) -> dict[str, Any]:
    seen = {}
    for path in (
        "/sandboxes",
        "/sandboxes/sb",
        "/sandboxes/sb/previews",
        "/sandboxes/sb/previews/web",
        "/sandboxes/sb/previews/web/tokens",
        "/customdomains",
    ):
        status, seen[path] = await gw.call("GET", path, key=key)
        assert status == 200, seen[path]
    for token in seen["/sandboxes/sb/previews/web/tokens"]:
        del token["spec"]["token"]  # signed afresh for every answer
    return seen


async def test_every_endpoint_answers_404_across_workspaces(gw: Gateway, upstream: int) -> None:
    before = await _populate(gw, upstream)
    scoped = [ep for ep in ENDPOINTS if "{sandboxName}" in ep.path or "{domainName}" in ep.path]
    # All but list and create, of sandboxes and of custom domains.
    assert len(scoped) == len(ENDPOINTS) - 4
    for ep in scoped:
        path = ep.path.removeprefix("/v0")
        for placeholder, name in NAMES.items():
            path = path.replace(placeholder, name)
        status, body = await gw.call(
            ep.method, path, key=OTHER_KEY, json=_body(ep.handler, upstream)
        )
        assert_error(status, body, 404, "not found")
    # Nothing of `default` was read out, changed or deleted by `other`.
    assert await _snapshot(gw) == before
    status, listed = await gw.call("GET", "/sandboxes", key=OTHER_KEY)
    assert status == 200 and listed == []


async def test_same_names_in_two_workspaces_stay_apart(gw: Gateway, upstream: int) -> None:
    mine = await _populate(gw, upstream)
    theirs = await _populate(gw, upstream, key=OTHER_KEY)
    assert [s["metadata"]["workspace"] for s in mine["/sandboxes"]] == ["default"]
    assert [s["metadata"]["workspace"] for s in theirs["/sandboxes"]] == ["other"]
    assert mine["/sandboxes/sb/previews/web"]["metadata"]["workspace"] == "default"
    assert theirs["/sandboxes/sb/previews/web"]["metadata"]["workspace"] == "other"
    assert host_of(mine["/sandboxes/sb/previews/web"]) != host_of(
        theirs["/sandboxes/sb/previews/web"]
    )
    # A token of one workspace's preview does not open the other's same-named preview.
    status, token = await gw.call(
        "POST",
        "/sandboxes/sb/previews/web/tokens",
        json={"metadata": {"name": ""}, "spec": {"expiresAt": expires_in(hours=1)}},
    )
    assert status == 200
    theirs_host = host_of(theirs["/sandboxes/sb/previews/web"])
    async with gw.session.get(
        gw.edge("/"),
        headers={"Host": theirs_host, "X-Blaxel-Preview-Token": token["spec"]["token"]},
    ) as r:
        assert r.status == 401
    # Deleting mine leaves theirs.
    assert (await gw.call("DELETE", "/sandboxes/sb"))[0] == 200
    assert await _snapshot(gw, OTHER_KEY) == theirs


async def test_prefix_hostnames_carry_the_workspace(gw: Gateway, upstream: int) -> None:
    await gw.sandbox()
    await gw.call("POST", "/sandboxes", key=OTHER_KEY, json=_body("create_sandbox", upstream))
    body = {"metadata": {"name": "web"}, "spec": {"port": upstream, "prefixUrl": "app"}}
    status, mine = await gw.call("POST", "/sandboxes/sb/previews", json=body)
    assert status == 200
    # The same prefix in another workspace is another hostname, so no clash and nothing for
    # `force` to take from another workspace.
    status, theirs = await gw.call(
        "POST", "/sandboxes/sb/previews?force=true", key=OTHER_KEY, json=body
    )
    assert status == 200, theirs
    assert host_of(mine) == "app-default.preview.localhost"
    assert host_of(theirs) == "app-other.preview.localhost"
    assert (await gw.call("GET", "/sandboxes/sb/previews/web"))[0] == 200


async def test_the_workspace_header_cannot_reach_another_workspace(gw: Gateway) -> None:
    await gw.sandbox()
    async with gw.session.get(
        gw.api + "/sandboxes/sb",
        headers={"X-Blaxel-Authorization": f"Bearer {OTHER_KEY}", "X-Blaxel-Workspace": "default"},
    ) as r:
        assert_error(r.status, await r.json(), 403, "X-Blaxel-Workspace")


# ── the keys file ───────────────────────────────────────────────────────────────────────────
def _write(path: Path, text: str, stamp: int) -> None:
    path.write_text(text)
    # A distinct mtime per version: the gateway re-reads the file when its mtime changes.
    os.utime(path, (stamp, stamp))


async def test_keys_file_rotates_keys_without_a_restart(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    keys = tmp_path / "keys"
    one, two = "team-key-one-0123456789", "team-key-two-0123456789"
    _write(keys, f"# rotated by ops\n\nteam:{one}\n", 1_000_000)
    async with api_gateway("memory", request, api_keys="", api_keys_file=str(keys)) as gw:
        status, created = await gw.call(
            "POST", "/sandboxes", key=one, json=_body("create_sandbox", 1)
        )
        assert status == 200 and created["metadata"]["workspace"] == "team"

        _write(
            keys, f"team:{one}\nteam:{two}  # new key, both valid during the rotation\n", 2_000_000
        )
        assert (await gw.call("GET", "/sandboxes/sb", key=two))[0] == 200
        assert (await gw.call("GET", "/sandboxes/sb", key=one))[0] == 200

        _write(keys, f"team:{two}\n", 3_000_000)
        assert_error(*await gw.call("GET", "/sandboxes/sb", key=one), 401)
        status, listed = await gw.call("GET", "/sandboxes", key=two)
        assert status == 200 and [s["metadata"]["name"] for s in listed] == ["sb"]

        # A broken file (here: a key too short) keeps the last good keys: no lock-out.
        _write(keys, "team:short\n", 4_000_000)
        assert (await gw.call("GET", "/sandboxes", key=two))[0] == 200
        # Keys from GATEWAY_API_KEYS are not in use here.
        assert_error(*await gw.call("GET", "/sandboxes"), 401)
