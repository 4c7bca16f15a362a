"""Machine facts and the Markdown rendering of a result set."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import nginx, wrk
from bench.procs import REPO

TARGETS = ("direct", "nginx", "gateway")


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False, timeout=30
    )
    return out.stdout.strip()


def gateway_source(ref: str | None, src: Path | None = None) -> str:
    """Which gateway code was measured: a commit, or the work tree and whether it was dirty."""
    if src:
        return f"the gateway/ package in {src} (HEAD is {_git('rev-parse', '--short', 'HEAD')})"
    if ref:
        return f"{_git('rev-parse', '--short', ref) or ref} (snapshot of {ref})"
    dirty = _git("status", "--porcelain", "--", "gateway")
    head = _git("rev-parse", "--short", "HEAD") or "?"
    return f"work tree at {head}" + (" with uncommitted changes in gateway/" if dirty else "")


def machine_facts(ref: str | None = None, src: Path | None = None) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    nginx_bin, wrk_bin = nginx.binary(), wrk.binary()
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "uvloop": metadata.version("uvloop"),
        "nginx": nginx.version(nginx_bin) if nginx_bin else "missing",
        "wrk": wrk.version(wrk_bin) if wrk_bin else "missing",
        "gateway_source": gateway_source(ref, src),
        "loadavg_start": os.getloadavg(),
    }


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}"


def _ratios(res: dict[str, Any], key: str) -> str:
    gateway = _get(res, "gateway", key)
    return (
        f"gateway/direct {_ratio(gateway, _get(res, 'direct', key))}, "
        f"gateway/nginx {_ratio(gateway, _get(res, 'nginx', key))}"
    )


def _spread(r: dict[str, Any] | None, key: str, fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` when the figure was measured over several rounds."""
    text = _cell(r, key, fmt)
    if r and f"{key}_min" in r:
        text += f" ({fmt.format(r[key + '_min'])}-{fmt.format(r[key + '_max'])})"
    return text


def _cell(result: dict[str, Any] | None, key: str, fmt: str = "{:,.1f}") -> str:
    if result is None:
        return "-"
    if "error" in result:
        return "error"
    value = result.get(key)
    return "-" if value is None else fmt.format(value)


def _get(results: dict[str, Any], target: str, key: str) -> float | None:
    r = results.get(target)
    if not isinstance(r, dict) or "error" in r:
        return None
    value = r.get(key)
    return float(value) if value is not None else None


def _http_table(title: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| target | req/s (range) | p50 ms | p90 ms | p99 ms | CPU µs/req (process) "
        "| errors + non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in TARGETS:
        r = res.get(t)
        bad = "-" if not r or "error" in r else str(int(r["errors"] + r["non_2xx"]))
        process = f" ({r['process']})" if r and "process" in r else ""
        lines.append(
            f"| {t} | {_spread(r, 'rps')} | {_cell(r, 'p50_ms', '{:.2f}')} "
            f"| {_cell(r, 'p90_ms', '{:.2f}')} | {_cell(r, 'p99_ms', '{:.2f}')} "
            f"| {_cell(r, 'cpu_us_per_req', '{:.0f}')}{process} | {bad} |"
        )
    lines += [
        "",
        f"Ratios: req/s {_ratios(res, 'rps')}; p50 {_ratios(res, 'p50_ms')}; "
        f"p99 {_ratios(res, 'p99_ms')}; proxy CPU per request gateway/nginx "
        f"{_ratio(_get(res, 'gateway', 'cpu_us_per_req'), _get(res, 'nginx', 'cpu_us_per_req'))}.",
        "",
    ]
    return lines


def _transfer_table(title: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| target (process) | MiB/s (range) | CPU s/GiB | RSS base → peak MiB "
        "| RSS growth MiB | VmHWM before → after MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in TARGETS:
        r = res.get(t)
        if not r or "error" in r:
            lines.append(f"| {t} | {'error' if r else '-'} | | | | |")
            continue
        lines.append(
            f"| {t} ({r['process']}) | {_spread(r, 'mib_s')} | {r['cpu_s_per_gib']:.2f} "
            f"| {r['rss_baseline_mib']} → {r['rss_peak_mib']} | **{r['rss_growth_mib']}** "
            f"| {r['hwm_before_mib']} → {r['hwm_after_mib']} |"
        )
    lines += [
        "",
        f"Ratios: throughput {_ratios(res, 'mib_s')}; proxy CPU per GiB gateway/nginx "
        f"{_ratio(_get(res, 'gateway', 'cpu_s_per_gib'), _get(res, 'nginx', 'cpu_s_per_gib'))}. "
        "RSS growth is the largest over the rounds.",
        "",
    ]
    return lines


def _sse_table(title: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| target | events | p50 ms | p99 ms | max ms | events > 50 ms | background req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in TARGETS:
        r = res.get(t)
        lines.append(
            f"| {t} | {_cell(r, 'events', '{:.0f}')} | {_cell(r, 'p50_ms', '{:.2f}')} "
            f"| {_cell(r, 'p99_ms', '{:.2f}')} | {_cell(r, 'max_ms', '{:.2f}')} "
            f"| {_cell(r, 'over_50ms', '{:.0f}')} | {_cell(r, 'background_rps', '{:,.0f}')} |"
        )
    return [*lines, ""]


def _ws_echo_table(title: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| target | connections | round trips | round trips/s (range) | mean RTT ms "
        "| CPU µs/round trip (process) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in TARGETS:
        r = res.get(t)
        process = f" ({r['process']})" if r and "process" in r else ""
        lines.append(
            f"| {t} | {_cell(r, 'connections', '{:.0f}')} | {_cell(r, 'round_trips', '{:,.0f}')} "
            f"| {_spread(r, 'rt_per_s')} | {_cell(r, 'mean_rtt_ms', '{:.3f}')} "
            f"| {_cell(r, 'cpu_us_per_rt', '{:.0f}')}{process} |"
        )
    lines += [
        "",
        f"Ratios: round trips/s {_ratios(res, 'rt_per_s')}; proxy CPU per round trip "
        f"gateway/nginx "
        f"{_ratio(_get(res, 'gateway', 'cpu_us_per_rt'), _get(res, 'nginx', 'cpu_us_per_rt'))}.",
        "",
    ]
    return lines


def _idle_table(title: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| target (process) | sockets | opens/s | RSS before → held MiB | KiB per socket "
        "| KiB/socket after one echo | RSS after close MiB | fds before / held / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in TARGETS:
        r = res.get(t)
        if not r or "error" in r:
            lines.append(f"| {t} | {'error' if r else '-'} | | | | | | |")
            continue
        lines.append(
            f"| {t} ({r['process']}) | {r['sockets']} | {r['opens_per_s']:,.0f} "
            f"| {r['rss_before_mib']} → {r['rss_held_mib']} | **{r['kib_per_socket']}** "
            f"| {r['kib_per_socket_after_echo']} | {r['rss_after_close_mib']} "
            f"| {r['fds_before']} / {r['fds_held']} / {r['fds_after_close']} |"
        )
    return [*lines, ""]


RENDER = {
    "http": ("HTTP small GET, saturation", _http_table),
    "http_paced": ("HTTP small GET, paced", _http_table),
    "download": ("Download", _transfer_table),
    "upload": ("Upload", _transfer_table),
    "sse": ("SSE delay, idle machine", _sse_table),
    "sse_loaded": ("SSE delay, with wrk load on the same target", _sse_table),
    "ws_echo_1": ("WebSocket echo, 1 connection", _ws_echo_table),
    "ws_echo_n": ("WebSocket echo, several connections", _ws_echo_table),
    "ws_idle": ("Idle relayed WebSockets", _idle_table),
}


def markdown(run: dict[str, Any]) -> str:
    facts = run["machine"]
    lines = [
        f"## Results {run['started_utc']}",
        "",
        f"- machine: {facts['cpu']}, {facts['cores_usable']} usable cores, "
        f"{facts['memory_gib']} GiB, Linux {facts['kernel']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in facts['loadavg_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in run.get('loadavg_end', ()))}",
        f"- Python {facts['python']}, aiohttp {facts['aiohttp']}, uvloop {facts['uvloop']}, "
        f"nginx {facts['nginx']}, wrk {facts['wrk']}",
        f"- gateway: {facts['gateway_source']}",
        "- settings: "
        + ", ".join(f"`{k}={v}`" for k, v in run["settings"].items() if k not in ("out", "only")),
        f"- scenarios: {run['settings']['only']}",
        f"- wall time: {run.get('wall_s', 0):.0f} s; of the machine's CPU capacity over the run, "
        f"the benchmark's own processes used {run.get('load', {}).get('ours_pct', '?')} % and "
        f"other people's processes {run.get('load', {}).get('others_pct', '?')} %",
        "",
    ]
    for key, scenario in run["scenarios"].items():
        title, render = RENDER[key]
        detail = scenario.get("detail", "")
        lines += render(f"{title}{f' ({detail})' if detail else ''}", scenario["results"])
        if "load" in scenario:
            lines += [
                f"Other processes on the machine used {scenario['load']['others_pct']} % of its "
                f"CPU during this scenario ({scenario['load']['wall_s']} s).",
                "",
            ]
    return "\n".join(lines)
