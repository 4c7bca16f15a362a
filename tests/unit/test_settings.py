"""Settings from ``GATEWAY_*`` environment variables: comma lists, CIDRs, secrets kept out of
``repr``, unknown fields and invalid values refused at start."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from gateway.ops.settings import DEFAULT_ALLOWED_TARGETS, Settings

KEY = "workspace-key-0123456789"
TOKEN_SECRET = "s" * 40


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the variables a test sets are seen (CI or a developer may export GATEWAY_*)."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    yield


def from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"GATEWAY_{name.upper()}", value)
    return Settings()


def test_defaults() -> None:
    settings = Settings()
    assert settings.redis_url is None
    assert settings.allowed_targets == [
        ipaddress.ip_network(n) for n in DEFAULT_ALLOWED_TARGETS.split(",")
    ]
    assert not any(
        ipaddress.ip_address("127.0.0.1") in n or ipaddress.ip_address("169.254.169.254") in n
        for n in settings.allowed_targets
    )
    assert settings.trusted_proxies == []
    assert settings.blocked_ports() == frozenset({80})
    assert settings.effective_public_port == settings.edge_port


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"edge_port": "9000"}, "edge_port", 9000),
        ({"redis_timeout_s": "0.25"}, "redis_timeout_s", 0.25),
        ({"access_log": "false"}, "access_log", False),
        ({"log_level": "debug"}, "log_level", "debug"),
        ({"preview_domain": "Preview.Example.COM."}, "preview_domain", "preview.example.com"),
        ({"region": ""}, "region", ""),
        ({"reserved_ports": "3000, 8443,"}, "reserved_ports", [3000, 8443]),
        ({"reserved_ports": ""}, "reserved_ports", []),
        (
            {"allowed_targets": "10.0.0.0/8, 192.168.1.7/24,fd00::/8"},
            "allowed_targets",
            [
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("192.168.1.0/24"),
                ipaddress.ip_network("fd00::/8"),
            ],
        ),
        (
            {"trusted_proxies": "10.1.2.3"},
            "trusted_proxies",
            [ipaddress.ip_network("10.1.2.3/32")],
        ),
        (
            {"api_keys": f"default:{KEY}, other:{KEY}x"},
            "api_keys",
            [f"default:{KEY}", f"other:{KEY}x"],
        ),
        (
            {"ws_allowed_origins": "https://ide.example.com, https://b.example"},
            "ws_allowed_origins",
            ["https://ide.example.com", "https://b.example"],
        ),
        ({"public_port": "443"}, "public_port", 443),
        ({"cookie_samesite": "none"}, "cookie_samesite", "none"),
    ],
    ids=[
        "int",
        "float",
        "bool",
        "literal",
        "domain-normalised",
        "empty-region",
        "int-list",
        "empty-list",
        "cidrs-host-bits-dropped",
        "single-address",
        "api-keys",
        "ws-origins",
        "public-port",
        "samesite",
    ],
)
def test_env_values(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, expected: object
) -> None:
    assert getattr(from_env(monkeypatch, **env), field) == expected


def test_token_keys_are_a_comma_list_of_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, token_keys=f"new:{TOKEN_SECRET}, old:{TOKEN_SECRET}x")
    assert [k.get_secret_value() for k in settings.token_keys] == [
        f"new:{TOKEN_SECRET}",
        f"old:{TOKEN_SECRET}x",
    ]
    assert TOKEN_SECRET not in repr(settings) and TOKEN_SECRET not in str(settings)


def test_redis_url_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, redis_url="redis://:hunter2-password@10.0.0.5:6379/0")
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value().endswith("@10.0.0.5:6379/0")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_reserved_ports_add_to_80(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(monkeypatch, reserved_ports="443,3001").blocked_ports() == {80, 443, 3001}


def test_public_port_overrides_the_edge_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(monkeypatch, edge_port="8080", public_port="443").effective_public_port == 443


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(edge_prot=8080)  # type: ignore[call-arg]


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.edge_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "env",
    [
        {"edge_port": "70000"},
        {"edge_port": "-1"},
        {"edge_port": "80a"},
        {"edge_port": "8081", "api_port": "8081"},
        {"public_port": "0"},
        {"redis_timeout_s": "0"},
        {"header_read_timeout_s": "0"},
        {"body_idle_timeout_s": "-1"},
        {"max_body_bytes": "-1"},
        {"upstream_max_connections_per_target": "0"},
        {"cache_max_entries": "0"},
        {"token_max_lifetime_s": "10"},
        {"ws_max_message_bytes": "10"},
        {"log_level": "verbose"},
        {"cookie_samesite": "strict"},
        {"public_scheme": "ftp"},
        {"access_log": "maybe"},
        {"preview_domain": "bad domain"},
        {"preview_domain": ""},
        {"allowed_targets": "not-a-cidr"},
        {"allowed_targets": "10.0.0.0/33"},
        {"trusted_proxies": "10.0.0.0/8,nope"},
        {"reserved_ports": "80,x"},
        {"api_keys": "nokey"},
        {"api_keys": f":{KEY}"},
        {"api_keys": "default:short"},
    ],
    ids=[
        "port-too-big",
        "port-negative",
        "port-not-a-number",
        "same-ports",
        "public-port-zero",
        "redis-timeout-zero",
        "header-timeout-zero",
        "body-timeout-negative",
        "body-limit-negative",
        "per-target-zero",
        "cache-zero",
        "token-lifetime-short",
        "ws-message-tiny",
        "log-level",
        "samesite",
        "scheme",
        "bool",
        "domain-space",
        "domain-empty",
        "cidr-garbage",
        "cidr-prefix",
        "proxy-garbage",
        "port-list-garbage",
        "key-without-workspace-separator",
        "key-without-workspace",
        "key-too-short",
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        from_env(monkeypatch, **env)


@pytest.mark.parametrize(
    "env",
    [
        {"tls_cert": "/c.pem"},
        {"tls_key": "/c.key"},
        {"tls_cert_dir": "/certs", "tls_port": "8080", "edge_port": "8080"},
        {"tls_cert_dir": "/certs", "tls_port": "8081"},
        {"acme_http_upstream": "127.0.0.1"},
        {"acme_http_upstream": ":80"},
        {"acme_http_upstream": "host:99999"},
        {"tls_reload_interval_s": "0"},
    ],
    ids=[
        "cert-without-key",
        "key-without-cert",
        "tls-is-edge",
        "tls-is-api",
        "acme-no-port",
        "acme-no-host",
        "acme-port",
        "reload-zero",
    ],
)
def test_invalid_tls_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    with pytest.raises((ValidationError, ValueError)):
        from_env(monkeypatch, **env)


def test_with_tls_urls_are_https_on_the_tls_port(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Settings()
    assert (plain.tls_enabled, plain.effective_public_scheme) == (False, "http")
    tls = from_env(monkeypatch, tls_cert_dir="/certs", tls_port="8443")
    assert tls.tls_enabled
    assert (tls.effective_public_scheme, tls.effective_public_port) == ("https", 8443)
    behind = from_env(monkeypatch, public_scheme="http", public_port="80")
    assert (behind.effective_public_scheme, behind.effective_public_port) == ("http", 80)
    assert from_env(monkeypatch, acme_http_upstream="[::1]:8888").acme_http_upstream == "[::1]:8888"


@pytest.mark.parametrize(
    ("env", "workers"),
    [
        ({}, 1),
        ({"workers": "3", "redis_url": "redis://r:6379/0"}, 3),
        ({"workers": "auto", "redis_url": "redis://r:6379/0"}, len(os.sched_getaffinity(0))),
        ({"workers": "AUTO ", "redis_url": "redis://r:6379/0"}, len(os.sched_getaffinity(0))),
    ],
)
def test_workers(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], workers: int) -> None:
    assert from_env(monkeypatch, **env).workers == workers


@pytest.mark.parametrize(
    "env",
    [
        {"workers": "0", "redis_url": "redis://r:6379/0"},
        {"workers": "many", "redis_url": "redis://r:6379/0"},
        # Every worker would hold its own in-memory table.
        {"workers": "2"},
        # Port 0 would give each worker a different ephemeral port.
        {"workers": "2", "redis_url": "redis://r:6379/0", "edge_port": "0"},
        {"workers": "2", "redis_url": "redis://r:6379/0", "api_port": "0"},
    ],
)
def test_workers_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        from_env(monkeypatch, **env)
