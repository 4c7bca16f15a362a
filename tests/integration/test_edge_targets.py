"""The edge over real loopback sockets: routes and names outside the allowed targets are
never dialled (threat model R). See
``tests/helpers/edge_client.py`` for how these tests observe the gateway."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.core.netpolicy import address_allowed
from gateway.core.records import Sandbox
from tests.helpers.edge_client import assert_gateway_error, get
from tests.helpers.gateway import host_of, run_gateway
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
