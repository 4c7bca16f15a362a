"""The comparison as Markdown: one table of ratios to nginx, the goals of issue 9 checked for
the gateway, and the profile's top entries. Columns are explained in docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

X = "\N{MULTIPLICATION SIGN}"

# (column, goal text, check of the gateway's figure against it)
GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "small": ("≥ 0.7", lambda r: r >= 0.7),
    "cpu": (f"≤ 2{X} nginx", lambda r: r <= 2.0),
    "p99": (f"≤ 2{X} nginx", lambda r: r <= 2.0),
    "private_header": ("≥ 0.6", lambda r: r >= 0.6),
    "private_cookie": ("≥ 0.6", lambda r: r >= 0.6),
    "large": ("≥ 1.2", lambda r: r >= 1.2),
    "new_conn": ("≥ 0.6", lambda r: r >= 0.6),
    "ws_echo": ("≥ 0.9", lambda r: r >= 0.9),
    "ws_idle": ("≤ 6 KiB", lambda v: v <= 6.0),
    "download": ("< 32 MiB", lambda v: v < 32.0),
    "upload": ("< 32 MiB", lambda v: v < 32.0),
}
HEADERS = (
    f"small req/s {X}nginx",
    f"CPU µs/req ({X}nginx)",
    f"p99 ms ({X}nginx)",
    f"private, header {X}nginx",
    f"private, cookie {X}nginx",
    f"1 MiB req/s {X}nginx",
    f"new conn/s {X}nginx",
    f"WS msg/s {X}nginx",
    "KiB per idle WS",
    "{size} download RSS growth MiB",
    "{size} upload RSS growth MiB",
)


def size_label(mib: int) -> str:
    return f"{mib >> 10} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def _get(results: dict[str, Any], scenario: str, target: str, key: str) -> float | None:
    r = results.get(scenario, {}).get(target)
    if not isinstance(r, dict) or "error" in r or r.get(key) is None:
        return None
    return float(r[key])


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def figures(results: dict[str, Any], target: str) -> dict[str, tuple[float | None, str]]:
    """Per column: (the figure compared with the goal, the cell text)."""
    out: dict[str, tuple[float | None, str]] = {}

    def ratio(column: str, scenario: str, key: str, base: str) -> None:
        mine, ref = _get(results, scenario, target, key), _get(results, base, "nginx", key)
        if mine is None:
            out[column] = (None, "error" if target in results.get(scenario, {}) else "-")
        elif not ref:
            out[column] = (None, f"({_k(mine)})")
        else:
            out[column] = (mine / ref, f"{mine / ref:.2f} ({_k(mine)})")

    ratio("small", "small", "rps", "small")
    for column, key in (("cpu", "cpu_us_per_req"), ("p99", "p99_ms")):
        mine, ref = _get(results, "small", target, key), _get(results, "small", "nginx", key)
        text = "-" if mine is None else f"{mine:.1f}" if key == "cpu_us_per_req" else f"{mine:.2f}"
        rel = mine / ref if mine is not None and ref else None
        out[column] = (rel, text + (f" ({rel:.1f}{X})" if rel is not None else ""))
    ratio("private_header", "private_header", "rps", "small")  # against nginx's public rate
    ratio("private_cookie", "private_cookie", "rps", "small")
    ratio("large", "large", "rps", "large")
    ratio("new_conn", "new_conn", "rps", "new_conn")
    ratio("ws_echo", "ws_echo", "msg_per_s", "ws_echo")
    for column, key in (
        ("ws_idle", "kib_per_socket"),
        ("download", "rss_growth_mib"),
        ("upload", "rss_growth_mib"),
    ):
        value = _get(results, column, target, key)
        out[column] = (value, "-" if value is None else f"{value:.1f}")
    return out


def goal_lines(results: dict[str, Any], target: str) -> list[str]:
    met, missed, unmeasured = [], [], []
    for column, (value, _text) in figures(results, target).items():
        goal, check = GOALS[column]
        label = f"{column} {goal}"
        if value is None:
            unmeasured.append(label)
        elif check(value):
            met.append(f"{label} ({value:.2f})")
        else:
            missed.append(f"{label} ({value:.2f})")
    return [
        f"- **{target}**: met {len(met)} of {len(GOALS)} goals. "
        f"Missed: {', '.join(missed) or 'none'}. Not measured: {', '.join(unmeasured) or 'none'}."
    ]


def profile_lines(profiles: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for target, p in profiles.items():
        lines += [f"### Profile of {target} under small-request load", ""]
        if "error" in p:
            lines += [f"py-spy failed: {p['error']}", ""]
            continue
        lines += [
            f"{p['samples']} busy samples at 250 Hz (req/s while profiled: {p['rps']:,.0f}).",
            "",
            "| own % | function | total % | function |",
            "| ---: | --- | ---: | --- |",
        ]
        for (own_f, own_p), (tot_f, tot_p) in zip(p["own"], p["total"], strict=False):
            lines.append(f"| {own_p} | `{own_f}` | {tot_p} | `{tot_f}` |")
        lines.append("")
    return lines


def markdown(run: dict[str, Any]) -> str:
    results, targets = run["results"], run["targets"]
    lines = [
        f"## Comparison {run['started_utc']}",
        "",
        f"- {run['machine']}",
        f"- settings: {run['settings']}",
        f"- wall time {run['wall_s']:.0f} s; other people's processes used "
        f"{run['load']['others_pct']} % of the machine's CPU during the run",
        "",
        "| target | "
        + " | ".join(h.format(size=size_label(run["transfer_mib"])) for h in HEADERS)
        + " |",
        "| --- |" + " ---: |" * len(HEADERS),
    ]
    for target in targets:
        cells = [text for _value, text in figures(results, target).values()]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += ["| goal (issue 9) | " + " | ".join(g for g, _ in GOALS.values()) + " |", ""]
    for target in (t for t in targets if t.startswith("gateway")):
        lines += goal_lines(results, target)
    failures = [
        f"{scenario}/{target}: {r['error']}"
        for scenario, per in results.items()
        for target, r in per.items()
        if isinstance(r, dict) and "error" in r
    ]
    if failures:
        lines += ["", "Failed: " + "; ".join(failures)]
    lines.append("")
    return "\n".join(lines + profile_lines(run.get("profile", {})))
