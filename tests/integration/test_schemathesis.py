"""Schemathesis fuzzes the control API from its own ``GET /v0/openapi.json``, against the real
gateway process with Redis: no request may cause a 500, every answer must match the documented
status codes and schemas, and every error must be ``{"error", "code", "message"}``.

Bounded and repeatable: a fixed seed, deterministic generation, a few examples per operation.
Every request goes to 127.0.0.1 (the base URL is passed explicitly and checked per case).
"""

from __future__ import annotations

import copy
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig

from gateway.control import openapi
from tests.helpers.api import ERROR_KEYS
from tests.helpers.gateway import TEST_KEY
from tests.helpers.ports import unused_ports
from tests.helpers.process import GatewayProcess, spawn_gateway
from tests.helpers.redis_server import RedisServer

SEED = 20261130
CONFIG = {
    "seed": SEED,
    "generation": {"max-examples": 30, "deterministic": True, "database": "none"},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    # Every check, positive_data_acceptance included. Valid by the schema is not always
    # acceptable: a reserved port, a past expiry, a target outside allowed_targets are 400s the
    # schema cannot express, so 400 joins that check's default accepted statuses.
    "checks": {
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
        }
    },
}
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


@pytest.fixture(scope="module")
def api_process(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[GatewayProcess]:
    gp = spawn_gateway(
        tmp_path_factory.mktemp("schemathesis"),
        env={
            "GATEWAY_REDIS_URL": redis_server.url,
            "GATEWAY_REDIS_PREFIX": f"st{secrets.token_hex(4)}:",
            "GATEWAY_ACCESS_LOG": "false",
            # A verify must never leave loopback: a port where no DNS server listens.
            "GATEWAY_DNS_NAMESERVERS": f"127.0.0.1:{unused_ports(1)[0]}",
            "GATEWAY_DNS_TIMEOUT_S": "0.2",
        },
    )
    try:
        yield gp
    finally:
        try:
            gp.terminate(timeout=5)
        except subprocess.TimeoutExpired:
            gp.kill()
        # The server's own log must not show a traceback either.
        assert "Traceback" not in gp.output(), gp.output()[-4000:]


@pytest.fixture(scope="module")
def base_url(api_process: GatewayProcess) -> str:
    return f"http://127.0.0.1:{api_process.api_port}"


# The document the gateway serves at /v0/openapi.json (test_served_document_is_this_one checks
# that they are the same). It is loaded at import, not from a fixture: schemathesis's
# fixture-based loader (`from_fixture`) fails on pytest 9.2, which dropped `Node._nodeid`.
schema = schemathesis.openapi.from_dict(
    openapi.document(), config=SchemathesisConfig.from_dict(CONFIG)
)


def _seed(session: requests.Session, base_url: str) -> None:
    """Keep `sb` / `web` / `tok` and the domain `acme.test` alive (the documented path
    examples), so that cases reach real objects and not only 404s; a fuzzed DELETE may have
    removed them."""
    domains = base_url + "/v0/customdomains"
    r = session.post(domains, json={"metadata": {"name": "acme.test"}}, headers=AUTH, timeout=10)
    assert r.status_code in (200, 409), r.text
    api = base_url + "/v0/sandboxes"
    r = session.get(api + "/sb/previews/web/tokens", headers=AUTH, timeout=10)
    if r.status_code == 200 and any(t["metadata"]["name"] == "tok" for t in r.json()):
        return
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for url, body in (
        (api, {"metadata": {"name": "sb"}, "spec": {"target": {"host": "127.0.0.1"}}}),
        (api + "/sb/previews", {"metadata": {"name": "web"}, "spec": {"port": 3000}}),
        (
            api + "/sb/previews/web/tokens",
            {"metadata": {"name": "tok"}, "spec": {"expiresAt": expires}},
        ),
    ):
        r = session.post(url, json=body, headers=AUTH, timeout=10)
        assert r.status_code in (200, 409), r.text


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@schema.parametrize()
def test_control_api_conforms_to_its_openapi(
    case: Any, base_url: str, http: requests.Session
) -> None:
    _seed(http, base_url)
    response = case.call_and_validate(
        base_url=base_url,
        session=http,
        headers=AUTH,
        timeout=10,
    )
    assert urlsplit(response.request.url).hostname == "127.0.0.1"
    assert response.status_code < 500, response.text
    assert response.headers["content-type"][0].startswith("application/json")
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
        assert body["code"] == response.status_code and body["error"], body


# Stateful: chains of calls along the links schemathesis infers (create a sandbox, then its
# previews, then read, replace and delete them), so use_after_free and
# ensure_resource_availability run too: a deleted object must be gone, a created one there.
STATEFUL = schemathesis.openapi.from_dict(
    # A copy: inferring links writes them into the document it was given, which is the cached
    # one test_served_document_is_this_one compares with what the gateway serves.
    copy.deepcopy(openapi.document()),
    config=SchemathesisConfig.from_dict(
        CONFIG | {"phases": {"stateful": {"enabled": True}}, "generation": {"database": "none"}}
    ),
)
Workflow = STATEFUL.as_state_machine()


def test_control_api_workflows_conform(base_url: str, http: requests.Session) -> None:
    statuses: list[int] = []

    class Local(Workflow):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "session": http, "headers": AUTH, "timeout": 10}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            assert urlsplit(response.request.url).hostname == "127.0.0.1"
            assert response.status_code < 500, response.text
            statuses.append(response.status_code)

    Local.run(
        settings=hypothesis.settings(
            max_examples=25,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
    print(f"stateful: {len(statuses)} calls, {sum(s < 300 for s in statuses)} answered 2xx")
    # The chains reached real objects, not only validation errors.
    assert len(statuses) > 25 and sum(s < 300 for s in statuses) > 10


def test_served_document_is_this_one(base_url: str, http: requests.Session) -> None:
    r = http.get(base_url + openapi.OPENAPI_PATH, timeout=10)  # no key needed
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == openapi.document()
