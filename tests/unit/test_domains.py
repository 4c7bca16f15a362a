"""Custom domains' pure parts as tables: names and claims, the lookup keys per label, the
verification state machine with its grace period, the derived routes, and the custom hostname
rules of a preview write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.core import domains
from gateway.core.domains import Lookup
from gateway.core.errors import BadRequest
from gateway.core.records import CustomHost, Domain, Preview, Sandbox
from gateway.ops.dns_check import parse_nameserver
from gateway.store.base import PutResult
from gateway.store.rules import Attached, PreviewWrite, plan_domain_routes, plan_preview_put

NOW = datetime(2030, 1, 1, tzinfo=UTC)
GRACE = timedelta(minutes=10)


def domain(**values: object) -> Domain:
    base: dict[str, object] = {"name": "acme.dev", "workspace": "ws", "txt_value": "v"}
    return Domain.model_validate({**base, **values})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acme.dev", ["acme.dev"]),
        ("app.acme.dev", ["app.acme.dev", "acme.dev"]),
        ("x.y.acme.dev", ["x.y.acme.dev", "y.acme.dev", "acme.dev"]),
        ("dev", []),
    ],
)
def test_ancestors_stop_before_the_top_level_domain(name: str, expected: list[str]) -> None:
    assert domains.ancestors(name) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.b.acme.dev", ["_fallback.a.b.acme.dev", "_fallback.b.acme.dev", "_fallback.acme.dev"]),
        ("acme.dev", ["_fallback.acme.dev"]),
        ("abc.local.preview.localhost", []),  # the preview domain has no fallbacks
        ("preview.localhost", []),
    ],
)
def test_fallback_keys_are_one_per_label_and_never_a_host(host: str, expected: list[str]) -> None:
    keys = domains.fallback_candidates(host, "preview.localhost")
    assert keys == expected
    assert all("_" in key for key in keys)  # no Host header can name one (normalize_host)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("acme.dev", True),
        ("x.y.acme.dev", True),
        ("acme", False),
        ("Acme.dev", False),
        ("acme..dev", False),
        ("-acme.dev", False),
        ("10.0.0.1", False),
        ("preview.localhost", False),
        ("a.preview.localhost", False),
        ("localhost", False),
    ],
)
def test_domain_names(name: str, ok: bool) -> None:
    if ok:
        domains.check_domain_name(name, "preview.localhost")
    else:
        with pytest.raises(BadRequest):
            domains.check_domain_name(name, "preview.localhost")


@pytest.mark.parametrize(
    ("parents", "tree", "conflict"),
    [
        ({}, set(), False),
        ({"acme.dev": "ws"}, {"ws"}, False),
        ({"acme.dev": "other"}, set(), True),
        ({}, {"other"}, True),
        ({}, {"ws", "other"}, True),
    ],
)
def test_one_workspace_per_domain_tree(
    parents: dict[str, str], tree: set[str], conflict: bool
) -> None:
    assert domains.claim_conflict("ws", parents, tree) is conflict


# ── verification ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("found", "status", "error"),
    [
        (Lookup(("v",)), "verified", None),
        (Lookup(("x", "v")), "verified", None),
        (Lookup(()), "failed", "No TXT record"),
        (Lookup(("x",)), "failed", "another value"),
        (Lookup(error="timeout"), "failed", "timeout"),
    ],
)
def test_verify(found: Lookup, status: str, error: str | None) -> None:
    result = domains.verify(domain(), found, NOW)
    assert result.status == status
    if error is None:
        assert result.verification_error is None and result.last_verified_at == NOW
    else:
        assert error in (result.verification_error or "") and result.last_verified_at is None


@pytest.mark.parametrize(
    ("missing_since", "found", "status", "served", "missing_after"),
    [
        (None, Lookup(("v",)), "verified", True, None),  # still there: unchanged
        (None, Lookup(()), "verified", True, NOW),  # gone: the grace starts
        (NOW - GRACE / 2, Lookup(()), "verified", True, NOW - GRACE / 2),  # within the grace
        (NOW - GRACE, Lookup(()), "failed", False, NOW - GRACE),  # grace over: refused
        (NOW - GRACE / 2, Lookup(("v",)), "verified", True, None),  # back in time: forgiven
        (NOW - GRACE, Lookup(error="timeout"), "failed", False, NOW - GRACE),
    ],
)
def test_recheck_keeps_a_vanished_record_served_for_the_grace_period(
    missing_since: datetime | None,
    found: Lookup,
    status: str,
    served: bool,
    missing_after: datetime | None,
) -> None:
    before = domain(status="verified", last_verified_at=NOW - GRACE, missing_since=missing_since)
    after = domains.recheck(before, found, NOW, GRACE)
    assert (after.status, after.served, after.missing_since) == (status, served, missing_after)


def test_recheck_leaves_unverified_domains_alone() -> None:
    pending = domain()
    assert domains.recheck(pending, Lookup(("v",)), NOW, GRACE) is pending


@pytest.mark.parametrize(
    ("entry", "port"),
    [("10.0.0.2", ("10.0.0.2", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
     ("[::1]:5353", ("::1", 5353)), ("::1", ("::1", 53)), (" 10.0.0.2 ", ("10.0.0.2", 53))],
)  # fmt: skip
def test_nameserver_entries(entry: str, port: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == port


# ── derived routes ──────────────────────────────────────────────────────────────────────────
SANDBOX = Sandbox(workspace="ws", name="sb", target_host="10.0.0.7")


def preview(name: str = "web", custom: str | None = "app.acme.dev", **values: object) -> Preview:
    return Preview.model_validate(
        {"workspace": "ws", "sandbox": "sb", "name": name, "port": 3000, "public": True,
         "hostname": f"{name}.local.preview.localhost", "custom_domain": custom,
         "domain": "acme.dev" if custom else None, **values}
    )  # fmt: skip


def entry(name: str = "web", of: str = "acme.dev") -> CustomHost:
    return CustomHost(domain=of, workspace="ws", sandbox="sb", preview=name)


@pytest.mark.parametrize(
    ("status", "row", "routed", "dropped"),
    [
        ("verified", Attached("app.acme.dev", entry(), preview(), SANDBOX), True, False),
        ("pending", Attached("app.acme.dev", entry(), preview(), SANDBOX), False, False),
        ("failed", Attached("app.acme.dev", entry(), preview(), SANDBOX), False, False),
        ("verified", Attached("app.acme.dev", entry(), None, None), False, True),
        ("verified", Attached("app.acme.dev", None, None, None), False, True),
        # The preview moved to another hostname, or its entry to a nested domain.
        ("verified", Attached("app.acme.dev", entry(), preview(custom="b.acme.dev"), SANDBOX),
         False, True),
        ("verified", Attached("app.acme.dev", entry(of="x.acme.dev"), preview(), SANDBOX),
         False, True),
    ],
)  # fmt: skip
def test_only_a_verified_domain_routes_its_live_previews(
    status: str, row: Attached, routed: bool, dropped: bool
) -> None:
    plan = plan_domain_routes("acme.dev", domain(status=status), [row], (None, None))
    assert ("app.acme.dev" in plan.routes) is routed
    assert ("app.acme.dev" in plan.removed) is not routed
    assert ("app.acme.dev" in plan.dropped) is dropped
    if routed:
        route = plan.routes["app.acme.dev"]
        assert (route.hostname, route.target_host, route.port) == ("app.acme.dev", "10.0.0.7", 3000)


def test_the_fallback_route_carries_the_fallback_headers() -> None:
    target = preview("fb", custom=None, request_headers={"X-From": "gw"})
    plan = plan_domain_routes("acme.dev", domain(status="verified"), [], (target, SANDBOX))
    route = plan.routes["_fallback.acme.dev"]
    assert route.request_headers == {
        "X-From": "gw",
        "X-Blaxel-Fallback": "true",
        "X-Blaxel-Fallback-Preview": "sb/fb",
        "X-Blaxel-Fallback-Domain": "acme.dev",
    }
    unserved = plan_domain_routes("acme.dev", domain(), [], (target, SANDBOX))
    assert unserved.routes == {} and "_fallback.acme.dev" in unserved.removed


def test_a_deleted_domain_removes_every_route_and_forgets_its_entries() -> None:
    nested = preview("b", "b.acme.dev")
    rows = [
        Attached("app.acme.dev", entry(), preview(), SANDBOX),
        Attached("b.acme.dev", entry("b", of="b.acme.dev"), nested, SANDBOX),
    ]
    plan = plan_domain_routes("acme.dev", None, rows, (None, None))
    assert plan.routes == {}
    assert set(plan.removed) == {"app.acme.dev", "b.acme.dev", "_fallback.acme.dev"}
    assert plan.forgotten == ["app.acme.dev"]  # b's entry belongs to its own domain


# ── a preview write and its custom hostname ─────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("holder", "force", "result"),
    [
        (None, False, "ok"),
        (entry(), False, "ok"),  # its own
        (entry("other"), False, PutResult.HOST_TAKEN),
        (entry("other"), True, PutResult.HOST_TAKEN),  # the service deletes it, then retries
    ],
)
def test_a_custom_hostname_has_one_holder(
    holder: CustomHost | None, force: bool, result: object
) -> None:
    write = plan_preview_put(
        preview(), sandbox=SANDBOX, old=None, holder=None, create=True, force=force,
        expect_revision=None, custom_holder=holder, domain=domain(),
    )  # fmt: skip
    if result == "ok":
        assert isinstance(write, PreviewWrite) and write.custom == entry()
    else:
        assert write is result


def test_moving_a_preview_off_its_custom_hostname_releases_it() -> None:
    old = preview()
    write = plan_preview_put(
        preview(custom="b.acme.dev"), sandbox=SANDBOX, old=old, holder=None, create=False,
        force=False, expect_revision=None,
    )  # fmt: skip
    assert isinstance(write, PreviewWrite)
    assert write.old_custom == "app.acme.dev" and "app.acme.dev" in write.touched
    same = plan_preview_put(preview(), sandbox=SANDBOX, old=old, holder=None, create=False,
                            force=False, expect_revision=None)  # fmt: skip
    assert isinstance(same, PreviewWrite) and same.old_custom is None


@pytest.mark.parametrize(
    ("attached_to", "routed"),
    [
        (domain(status="verified"), True),
        (domain(status="pending"), False),
        (domain(status="failed"), False),
        (domain(status="verified", workspace="other"), False),
        (domain(status="verified", name="b.acme.dev"), False),  # not the entry's domain
        (None, False),
    ],
)
def test_a_preview_write_routes_its_custom_hostname_only_on_a_served_domain(
    attached_to: Domain | None, routed: bool
) -> None:
    """And holds it only while the domain is still the workspace's (deleted: nothing)."""
    write = plan_preview_put(
        preview(), sandbox=SANDBOX, old=None, holder=None, create=True, force=False,
        expect_revision=None, domain=attached_to,
    )  # fmt: skip
    assert isinstance(write, PreviewWrite)
    if routed:
        assert write.custom_route is not None
        assert write.custom_route.hostname == "app.acme.dev"
        assert write.custom_route.preview_uid == write.route.preview_uid
        assert "app.acme.dev" in write.touched
    else:
        assert write.custom_route is None and "app.acme.dev" not in write.touched
    owned = attached_to is not None and (attached_to.name, attached_to.workspace) == (
        "acme.dev",
        "ws",
    )
    assert (write.custom is not None) is owned
