"""The comparison benchmark's own logic (bench/compare*.py, bench/ws_*.py, bench/profile.py):
frame codec of the echo upstream, the profile's aggregation, the ratio table, and one short
echo run over real loopback sockets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from bench import compare_report, nginx, profile, ws_echo, ws_load


def test_accept_key_is_rfc_6455s_example() -> None:
    assert ws_echo.accept_key(b" dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("payload_size", "header_size"),
    [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)],
)
def test_frame_round_trips_through_the_parser(payload_size: int, header_size: int) -> None:
    payload = os.urandom(payload_size)
    data = ws_echo.frame(0x82, payload)
    assert len(data) == header_size + payload_size
    assert ws_echo.parse_frame(bytearray(data)) == (0x82, payload, len(data))
    assert ws_echo.parse_frame(bytearray(data[:-1] if payload else data[:1])) is None


def test_masked_client_frame_is_unmasked() -> None:
    parsed = ws_echo.parse_frame(bytearray(ws_load.FRAME + b"next"))
    assert parsed == (0x81, ws_load.PAYLOAD, len(ws_load.FRAME))


def test_unmask_is_its_own_inverse() -> None:
    data, mask = os.urandom(1001), b"\x9a\x01\xff\x10"
    assert ws_echo.unmask(ws_echo.unmask(data, mask), mask) == data
    assert ws_echo.unmask(b"\x00\x00\x00\x00\x00", mask) == mask + mask[:1]


def test_oversized_length_is_refused() -> None:
    with pytest.raises(ValueError, match="frame of"):
        ws_echo.parse_frame(bytearray(b"\x82\x7f" + (1 << 40).to_bytes(8, "big")))


def test_profile_counts_own_and_total_time_below_the_event_loop() -> None:
    raw = "\n".join(
        [
            "process 1:main;<module> (m.py:1);Runner.run (asyncio/runners.py:86) 5",
            "process 1:main;<module> (m.py:1);Runner.run (asyncio/runners.py:86);"
            "relay (r.py:10);write (w.py:3) 10",
            "process 1:main;<module> (m.py:1);Runner.run (asyncio/runners.py:86);relay (r.py:10) 5",
            "not a stack line",
        ]
    )
    top = profile.top_entries(raw)
    assert top["samples"] == 20
    assert top["own"][0] == ("write (w.py:3)", 50.0)
    assert ("Runner.run (asyncio/runners.py:86)", 25.0) in top["own"]
    # Frames up to the event loop are on every stack: left out of the totals.
    assert top["total"] == [("relay (r.py:10)", 75.0), ("write (w.py:3)", 50.0)]


def _results() -> dict[str, Any]:
    return {
        "small": {
            "nginx": {"rps": 50_000.0, "cpu_us_per_req": 14.0, "p99_ms": 2.0},
            "gateway-x": {"rps": 40_000.0, "cpu_us_per_req": 21.0, "p99_ms": 5.0},
        },
        "private_header": {"gateway-x": {"rps": 30_000.0}},
        "private_cookie": {"gateway-x": {"error": "RuntimeError: boom"}},
        "ws_idle": {"nginx": {"kib_per_socket": 17.0}, "gateway-x": {"kib_per_socket": 5.5}},
    }


def test_figures_are_ratios_to_nginx() -> None:
    f = compare_report.figures(_results(), "gateway-x")
    assert f["small"] == (0.8, "0.80 (40.0k)")
    assert f["cpu"] == (1.5, "21.0 (1.5\N{MULTIPLICATION SIGN})")
    assert f["p99"][0] == 2.5
    assert f["private_header"] == (0.6, "0.60 (30.0k)")  # against nginx's public rate
    assert f["private_cookie"] == (None, "error")
    assert f["large"] == (None, "-")
    assert f["ws_idle"] == (5.5, "5.5")


def test_goal_lines_sort_met_missed_and_unmeasured() -> None:
    (line,) = compare_report.goal_lines(_results(), "gateway-x")
    assert "met 4 of 11" in line
    assert "Missed: p99" in line and "(2.50)" in line
    assert "private_cookie ≥ 0.6" in line.split("Not measured:")[1]


def test_markdown_names_the_transfer_size_and_every_target() -> None:
    run = {
        "started_utc": "now",
        "machine": "m",
        "settings": "s",
        "wall_s": 1.0,
        "load": {"others_pct": 0.0},
        "targets": ["nginx", "gateway-x"],
        "transfer_mib": 64,
        "results": _results(),
    }
    text = compare_report.markdown(run)
    assert "64 MiB download RSS growth" in text
    assert "| gateway-x | 0.80 (40.0k) |" in text
    assert "Failed: private_cookie/gateway-x: RuntimeError: boom" in text


def test_nginx_proxy_config_routes_each_location() -> None:
    conf = nginx.proxy_config(
        Path("/p"), 8080, {"a": (1, ""), "b": (2, "")}, {"/": "a", "/ws": "b"}
    )
    assert "listen 127.0.0.1:8080" in conf and "server 127.0.0.1:2;" in conf
    assert "location /ws { proxy_pass http://b; }" in conf


async def test_echo_load_through_the_echo_upstream_on_loopback() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ws_echo.Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await ws_load.echo_throughput(
            port, f"127.0.0.1:{port}", connections=2, window=4, duration_s=0.3, cpu_pid=os.getpid()
        )
    assert result["messages"] > 0 and result["msg_per_s"] > 0
    assert result["connections"] == 2 and "cpu_us_per_msg" in result
