"""HMR benchmark: a real browser on Vite, webpack-dev-server and Next (turbopack), through the
gateway and direct to the dev server, in one run.

    .venv/bin/python -m bench.hmr [--quick] [--servers vite,webpack,next] [--loads 10] [--edits 10]
    .venv/bin/python -m bench.run --only hmr [same options]

For each dev server it measures

* **first load**: ``page.goto`` in a new browser context (empty cache) until both the ``load``
  event fired and ``#message`` shows its value; also the HMR socket's readiness;
* **HMR update**: from just before the source file is rewritten (in place, as
  tests/browser/hmr.mjs does) to the DOM mutation that shows the new value, v1 and v2 alternating,

direct (``http://127.0.0.1:<dev port>/``) and through the gateway (its public preview), with
the targets interleaved so a neighbour's burst of load hits both. The apps are
tests/browser/apps/*, copied into a temp dir next to a hard-linked copy of
tests/browser/node_modules (turbopack refuses a symlinked node_modules outside its root), so no
file of the repository is ever written. The browser side is bench/hmr_bench.mjs.

Every process started here (gateway, dev servers, the Node driver and its Chromium) runs in its
own process group, is stopped by pid/group when the run ends (also on error, Ctrl+C or SIGTERM)
and gets PR_SET_PDEATHSIG. Traffic is loopback only; every wait is bounded, and the whole run
stops measuring once --budget-s is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bench import gw, report
from bench.procs import REPO, cpu_seconds, die_with_parent, free_port

BROWSER_DIR = REPO / "tests" / "browser"
APPS = BROWSER_DIR / "apps"
NODE_MODULES = BROWSER_DIR / "node_modules"
DRIVER = Path(__file__).resolve().parent / "hmr_bench.mjs"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
NODE_PACKAGES = ("playwright-core", "vite", "webpack", "webpack-cli", "webpack-dev-server", "next")
SETUP_HINT = "run tests/browser/setup.sh (installs Debian's chromium and runs npm ci)"
TARGETS = ("direct", "gateway")


@dataclass(frozen=True)
class Kind:
    """As tests/browser/conftest.py KINDS: the edited file, and when the client's HMR socket is
    ready for an edit (a received frame matching ready_frame, after a sent one matching
    ready_sent). Next folds an edit made before its `built` answer into the baseline."""

    source: str
    ready_frame: str
    ready_sent: str | None
    start_timeout_s: float
    open_timeout_ms: int


KINDS = {
    "vite": Kind("message.js", r'"type":"connected"', None, 30, 30_000),
    "webpack": Kind("src/message.js", r'"type":"(ok|still-ok)"', None, 60, 45_000),
    "next": Kind("app/message.js", r'"type":"built"', r"turbopack-subscribe", 60, 90_000),
}
EDIT_TIMEOUT_MS = 30_000


# ── processes ───────────────────────────────────────────────────────────────────────────────
def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if fields := _stat_fields(child):
                found.append((child, fields[19]))
                todo.append(child)
    return found


class Proc:
    """A child in a process group of its own. ``stop`` ends the group, then any descendant that
    left it (Playwright starts Chromium in its own group): by pid, checked against its start
    time so that a reused pid is never hit."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        *,
        cwd: Path,
        env: dict[str, str],
        pipes: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log,
            stderr=self._log,
            text=pipes or None,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        family = descendants(self.pid)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.alive():
            self.proc.wait(10)
        for pid, started in family:
            fields = _stat_fields(pid)
            if fields and fields[19] == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()

    def tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


class Driver:
    """``node bench/hmr_bench.mjs``: one Chromium, one JSON command and reply per line."""

    def __init__(self, log_dir: Path) -> None:
        env = {**os.environ, "HMR_BROWSER_DIR": str(BROWSER_DIR), "CHROMIUM_PATH": str(CHROMIUM)}
        self.p = Proc("driver", ["node", str(DRIVER)], log_dir, cwd=log_dir, env=env, pipes=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._id = 0
        threading.Thread(target=self._read, args=(self.p.proc.stdout,), daemon=True).start()
        hello = json.loads(self._next_line(90, "Chromium to start"))
        self.version = str(hello.get("version", "?"))

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, timeout_s: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=max(timeout_s, 0.1))
        except queue.Empty:
            raise RuntimeError(
                f"no answer from the driver for {what} in {timeout_s:.0f} s"
            ) from None
        if line is None:
            raise RuntimeError(f"the driver exited while waiting for {what}:\n{self.p.tail()}")
        return line

    def call(self, op: str, timeout_ms: int, **args: Any) -> dict[str, Any]:
        self._id += 1
        ident = self._id
        stdin = self.p.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"id": ident, "op": op, "timeoutMs": timeout_ms, **args}) + "\n")
        stdin.flush()
        deadline = time.monotonic() + timeout_ms / 1000 * 2 + 20  # the driver bounds each wait
        while True:
            reply = json.loads(self._next_line(deadline - time.monotonic(), f"`{op}`"))
            if reply.get("id") == ident:
                break
        if not reply["ok"]:
            raise DriverError(op, str(reply["error"]), reply.get("evidence"))
        result: dict[str, Any] = reply["result"]
        return result

    def stop(self) -> None:
        stdin = self.p.proc.stdin
        if self.p.alive() and stdin is not None:
            with contextlib.suppress(Exception):
                stdin.write(json.dumps({"id": 0, "op": "quit"}) + "\n")
                stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.proc.wait(15)
        self.p.stop(grace_s=5)
        for pipe in (self.p.proc.stdin, self.p.proc.stdout):
            with contextlib.suppress(Exception):
                if pipe is not None:
                    pipe.close()


class DriverError(RuntimeError):
    def __init__(self, op: str, error: str, evidence: dict[str, Any] | None) -> None:
        self.evidence = evidence
        super().__init__(f"{op}: {error}")


# ── CPU accounting across the whole process tree ──────────────────────────────────────────
_TICKS = os.sysconf("SC_CLK_TCK")


def _system_busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _ours_s() -> float:
    """CPU of this process, its reaped children, and every live descendant (with what those
    reaped): Chromium and next-server are grandchildren, which bench.procs.CpuLedger misses."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    for pid, _ in descendants(os.getpid()):
        if fields := _stat_fields(pid):
            total += sum(int(f) for f in fields[11:15]) / _TICKS  # utime stime cutime cstime
    return total


def load_snapshot() -> tuple[float, float, float]:
    return time.monotonic(), _system_busy_s(), _ours_s()


def load_share(before: tuple[float, float, float]) -> dict[str, float]:
    after = load_snapshot()
    wall = after[0] - before[0]
    capacity = wall * len(os.sched_getaffinity(0)) or 1.0
    ours = after[2] - before[2]
    others = max(0.0, after[1] - before[1] - ours)
    return {
        "wall_s": round(wall, 1),
        "ours_pct": round(100 * ours / capacity, 1),
        "others_pct": round(100 * others / capacity, 1),
    }


# ── the run ─────────────────────────────────────────────────────────────────────────────────
def missing_prerequisites() -> list[str]:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (Debian package `chromium`)")
    if shutil.which("node") is None:
        problems.append("node is not on PATH (Node.js 20.9+)")
    absent = [p for p in NODE_PACKAGES if not (NODE_MODULES / p / "package.json").exists()]
    if absent:
        problems.append(f"{NODE_MODULES} lacks {', '.join(absent)}")
    return problems


def package_version(work: Path, name: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(
            json.loads((work / "node_modules" / name / "package.json").read_text())["version"]
        )
    return "?"


def prepare(work: Path, kinds: list[str]) -> None:
    """work/{package.json, package-lock.json, node_modules (hard links), <kind>/}: the layout of
    tests/browser, so Next's turbopack finds its root (the lockfile) with node_modules inside."""
    try:
        subprocess.run(
            ["cp", "-al", str(NODE_MODULES), str(work / "node_modules")], check=True, timeout=120
        )
    except subprocess.CalledProcessError:  # another filesystem: hard links impossible
        shutil.copytree(NODE_MODULES, work / "node_modules", symlinks=True)
    # Caches the dev servers write (Vite's dep optimizer, config bundles): unlink them from the
    # copy, so that no write in place can reach a file shared with tests/browser/node_modules.
    for cache in (".vite", ".vite-temp", ".cache"):
        shutil.rmtree(work / "node_modules" / cache, ignore_errors=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(BROWSER_DIR / name, work / name)
    for kind in kinds:
        shutil.copytree(APPS / kind, work / kind)


def dev_command(kind: str, work: Path, port: int) -> list[str]:
    nm, app = work / "node_modules", work / kind
    return {
        "vite": ["node", str(nm / "vite/bin/vite.js")],
        "webpack": [
            "node",
            str(nm / "webpack-cli/bin/cli.js"),
            "serve",
            "--config",
            str(app / "webpack.config.mjs"),
        ],
        "next": [
            "node",
            str(nm / "next/dist/bin/next"),
            "dev",
            "--turbopack",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            str(app),
        ],
    }[kind]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "median": round(statistics.median(values), 1),
        "p90": round(percentile(values, 0.9), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def problems_of(result: dict[str, Any], edit: bool) -> list[str]:
    """What would make a sample measure something else than a relayed hot update."""
    out = [f"request off the target: {u}" for u in result.get("offTarget", [])]
    out += [
        f"WebSocket off the target: {s['url']}" for s in result["sockets"] if not s["viaTarget"]
    ]
    if edit:
        if not result["markerKept"] or result["navigations"]:
            out.append(f"page reloaded instead of hot-updated: {result['navigations']}")
    elif result.get("status") != 200:
        out.append(f"status {result.get('status')}")
    return out


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    deadline: float
    gateway_src: Path = REPO
    procs: list[Proc] = field(default_factory=list)
    driver: Driver | None = None
    gateway: gw.Gateway | None = None
    ports: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)  # gateway Host per kind
    values: dict[str, str] = field(default_factory=dict)  # current message per kind

    def url(self, kind: str, target: str) -> str:
        if target == "direct":
            return f"http://127.0.0.1:{self.ports[kind]}/"
        return f"http://{self.hosts[kind]}/"

    def host(self, kind: str, target: str) -> str:
        return f"127.0.0.1:{self.ports[kind]}" if target == "direct" else self.hosts[kind]

    def start(self, kinds: list[str]) -> dict[str, Any]:
        self.ports = {k: free_port() for k in kinds}
        self.gateway = gw.start(
            self.ports[kinds[0]], self.work, name="gateway", src=self.gateway_src
        )
        self.hosts[kinds[0]] = self.gateway.hostname
        for kind in kinds[1:]:
            self.hosts[kind] = gw.add_preview(self.gateway.api_port, kind, self.ports[kind])
        base_env = {
            **os.environ,
            "DEV_HOST": "127.0.0.1",
            "NEXT_TELEMETRY_DISABLED": "1",
            "BROWSER": "none",
            "NO_COLOR": "1",
        }
        for kind in kinds:  # all at once: their start-ups overlap
            env = {**base_env, "PORT": str(self.ports[kind])}
            argv = dev_command(kind, self.work, self.ports[kind])
            proc = Proc(kind, argv, self.work, cwd=self.work / kind, env=env)
            self.procs.append(proc)
            self.values[kind] = "v1"
        self.driver = Driver(self.work)
        started: dict[str, Any] = {}
        t = time.monotonic()
        for kind, proc in zip(kinds, self.procs, strict=True):
            try:
                wait_port(self.ports[kind], proc, KINDS[kind].start_timeout_s)
                started[kind] = round(time.monotonic() - t, 1)
            except RuntimeError as exc:  # the other dev servers are still measured
                started[kind] = f"error: {exc}"
        return started

    def stop(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.stop()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                self.gateway.child.stop()

    def over_budget(self) -> bool:
        return time.monotonic() > self.deadline

    def load(self, kind: str, target: str) -> dict[str, Any]:
        k = KINDS[kind]
        assert self.driver is not None
        try:
            r = self.driver.call(
                "load",
                k.open_timeout_ms,
                url=self.url(kind, target),
                expect=self.values[kind],
                gateway=self.host(kind, target),
                readyFrame=k.ready_frame,
                readySent=k.ready_sent,
            )
        except (DriverError, RuntimeError) as exc:
            return {"error": str(exc), "evidence": getattr(exc, "evidence", None)}
        r["problems"] = problems_of(r, edit=False)
        return r

    def edits(self, kind: str, target: str, count: int) -> list[dict[str, Any]]:
        """Opens one page, makes ``count`` edits (v1 and v2 alternating), closes the page."""
        k = KINDS[kind]
        assert self.driver is not None
        session = f"{kind}-{target}"
        out: list[dict[str, Any]] = []
        try:
            self.driver.call(
                "open",
                k.open_timeout_ms,
                session=session,
                url=self.url(kind, target),
                expect=self.values[kind],
                gateway=self.host(kind, target),
                readyFrame=k.ready_frame,
                readySent=k.ready_sent,
            )
            time.sleep(self.args.pause_ms / 1000)
            for _ in range(count):
                if self.over_budget():
                    out.append({"error": "skipped: --budget-s spent"})
                    break
                old = self.values[kind]
                new = "v2" if old == "v1" else "v1"
                try:
                    r = self.driver.call(
                        "edit",
                        EDIT_TIMEOUT_MS,
                        session=session,
                        file=str(self.work / kind / k.source),
                        **{"from": old, "to": new},
                    )
                except DriverError as exc:
                    out.append({"error": str(exc), "evidence": exc.evidence})
                    self._resync(kind, new)
                    break
                self.values[kind] = new
                r["problems"] = problems_of(r, edit=True)
                out.append(r)
                time.sleep(self.args.pause_ms / 1000)  # let the watcher and the server settle
        except (DriverError, RuntimeError) as exc:
            out.append({"error": f"open: {exc}", "evidence": getattr(exc, "evidence", None)})
        finally:
            with contextlib.suppress(Exception):
                self.driver.call("close", 10_000, session=session)
        return out

    def _resync(self, kind: str, written: str) -> None:
        """After a failed edit the file holds ``written``; carry on from there."""
        text = (self.work / kind / KINDS[kind].source).read_text()
        self.values[kind] = written if f'"{written}"' in text else self.values[kind]

    def measure(self, kind: str) -> dict[str, Any]:
        a = self.args
        before = load_snapshot()
        gw_cpu = cpu_seconds(self.gateway.pid) if self.gateway else 0.0
        out: dict[str, Any] = {
            "warmup": {},
            "loads": {t: [] for t in TARGETS},
            "edits": {t: [] for t in TARGETS},
        }
        # The first request after start-up compiles the page (webpack, Next): not what is
        # measured, but kept in the results.
        for target in TARGETS:
            out["warmup"][target] = self.load(kind, target)
            print(f"   {kind:8} warm-up {target:8} {_brief(out['warmup'][target])}", flush=True)
        for i in range(a.loads):
            order = TARGETS if i % 2 == 0 else TARGETS[::-1]
            for target in order:
                failed = sum("error" in r for r in out["loads"][target])
                if self.over_budget() or failed >= 3:
                    continue
                r = self.load(kind, target)
                out["loads"][target].append(r)
                print(f"   {kind:8} load {i + 1}/{a.loads} {target:8} {_brief(r)}", flush=True)
        per_block = [a.edits // a.blocks + (b < a.edits % a.blocks) for b in range(a.blocks)]
        for b, count in enumerate(per_block):
            order = TARGETS if b % 2 == 0 else TARGETS[::-1]
            for target in order:
                if self.over_budget() or not count:
                    break
                rs = self.edits(kind, target, count)
                out["edits"][target].extend(rs)
                ms = [r.get("ms", "err") for r in rs]
                print(f"   {kind:8} edits block {b + 1}/{a.blocks} {target:8} ms {ms}", flush=True)
        out["load"] = load_share(before)
        if self.gateway:
            out["gateway_cpu_s"] = round(cpu_seconds(self.gateway.pid) - gw_cpu, 2)
        out["summary"] = summarize(out)
        return out


def wait_port(port: int, proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout_s}s:\n{proc.tail()}")


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error'][:300]}"
    text = f"ready {r['readyMs']} ms (load {r['loadMs']}, render {r['renderMs']}, "
    text += f"HMR socket {r['socketMs']}; {len(r['resources'])} resources)"
    return text + (f" PROBLEMS {r['problems']}" if r["problems"] else "")


def _valid(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rs if "error" not in r and not r["problems"]]


def _ratio(a: dict[str, float] | None, b: dict[str, float] | None, key: str) -> float | None:
    if not a or not b or not b[key]:
        return None
    return round(a[key] / b[key], 2)


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for target in TARGETS:
        loads, edits = out["loads"][target], out["edits"][target]
        ok_loads, ok_edits = _valid(loads), _valid(edits)
        s[target] = {
            "first_load": stats([r["readyMs"] for r in ok_loads]),
            "load_event": stats([r["loadMs"] for r in ok_loads]),
            "render": stats([r["renderMs"] for r in ok_loads]),
            "hmr_socket": stats([r["socketMs"] for r in ok_loads]),
            "hmr_update": stats([r["ms"] for r in ok_edits]),
            "loads": f"{len(ok_loads)}/{len(loads)}",
            "edits": f"{len(ok_edits)}/{len(edits)}",
            # Page clock minus ours, beyond what the round trip of the reading explains.
            "max_clock_skew_ms": max(
                (
                    max(0.0, abs(r["clockSkewMs"]["skew"]) - r["clockSkewMs"]["span"] / 2)
                    for r in ok_loads + ok_edits
                ),
                default=None,
            ),
        }
    for key in ("first_load", "load_event", "render", "hmr_socket", "hmr_update"):
        g, d = s["gateway"][key], s["direct"][key]
        s[f"ratio_{key}"] = {"median": _ratio(g, d, "median"), "p90": _ratio(g, d, "p90")}
    return s


# ── report ──────────────────────────────────────────────────────────────────────────────────
def _cell(st: dict[str, float] | None) -> str:
    return "-" if not st else f"{st['median']:,.0f} / {st['p90']:,.0f}"


def _rcell(r: dict[str, float | None]) -> str:
    if r["median"] is None:
        return "-"
    return f"{r['median']:.2f} / {r['p90']:.2f}" if r["p90"] is not None else f"{r['median']:.2f}"


def markdown(run: dict[str, Any]) -> str:
    lines = [f"### HMR benchmark, {run['started_utc']}", ""]
    m = run["machine"]
    lines.append(
        f"{m['cpu']}, {m['cores_usable']} cores, gateway: {m['gateway_source']}; Chromium "
        f"{run['versions']['chromium']}, Node {run['versions']['node']}, Vite "
        f"{run['versions']['vite']}, webpack-dev-server {run['versions']['webpack-dev-server']}, "
        f"Next {run['versions']['next']}. Wall time {run['wall_s']} s; other people's processes "
        f"used {run['load']['others_pct']} % of the machine's CPU during it."
    )
    s = run["settings"]
    lines += [
        "",
        f"{s['loads']} cold loads and {s['edits']} edits per dev server and target, interleaved "
        f"(edits in {s['blocks']} blocks per target, {s['pause_ms']} ms pause after each). "
        "Cells: median / p90 in ms; ratios gateway/direct of the median / of the p90.",
        "",
        "| dev server | first load, direct | first load, gateway | ratio | HMR update, direct "
        "| HMR update, gateway | ratio | valid loads / edits (direct; gateway) | others' CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for kind, res in run["servers"].items():
        if "summary" not in res:
            lines.append(f"| {kind} | error: {res.get('error', '?')[:120]} | | | | | | | |")
            continue
        su = res["summary"]
        d, g = su["direct"], su["gateway"]
        lines.append(
            f"| {kind} | {_cell(d['first_load'])} | {_cell(g['first_load'])} | "
            f"{_rcell(su['ratio_first_load'])} | {_cell(d['hmr_update'])} | "
            f"{_cell(g['hmr_update'])} | {_rcell(su['ratio_hmr_update'])} | "
            f"{d['loads']}, {d['edits']}; {g['loads']}, {g['edits']} | "
            f"{res['load']['others_pct']} % |"
        )
    lines += [
        "",
        "Parts of the first load (median / p90 ms from page.goto). Warm-up: the first load after "
        "the dev server started, not counted above; direct goes first, so only its figure "
        "includes compiling the page. Gateway CPU: seconds the gateway process used during this "
        "dev server's whole measurement.",
        "",
        "| dev server | target | `load` event | message rendered | HMR socket ready "
        "| warm-up ready | gateway CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, res in run["servers"].items():
        if "summary" not in res:
            continue
        for target in TARGETS:
            t = res["summary"][target]
            w = res["warmup"].get(target, {})
            warm = f"{w['readyMs']:,}" if "readyMs" in w else "error"
            cpu = res.get("gateway_cpu_s", "-") if target == "gateway" else ""
            lines.append(
                f"| {kind} | {target} | {_cell(t['load_event'])} | {_cell(t['render'])} | "
                f"{_cell(t['hmr_socket'])} | {warm} | {cpu} |"
            )
    return "\n".join(lines)


# ── command line ────────────────────────────────────────────────────────────────────────────
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.hmr",
        description="First-load and HMR-update latency in Chromium, direct vs through the gateway.",
    )
    p.add_argument("--servers", default=",".join(KINDS), help="comma-separated: vite,webpack,next")
    p.add_argument("--loads", type=int, default=10, help="cold loads per dev server and target")
    p.add_argument("--edits", type=int, default=10, help="edits per dev server and target")
    p.add_argument("--blocks", type=int, default=2, help="edit blocks per target (interleaved)")
    p.add_argument("--pause-ms", type=int, default=300, help="pause after each edit")
    p.add_argument("--budget-s", type=float, default=210, help="stop measuring after this")
    p.add_argument("--quick", action="store_true", help="3 loads and 4 edits: a smoke run")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--gateway-ref", help="benchmark this git ref (git archive into a temp dir)")
    p.add_argument("--gateway-src", type=Path, help="benchmark the gateway package in this dir")
    args = p.parse_args(argv)
    kinds = args.servers.split(",")
    if set(kinds) - set(KINDS) or not kinds:
        p.error(f"--servers: choose from {', '.join(KINDS)}")
    if args.gateway_ref and args.gateway_src:
        p.error("--gateway-ref and --gateway-src exclude each other")
    if args.gateway_src and not (args.gateway_src / "gateway" / "__main__.py").exists():
        p.error(f"{args.gateway_src} holds no gateway/ package")
    if args.quick:
        args.loads, args.edits = 3, 4
    # Bounds, so that a typo cannot start a long run on a shared machine.
    args.loads = max(1, min(args.loads, 30))
    args.edits = max(1, min(args.edits, 40))
    args.blocks = max(1, min(args.blocks, args.edits))
    args.pause_ms = max(0, min(args.pause_ms, 5000))
    args.budget_s = max(10.0, min(args.budget_s, 900.0))
    args.kinds = [k for k in KINDS if k in kinds]
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the finally blocks stop every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(
            "hmr benchmark cannot run: " + "; ".join(problems) + f". Fix: {SETUP_HINT}.",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    wall = time.monotonic()
    whole = load_snapshot()
    facts = report.machine_facts(args.gateway_ref, args.gateway_src)
    for key in ("nginx", "wrk"):
        facts.pop(key, None)
    run: dict[str, Any] = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": facts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "servers": {},
    }
    print(f"machine: {json.dumps(facts)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pgw-hmr-") as tmp:
        work = Path(tmp)
        bench = Bench(args, work, deadline=wall + args.budget_s)
        if args.gateway_ref:
            bench.gateway_src = gw.snapshot(args.gateway_ref, work / "src")
        elif args.gateway_src:
            bench.gateway_src = args.gateway_src.resolve()
        try:
            prepare(work, args.kinds)
            node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
            run["versions"] = {
                "node": node.stdout.strip().lstrip("v"),
                **{n: package_version(work, n) for n in ("vite", "webpack-dev-server", "next")},
                "playwright-core": package_version(work, "playwright-core"),
            }
            run["startup_s"] = bench.start(args.kinds)
            assert bench.driver is not None
            run["versions"]["chromium"] = bench.driver.version
            print(f"started: {run['startup_s']} s; previews {bench.hosts}", flush=True)
            for kind in args.kinds:
                print(f"== {kind}", flush=True)
                if bench.over_budget():
                    run["servers"][kind] = {"error": "skipped: --budget-s spent"}
                    continue
                if str(run["startup_s"][kind]).startswith("error"):
                    run["servers"][kind] = {"error": run["startup_s"][kind]}
                    continue
                try:
                    run["servers"][kind] = bench.measure(kind)
                except Exception as exc:  # one dev server failing must not lose the others
                    run["servers"][kind] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"   ! {kind}: {exc}", file=sys.stderr, flush=True)
            # Before the stop: a killed dev server's orphaned workers are never reaped by us,
            # so their CPU would count as other people's.
            run["load"] = load_share(whole)
        finally:
            bench.stop()
            logs = {p.name: p.tail(1500) for p in bench.procs}
            if bench.gateway is not None:
                logs["gateway"] = bench.gateway.child.tail(40)
            run["log_tails"] = logs
    run["wall_s"] = round(time.monotonic() - wall, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"hmr-{started.strftime('%Y%m%dT%H%M%SZ')}"
    text = markdown(run)
    stem.with_suffix(".json").write_text(json.dumps(run, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nwritten: {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
