"""Fixtures of the edge tests: the probe app, and a public preview of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers.gateway import Gateway
from tests.helpers.probes import Probe, probe_upstream


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    async with probe_upstream() as p:
        yield p


@pytest.fixture
async def site(gateway: Gateway, probe: Probe) -> str:
    """A public preview of the probe app on the default gateway; its hostname."""
    return await gateway.public_preview(probe.port)
