"""A real redis-server process for the tests (never a fake)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from tests.helpers.ports import unused_port


class RedisServer:
    """A real redis-server on a free port, which tests may stop and start again."""

    def __init__(self, extra_args: list[str] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            # In CI a missing redis-server must fail, never skip: .ci/run installs it.
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = unused_port()
        self.dir = tempfile.mkdtemp(prefix="pgw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args = list(extra_args or [])
        """More ``redis-server`` options (a password, ``--replicaof``)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, password: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--enable-debug-command",
                "local",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                auth = f"AUTH {password}\r\n".encode() if password else b""
                s.sendall(auth + b"PING\r\n")
                if s.recv(32).endswith(b"+PONG\r\n"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(19)  # SIGSTOP: a hung Redis

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(18)  # SIGCONT

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Redis down (no process, connections refused) inside the block; back after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Redis hung (connections open, nothing answered) inside the block; back after it."""
        self.pause()
        try:
            yield
        finally:
            self.resume()
