"""Fixtures of the real-browser suite: one headless Chromium (driven by ``hmr.mjs --serve``) for
the whole session, dev servers on free loopback ports, and the control API over plain HTTP.

Everything started here runs in its own process group and is stopped at teardown, even when a
test fails. Missing prerequisites FAIL the suite (never skip): run ``tests/browser/setup.sh``.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.browser.private_app import PrivateApp
from tests.helpers.ports import unused_port
from tests.helpers.process import GatewayProcess

BROWSER_DIR = Path(__file__).resolve().parent
APPS = BROWSER_DIR / "apps"
WORK = BROWSER_DIR / "work"  # per-test copies of apps/* (git-ignored): tests never edit apps/
NODE_MODULES = BROWSER_DIR / "node_modules"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
NODE_PACKAGES = (
    "playwright-core",
    "vite",
    "webpack",
    "webpack-cli",
    "webpack-dev-server",
    "next",
    "react",
    "react-dom",
)
SETUP_HINT = "run tests/browser/setup.sh (installs Debian's chromium and runs npm ci)"


# ── prerequisites ───────────────────────────────────────────────────────────────────────────
def missing_prerequisites() -> list[str]:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (Debian package `chromium`)")
    if shutil.which("node") is None:
        problems.append("node is not on PATH (Node.js 20.9+ is required)")
    absent = [p for p in NODE_PACKAGES if not (NODE_MODULES / p / "package.json").exists()]
    if absent:
        problems.append(f"{NODE_MODULES} lacks {', '.join(absent)}")
    return problems


@pytest.fixture
def private_app() -> Iterator[PrivateApp]:
    """The private-preview tests' upstream app (``private_app.py``) on 127.0.0.1."""
    app = PrivateApp()
    try:
        app.start()
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="session")
def browser_prerequisites() -> None:
    problems = missing_prerequisites()
    if problems:
        pytest.fail(
            "browser tests cannot run: " + "; ".join(problems) + f". Fix: {SETUP_HINT}.",
            pytrace=False,
        )


# ── processes ───────────────────────────────────────────────────────────────────────────────
def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            started = _start_time(child)
            if started is not None:
                found.append((child, started))
                todo.append(child)
    return found


def stop_tree(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stops a process started with ``start_new_session=True``, its process group, and any
    descendant that left the group (Playwright starts Chromium in a group of its own)."""
    family = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(10)
    for pid, started in family:
        if _start_time(pid) == started:  # still the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not listening on 127.0.0.1:{port} after {timeout:.0f} s")


# ── the browser driver ──────────────────────────────────────────────────────────────────────
class DriverError(AssertionError):
    def __init__(self, op: str, error: str, snapshot: dict[str, Any] | None) -> None:
        self.op, self.error, self.snapshot = op, error, snapshot
        evidence = json.dumps(snapshot, indent=1) if snapshot else "(no snapshot)"
        super().__init__(f"driver `{op}` failed: {error}\nwhat the page did:\n{evidence}")


class Driver:
    """``node <script> --serve`` (hmr.mjs, private.mjs): one Chromium, one JSON command and
    reply per line."""

    def __init__(
        self, log_path: Path, script: str = "hmr.mjs", chromium_args: Sequence[str] = ()
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "CHROMIUM_EXTRA_ARGS": " ".join(chromium_args)}
        self.proc = subprocess.Popen(
            ["node", str(BROWSER_DIR / script), "--serve"],
            cwd=BROWSER_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            hello = self._next_line(90, "Chromium to start")
            self.version = json.loads(hello).get("version", "?")
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, timeout: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"the browser driver gave no answer for {what} in {timeout:.0f} s"
            ) from None
        if line is None:
            raise RuntimeError(
                f"the browser driver exited while waiting for {what}:\n{self.stderr_tail()}"
            )
        return line

    def stderr_tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def call(self, op: str, *, timeout_ms: int = 60_000, **args: Any) -> dict[str, Any]:
        ident = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": ident, "op": op, "timeoutMs": timeout_ms, **args}))
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        # The driver bounds each wait by timeoutMs; allow for the steps around it.
        deadline = time.monotonic() + timeout_ms / 1000 * 2 + 30
        while True:
            left = deadline - time.monotonic()
            line = self._next_line(max(left, 0.1), f"`{op}`")
            reply = json.loads(line)
            if reply.get("id") == ident:
                break
        if not reply["ok"]:
            raise DriverError(op, reply["error"], reply.get("snapshot"))
        return reply["result"]  # type: ignore[no-any-return]

    def close_session(self, session: str) -> None:
        with contextlib.suppress(Exception):
            self.call("close", session=session, timeout_ms=10_000)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    self.proc.stdin.write(json.dumps({"id": 0, "op": "quit"}) + "\n")
                    self.proc.stdin.flush()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(15)
        finally:
            stop_tree(self.proc, grace=5)
            for pipe in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(Exception):
                    if pipe is not None:
                        pipe.close()
            self._log.close()


@pytest.fixture(scope="session")
def hmr_driver(
    browser_prerequisites: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    driver = Driver(tmp_path_factory.mktemp("browser") / "driver.log")
    try:
        yield driver
    finally:
        driver.stop()


# ── dev servers ─────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class AppKind:
    name: str
    source: str  # the file holding `export const message = "v1"`, relative to the app
    # The client is ready for an edit once its HMR socket received a frame matching
    # ready_frame, after sending one matching ready_sent (when set). Editing earlier races the
    # dev server: Next's client subscribes to its chunk lists only after `turbopack-connected`
    # and `sync`, and an edit made before the server answered the subscription with `built` is
    # folded into the baseline and never pushed (seen without the gateway too, about 1 in 6).
    ready_frame: str
    ready_sent: str | None
    start_timeout: float


KINDS = {
    "vite": AppKind("vite", "message.js", r'"type":"connected"', None, 30),
    "webpack": AppKind("webpack", "src/message.js", r'"type":"(ok|still-ok)"', None, 60),
    "next": AppKind("next", "app/message.js", r'"type":"built"', r"turbopack-subscribe", 60),
}


@dataclass
class DevServer:
    kind: AppKind
    port: int
    app_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def source(self) -> Path:
        return self.app_dir / self.kind.source

    def output(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


def _dev_command(kind: str, app_dir: Path, port: int) -> list[str]:
    bins = {
        "vite": [str(NODE_MODULES / "vite/bin/vite.js")],
        "webpack": [
            str(NODE_MODULES / "webpack-cli/bin/cli.js"),
            "serve",
            "--config",
            str(app_dir / "webpack.config.mjs"),
        ],
        "next": [
            str(NODE_MODULES / "next/dist/bin/next"),
            "dev",
            "--turbopack",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            str(app_dir),
        ],
    }
    return ["node", *bins[kind]]


@pytest.fixture
def dev_server(browser_prerequisites: None, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``dev_server("vite")`` copies apps/vite to work/ and serves the copy on a free
    127.0.0.1 port. At teardown the server is stopped and the copy (with its edits) removed."""
    started: list[DevServer] = []

    def start(kind: str, env: dict[str, str] | None = None) -> DevServer:
        spec = KINDS[kind]
        port = unused_port()
        app_dir = WORK / f"{kind}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(APPS / kind, app_dir)
        log_path = tmp_path / f"{kind}-{port}.log"
        full_env = {
            **os.environ,
            "PORT": str(port),
            "DEV_HOST": "127.0.0.1",
            "NEXT_TELEMETRY_DISABLED": "1",
            "BROWSER": "none",
            "NO_COLOR": "1",
            **(env or {}),
        }
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                _dev_command(kind, app_dir, port),
                cwd=app_dir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = DevServer(spec, port, app_dir, proc, log_path)
        started.append(server)
        try:
            wait_for_port(port, proc, spec.start_timeout, f"{kind} dev server")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{server.output()}") from None
        return server

    try:
        yield start
    finally:
        for server in started:
            stop_tree(server.proc)
            shutil.rmtree(server.app_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            WORK.rmdir()  # only when no other run is using it


# ── a proxy without WebSocket support (the negative control) ──────────────────────────────────
_HOP = {
    "connection",
    "keep-alive",
    "upgrade",
    "transfer-encoding",
    "te",
    "trailer",
    "proxy-connection",
    "content-length",
}


@pytest.fixture
def http_only_proxy() -> Iterator[Any]:
    """Factory: ``http_only_proxy(port)`` relays plain HTTP GETs to 127.0.0.1:port, Host kept,
    and drops Upgrade like a misconfigured nginx; yields the proxy's port. It lets the suite show
    that a page whose HMR socket falls back to the dev server directly is caught."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(target_port: int) -> int:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request("GET", self.path, headers=headers)
                r = conn.getresponse()
                body = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                conn.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return int(server.server_address[1])

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def save_result(name: str, result: dict[str, Any] | None) -> None:
    """With HMR_RESULTS_DIR set, keeps each driver result as <name>.json for inspection."""
    where = os.environ.get("HMR_RESULTS_DIR")
    if where and result is not None:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / f"{name}.json").write_text(json.dumps(result, indent=1))


class Api:
    """The control API of a gateway process, over urllib (these tests are synchronous)."""

    def __init__(self, gp: GatewayProcess) -> None:
        self.base = f"http://127.0.0.1:{gp.api_port}/v0"
        self.key = gp.key

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def sandbox(self, name: str = "sb") -> None:
        status, body = self.call(
            "POST",
            "/sandboxes",
            {"metadata": {"name": name}, "spec": {"target": {"host": "127.0.0.1"}}},
        )
        assert status == 200, f"creating sandbox {name}: {status} {body}"

    def preview(self, name: str, port: int, *, public: bool, sandbox: str = "sb") -> str:
        status, body = self.call(
            "POST",
            f"/sandboxes/{sandbox}/previews",
            {"metadata": {"name": name}, "spec": {"port": port, "public": public}},
        )
        assert status == 200, f"creating preview {name}: {status} {body}"
        return str(body["spec"]["url"])

    def token(self, preview: str, *, sandbox: str = "sb", minutes: int = 60) -> str:
        expires = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
        status, body = self.call(
            "POST",
            f"/sandboxes/{sandbox}/previews/{preview}/tokens",
            {"metadata": {"name": ""}, "spec": {"expiresAt": expires.replace("+00:00", "Z")}},
        )
        assert status == 200, (
            f"minting a preview token (POST /v0/sandboxes/{sandbox}/previews/{preview}/tokens) "
            f"answered {status}: {body}"
        )
        return str(body["spec"]["token"])
