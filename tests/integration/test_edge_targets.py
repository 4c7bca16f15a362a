"""The edge over real loopback sockets: routes and names outside the allowed targets are
never dialled (threat model R). See
``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.core.netpolicy import address_allowed
from gateway.core.records import Sandbox
from tests.helpers.edge_client import assert_gateway_error, get
from tests.helpers.gateway import host_of, make_settings, run_gateway
from tests.helpers.probes import counting_listener


# ── targets (R) ─────────────────────────────────────────────────────────────────────────────
async def test_route_outside_allowed_targets_is_never_dialled() -> None:
    """A route whose sandbox address is outside allowed_targets (written to the store directly,
    as a hand-edited or stale record would be): 502 target_not_allowed, and not one connection
    reaches the address."""
    async with (
        counting_listener("127.0.0.2") as listener,
        run_gateway(allowed_targets="127.0.0.1/32") as gw,
    ):
        assert gw.running is not None
        sandbox = Sandbox(workspace="default", name="sb", target_host="127.0.0.2")
        await gw.running.store.put_sandbox(sandbox, create=True)
        host = host_of(await gw.preview(listener.port))
        response, body = await get(gw, host)
        assert response.status == 502
        assert_gateway_error(response, "target_not_allowed")
        assert b"127.0.0.2" not in body

        status, error = await gw.call(
            "POST",
            "/sandboxes",
            json={"metadata": {"name": "sb2"}, "spec": {"target": {"host": "127.0.0.2"}}},
        )
        assert status == 400, error
    assert listener.accepted == 0


async def test_name_resolving_outside_allowed_targets_is_never_dialled() -> None:
    async with (
        counting_listener("127.0.0.1") as listener,
        run_gateway(allowed_targets="127.0.0.2/32") as gw,
    ):
        await gw.sandbox(host="localhost")  # resolves to 127.0.0.1 and ::1, both outside
        host = host_of(await gw.preview(listener.port))
        response, _ = await get(gw, host)
        assert response.status == 502
        assert_gateway_error(response, "target_not_allowed")
    assert listener.accepted == 0


NETS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("fd00::7", True),
        ("::ffff:10.1.2.3", True),
        ("11.0.0.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("224.0.0.1", False),
        ("2130706433", False),
        ("0177.0.0.1", False),
        ("127.1", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_address_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address, NETS) is allowed


# ── deny_target_nets (SSRF): denied wins over allowed, at registration and at dial ──────────
EVERYTHING = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
DEFAULT_DENIED = make_settings().deny_target_nets


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("169.254.169.254", False),
        ("169.254.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:a9fe:a9fe", False),  # the same, in hex
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("febf::1", False),
        ("169.253.255.255", True),
        ("169.255.0.0", True),
        ("10.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("fec0::1", True),
    ],
)
def test_denied_nets_win_over_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address, EVERYTHING, DEFAULT_DENIED) is allowed


@pytest.mark.parametrize("address", ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"])
async def test_denied_literal_is_refused_at_registration(address: str) -> None:
    async with run_gateway(allowed_targets="0.0.0.0/0,::/0") as gw:
        status, error = await gw.call(
            "POST",
            "/sandboxes",
            json={"metadata": {"name": "meta"}, "spec": {"target": {"host": address}}},
        )
        assert status == 400, error
        assert "deny_target_nets" in str(error)


async def test_name_resolving_into_denied_nets_is_never_dialled() -> None:
    """`localhost` resolves to 127.0.0.1 and ::1, both allowed here and both denied: the name
    registers (DNS names are judged at dial time), but is never dialled."""
    async with (
        counting_listener("127.0.0.1") as listener,
        run_gateway(
            allowed_targets="127.0.0.0/8,::1/128", deny_target_nets="127.0.0.0/8,::1/128"
        ) as gw,
    ):
        await gw.sandbox(host="localhost")
        host = host_of(await gw.preview(listener.port))
        response, _ = await get(gw, host)
        assert response.status == 502
        assert_gateway_error(response, "target_not_allowed")
        # A literal in the same nets is refused at registration already.
        status, _ = await gw.call(
            "POST",
            "/sandboxes",
            json={"metadata": {"name": "lit"}, "spec": {"target": {"host": "127.0.0.1"}}},
        )
        assert status == 400
    assert listener.accepted == 0
