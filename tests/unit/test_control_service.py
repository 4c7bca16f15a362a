"""The control service's rules without a server: expiry and reaping, the compare-and-swap retry,
token retention and hostname choice, over the real embedded store (``MemoryStore``)."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.control.models import PreviewIn, SandboxIn, TokenIn
from gateway.control.service import (
    CAS_ATTEMPTS,
    MAX_TOKENS_PER_PREVIEW,
    TOKEN_RETENTION,
    ControlService,
    ServiceConfig,
)
from gateway.core.errors import BadRequest, Conflict, GatewayError, NotFound
from gateway.core.records import Domain, Preview, TokenRecord
from gateway.store.base import PutResult
from gateway.store.memory import MemoryStore

DOMAIN = "preview.test"
START = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def service(
    store: MemoryStore | None = None, clock: Clock | None = None
) -> tuple[ControlService, MemoryStore, Clock]:
    store = store or MemoryStore()
    clock = clock or Clock()
    config = ServiceConfig(
        preview_domain=DOMAIN,
        region="eu",
        blocked_ports=frozenset({22}),
        allowed_targets=[ipaddress.ip_network("10.0.0.0/8")],
        token_max_lifetime_s=3600,
    )
    return ControlService(config, store, clock=clock), store, clock


def sandbox_in(name: str = "sb", host: str = "10.0.0.7", **spec: Any) -> SandboxIn:
    return SandboxIn.model_validate(
        {"metadata": {"name": name}, "spec": {"target": {"host": host}, **spec}}
    )


def preview_in(name: str = "web", port: int = 3000, **spec: Any) -> PreviewIn:
    return PreviewIn.model_validate({"metadata": {"name": name}, "spec": {"port": port, **spec}})


def token_in(expires_at: datetime | str, name: str = "") -> TokenIn:
    value = expires_at if isinstance(expires_at, str) else expires_at.isoformat()
    return TokenIn.model_validate({"metadata": {"name": name}, "spec": {"expiresAt": value}})


# ── validation: each bad input is one error class with its message ──────────────────────────
@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: sandbox_in(host="192.168.1.1"), BadRequest, "outside the gateway's allowed"),
        (lambda: sandbox_in(host="not_a_name"), BadRequest, "an IP address or a DNS name"),
        (lambda: sandbox_in(expires="2029-12-31T00:00:00Z"), BadRequest, "already in the past"),
    ],
    ids=["ip-outside-allowed", "bad-dns-name", "expired-on-arrival"],
)
async def test_sandbox_rules(make: Any, error: type[GatewayError], message: str) -> None:
    svc, store, _ = service()
    with pytest.raises(error, match=message):
        await svc.create_sandbox("ws", make())
    assert await store.list_sandboxes("ws") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (preview_in(port=22), "port 22 is reserved"),
        (preview_in(expires="2029-01-01T00:00:00Z"), "already in the past"),
    ],
    # customDomain is no longer refused outright (issue 11): tests/unit/test_domains.py.
    ids=["blocked-port", "expired-on-arrival"],
)
async def test_preview_rules(body: PreviewIn, message: str) -> None:
    svc, store, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    with pytest.raises(BadRequest, match=message):
        await svc.create_preview(sandbox, body)
    assert await store.list_previews("ws", "sb") == []


# ── hostname choice ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("first", "second", "same_hostname", "expected"),
    [
        ({}, None, None, r"[a-z0-9]+\.eu\.preview\.test"),
        ({"prefixUrl": "app"}, None, None, r"app-ws\.preview\.test"),
        ({}, {}, True, r"[a-z0-9]+\.eu\.preview\.test"),
        ({}, {"prefixUrl": "app"}, False, r"app-ws\.preview\.test"),
        ({"prefixUrl": "app"}, {}, False, r"[a-z0-9]+\.eu\.preview\.test"),
        ({"prefixUrl": "app"}, {"prefixUrl": "app"}, True, r"app-ws\.preview\.test"),
    ],
    ids=["random", "prefix", "replace-keeps-random", "to-prefix", "from-prefix", "same-prefix"],
)
async def test_hostname_choice(
    first: dict[str, Any], second: dict[str, Any] | None, same_hostname: bool | None, expected: str
) -> None:
    svc, store, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    preview = await svc.create_preview(sandbox, preview_in(**first))
    if second is not None:
        replaced = await svc.replace_preview(sandbox, "web", preview_in(port=4000, **second))
        assert (replaced.hostname == preview.hostname) is same_hostname
        assert replaced.uid == preview.uid, "a replacement keeps its identity"
        preview = replaced
    assert re.fullmatch(expected, preview.hostname)
    route = await store.get_route(preview.hostname)
    assert route is not None and route.preview == "web"


async def test_a_taken_hostname_is_a_conflict_unless_forced() -> None:
    svc, store, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in("one", prefixUrl="app"))
    with pytest.raises(Conflict, match=re.escape("already uses app-ws.preview.test")):
        await svc.create_preview(sandbox, preview_in("two", prefixUrl="app"))
    moved = await svc.create_preview(sandbox, preview_in("two", prefixUrl="app"), force=True)
    route = await store.get_route(moved.hostname)
    assert route is not None and route.preview == "two"


# ── expiry: expired objects are gone to the API, and their names are free ───────────────────
async def test_expired_objects_are_not_found_and_not_listed() -> None:
    svc, _, clock = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in(ttl="1h"))
    await svc.create_preview(sandbox, preview_in())
    clock.advance(hours=1)
    assert await svc.sandboxes("ws") == []
    with pytest.raises(NotFound, match="Sandbox sb not found"):
        await svc.sandbox("ws", "sb")
    with pytest.raises(NotFound, match="Sandbox sb not found"):
        await svc.delete_sandbox("ws", "sb")


@pytest.mark.parametrize("expiring", ["sandbox", "preview"])
async def test_a_create_reaps_the_expired_holder_of_its_name(expiring: str) -> None:
    svc, store, clock = service()
    sandbox = await svc.create_sandbox(
        "ws", sandbox_in(ttl="1h" if expiring == "sandbox" else None)
    )
    old = await svc.create_preview(
        sandbox, preview_in(ttl="1h") if expiring == "preview" else preview_in()
    )
    clock.advance(hours=2)
    if expiring == "sandbox":
        sandbox = await svc.create_sandbox("ws", sandbox_in())
        assert await store.get_route(old.hostname) is None, "the old sandbox's route went too"
    new = await svc.create_preview(sandbox, preview_in())
    assert new.uid != old.uid
    assert [p.uid for p in await svc.previews(sandbox)] == [new.uid]


async def test_a_create_reaps_the_expired_holder_of_its_hostname() -> None:
    svc, store, clock = service()
    first = await svc.create_sandbox("ws", sandbox_in("first"))
    second = await svc.create_sandbox("ws", sandbox_in("second"))
    await svc.create_preview(first, preview_in("old", prefixUrl="app", ttl="1h"))
    clock.advance(hours=2)
    new = await svc.create_preview(second, preview_in("new", prefixUrl="app"))
    route = await store.get_route(new.hostname)
    assert route is not None and (route.sandbox, route.preview) == ("second", "new")
    assert await store.get_preview("ws", "first", "old") is None


async def test_a_live_name_is_a_conflict_or_with_if_not_exists_the_existing_one() -> None:
    svc, _, _ = service()
    created = await svc.create_sandbox("ws", sandbox_in())
    with pytest.raises(Conflict, match="Sandbox sb already exists"):
        await svc.create_sandbox("ws", sandbox_in(host="10.0.0.8"))
    again = await svc.create_sandbox("ws", sandbox_in(host="10.0.0.8"), if_not_exists=True)
    assert again == created


# ── tokens: lifetime, names and retention ───────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("expires_at", "name", "message"),
    [
        ("next tuesday", "", "spec.expiresAt"),
        (START - timedelta(seconds=1), "", "the expiry is in the past"),
        (START + timedelta(hours=1), "Bad_Name", "use lower-case letters"),
    ],
    ids=["unreadable", "past", "bad-name"],
)
async def test_token_rules(expires_at: datetime | str, name: str, message: str) -> None:
    svc, _, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in())
    with pytest.raises(BadRequest, match=message):
        await svc.create_token("ws", "sb", "web", token_in(expires_at, name))


async def test_a_token_gets_a_name_and_a_capped_lifetime() -> None:
    svc, store, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in())
    preview, token = await svc.create_token("ws", "sb", "web", token_in(START + timedelta(days=9)))
    assert token.name.startswith("token-")
    assert token.expires_at == START + timedelta(seconds=3600), "capped at the max lifetime"
    stored = await store.get_preview("ws", "sb", "web")
    assert stored is not None and stored.tokens == {token.name: token} == preview.tokens
    with pytest.raises(Conflict, match=f"Token {token.name} already exists"):
        await svc.create_token("ws", "sb", "web", token_in(START + timedelta(hours=1), token.name))


@pytest.mark.parametrize(
    ("expired_for", "kept"),
    [
        (timedelta(0), True),
        (TOKEN_RETENTION - timedelta(seconds=1), True),
        (TOKEN_RETENTION, False),
    ],
    ids=["just-expired", "within-retention", "past-retention"],
)
async def test_expired_tokens_are_pruned_after_their_retention(
    expired_for: timedelta, kept: bool
) -> None:
    svc, _, clock = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in())
    await svc.create_token("ws", "sb", "web", token_in(START + timedelta(minutes=1), "old"))
    clock.now = START + timedelta(minutes=1) + expired_for
    preview, _ = await svc.create_token("ws", "sb", "web", token_in(clock.now + timedelta(hours=1)))
    assert ("old" in preview.tokens) is kept
    assert [t.name for t in svc.tokens(preview)][-1] != "old"


async def test_a_preview_holds_a_bounded_number_of_tokens() -> None:
    svc, store, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    preview = await svc.create_preview(sandbox, preview_in())
    tokens = {
        f"t{i}": TokenRecord(name=f"t{i}", jti=f"j{i}", expires_at=START + timedelta(hours=1))
        for i in range(MAX_TOKENS_PER_PREVIEW)
    }
    full = preview.model_copy(update={"tokens": tokens})
    assert await store.put_preview(full, create=False, force=False) is PutResult.OK
    with pytest.raises(BadRequest, match=f"at most {MAX_TOKENS_PER_PREVIEW} tokens"):
        await svc.create_token("ws", "sb", "web", token_in(START + timedelta(hours=1)))
    await svc.delete_token("ws", "sb", "web", "t0")
    await svc.create_token("ws", "sb", "web", token_in(START + timedelta(hours=1), "fresh"))
    with pytest.raises(NotFound, match="Token t0 not found"):
        await svc.delete_token("ws", "sb", "web", "t0")


# ── compare-and-swap: a write that lost a race is read again, never lost ────────────────────
class RacingStore(MemoryStore):
    """The real store, with another client's token mint landing just before each of the next
    ``races`` conditional writes (between the service's read and its write)."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races
        self.minted: list[str] = []

    async def put_preview(
        self, preview: Preview, *, create: bool, force: bool, expect_revision: int | None = None
    ) -> PutResult:
        if expect_revision is not None and self.races > 0:
            self.races -= 1
            current = await self.get_preview(preview.workspace, preview.sandbox, preview.name)
            assert current is not None
            name = f"other-{self.races}"
            record = TokenRecord(name=name, jti=name, expires_at=START + timedelta(hours=1))
            tokens = {**current.tokens, name: record}
            await super().put_preview(
                current.model_copy(update={"tokens": tokens}), create=False, force=False
            )
            self.minted.append(name)
        return await super().put_preview(
            preview, create=create, force=force, expect_revision=expect_revision
        )


@pytest.mark.parametrize("races", [1, CAS_ATTEMPTS - 1])
async def test_a_token_minted_meanwhile_is_kept(races: int) -> None:
    store = RacingStore(races=0)
    svc, _, _ = service(store)
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in())
    store.races = races
    await svc.create_token("ws", "sb", "web", token_in(START + timedelta(hours=1), "mine"))
    stored = await store.get_preview("ws", "sb", "web")
    assert stored is not None
    assert set(stored.tokens) == {"mine", *store.minted} and len(store.minted) == races


async def test_a_write_that_always_loses_is_a_conflict() -> None:
    store = RacingStore(races=0)
    svc, _, _ = service(store)
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in())
    store.races = CAS_ATTEMPTS
    with pytest.raises(Conflict, match="being changed concurrently"):
        await svc.create_token("ws", "sb", "web", token_in(START + timedelta(hours=1), "mine"))
    stored = await store.get_preview("ws", "sb", "web")
    assert stored is not None and "mine" not in stored.tokens


async def test_a_change_to_a_deleted_preview_is_not_found() -> None:
    svc, _, _ = service()
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    await svc.create_preview(sandbox, preview_in())
    await svc.delete_preview(sandbox, "web")
    with pytest.raises(NotFound, match="Preview web not found"):
        await svc.replace_preview(sandbox, "web", preview_in())
    with pytest.raises(BadRequest, match="must match the preview name"):
        await svc.replace_preview(sandbox, "web", preview_in("other"))


# ── custom hostnames (issue 11) ─────────────────────────────────────────────────────────────
async def test_a_custom_hostname_held_by_an_expired_preview_is_reaped() -> None:
    svc, store, clock = service()
    domain = Domain(name="acme.dev", workspace="ws", txt_value="v", status="verified")
    assert await store.put_domain(domain, create=True) is PutResult.OK
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    first = await svc.create_preview(
        sandbox, preview_in("one", customDomain="app.acme.dev", ttl="1h")
    )
    assert (await store.get_route("app.acme.dev")) is not None
    with pytest.raises(Conflict):
        await svc.create_preview(sandbox, preview_in("two", customDomain="app.acme.dev"))
    clock.advance(hours=2)
    second = await svc.create_preview(sandbox, preview_in("two", customDomain="app.acme.dev"))
    assert await store.get_preview("ws", "sb", first.name) is None
    route = await store.get_route("app.acme.dev")
    assert route is not None and route.preview == second.name


async def test_a_custom_hostname_outside_the_workspaces_domains_is_not_found() -> None:
    svc, store, _ = service()
    other = Domain(name="acme.dev", workspace="other", txt_value="v", status="verified")
    assert await store.put_domain(other, create=True) is PutResult.OK
    sandbox = await svc.create_sandbox("ws", sandbox_in())
    for host in ("app.acme.dev", "app.example.com"):
        with pytest.raises(NotFound, match=r"spec\.customDomain"):
            await svc.create_preview(sandbox, preview_in(customDomain=host))
    assert await store.list_previews("ws", "sb") == []
