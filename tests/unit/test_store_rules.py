"""The write rules both stores share (``store.rules``), as a table: what a put-preview may do
given what the store holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.records import Preview, Route, Sandbox
from gateway.store.base import PutResult
from gateway.store.rules import PreviewWrite, deletable, plan_preview_put, plan_sandbox_put

SANDBOX = Sandbox(workspace="ws", name="sb", target_host="10.0.0.7")
OLD = Preview(workspace="ws", sandbox="sb", name="web", port=1, public=True, hostname="a.test")
OLD = OLD.model_copy(update={"revision": 3})
NEW = OLD.model_copy(update={"port": 2, "hostname": "b.test"})
OTHER = Preview(workspace="ws", sandbox="sb", name="api", port=1, public=True, hostname="b.test")
FOREIGN = OTHER.model_copy(update={"workspace": "elsewhere"})
SB_FOREIGN = SANDBOX.model_copy(update={"workspace": "elsewhere"})


def route(preview: Preview, sandbox: Sandbox = SANDBOX) -> Route:
    return Route.build(sandbox, preview)


@pytest.mark.parametrize(
    ("sandbox", "old", "holder", "create", "force", "expect", "result"),
    [
        (None, None, None, True, False, None, PutResult.NO_SANDBOX),
        (SANDBOX, OLD, None, True, False, None, PutResult.NAME_EXISTS),
        (SANDBOX, OLD, None, False, False, 2, PutResult.CHANGED),
        (SANDBOX, None, None, False, False, 3, PutResult.CHANGED),
        (SANDBOX, OLD, route(OTHER), False, False, 3, PutResult.HOST_TAKEN),
        (SANDBOX, OLD, route(FOREIGN, SB_FOREIGN), False, True, 3, PutResult.HOST_TAKEN),
    ],
    ids=["no-sandbox", "name-exists", "stale-revision", "vanished", "host-taken", "other-ws"],
)
def test_refusals(
    sandbox: Sandbox | None,
    old: Preview | None,
    holder: Route | None,
    create: bool,
    force: bool,
    expect: int | None,
    result: PutResult,
) -> None:
    planned = plan_preview_put(
        NEW,
        sandbox=sandbox,
        old=old,
        holder=holder,
        create=create,
        force=force,
        expect_revision=expect,
    )
    assert planned is result


@pytest.mark.parametrize(
    ("old", "holder", "force", "revision", "evict", "touched"),
    [
        (None, None, False, 0, None, ["b.test"]),
        (OLD, None, False, 4, None, ["b.test", "a.test"]),
        (OLD, route(NEW), False, 4, None, ["b.test", "a.test"]),
        (OLD, route(OTHER), True, 4, ("ws", "sb", "api"), ["b.test", "a.test"]),
        (OLD.model_copy(update={"hostname": "b.test"}), None, False, 4, None, ["b.test"]),
    ],
    ids=["new", "moved", "own-route", "forced-takeover", "same-hostname"],
)
def test_writes(
    old: Preview | None,
    holder: Route | None,
    force: bool,
    revision: int,
    evict: tuple[str, str, str] | None,
    touched: list[str],
) -> None:
    planned = plan_preview_put(
        NEW,
        sandbox=SANDBOX,
        old=old,
        holder=holder,
        create=False,
        force=force,
        expect_revision=None,
    )
    assert isinstance(planned, PreviewWrite)
    assert planned.stored.revision == revision
    assert planned.route == Route.build(SANDBOX, planned.stored)
    assert planned.evict == evict
    assert planned.touched == touched


@pytest.mark.parametrize(
    ("exists", "create", "must_exist", "result"),
    [
        (True, True, False, PutResult.NAME_EXISTS),
        (False, False, True, PutResult.NO_SANDBOX),
        (False, True, False, PutResult.OK),
        (True, False, True, PutResult.OK),
        (False, False, False, PutResult.OK),
    ],
)
def test_sandbox_puts(exists: bool, create: bool, must_exist: bool, result: PutResult) -> None:
    assert plan_sandbox_put(exists=exists, create=create, must_exist=must_exist) is result


NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expires_at", "only_expired_at", "result"),
    [
        (None, None, True),
        (None, NOW, False),
        (NOW - timedelta(seconds=1), NOW, True),
        (NOW + timedelta(seconds=1), NOW, False),
    ],
    ids=["unconditional", "never-expires", "expired", "renewed"],
)
def test_conditional_deletes(
    expires_at: datetime | None, only_expired_at: datetime | None, result: bool
) -> None:
    assert (
        deletable(SANDBOX.model_copy(update={"expires_at": expires_at}), only_expired_at) is result
    )
    assert deletable(None, only_expired_at) is False
