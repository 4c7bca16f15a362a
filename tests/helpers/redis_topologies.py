"""Real multi-process Redis topologies for the tests: Sentinel (a primary, a replica and three
sentinels) and a 3-primary Cluster. Every process is a real ``redis-server``/``redis-sentinel``
on loopback, started on free ports and always stopped by ``close()``."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from tests.helpers.ports import unused_ports
from tests.helpers.redis_server import RedisServer

MASTER = "pgw-primary"
DATA_PASSWORD = "data-secret-0123456789"
SENTINEL_PASSWORD = "sentinel-secret-0123456789"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        # A missing binary fails, never skips: scripts/test installs it.
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server redis-sentinel)")
    return found


def _command(port: int, *args: str, password: str | None = None, timeout: float = 1.0) -> bytes:
    """One RESP command over a raw socket; the reply's first line."""
    parts = ([b"AUTH", password.encode()] if password else None, [a.encode() for a in args])
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        reply = b""
        for part in parts:
            if part is None:
                continue
            encoded = b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in part)
            s.sendall(b"*%d\r\n" % len(part) + encoded)
            reply = s.recv(65536)
        return reply


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Topology(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


T = TypeVar("T", bound=Topology)


@contextlib.contextmanager
def running(topology: T) -> Iterator[T]:
    """Started, and always closed (also when starting fails half-way)."""
    try:
        topology.start()
        yield topology
    finally:
        topology.close()


class SentinelSet:
    """One primary, one replica, three sentinels; data and sentinels are password-protected."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgw-sentinel-"))
        auth = ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD]
        self.primary = RedisServer(extra_args=auth)
        self.replica = RedisServer(extra_args=auth)
        self.sentinel_ports = unused_ports(3)
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def start(self) -> None:
        self.primary.start(password=DATA_PASSWORD)
        self.replica.extra_args += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start(password=DATA_PASSWORD)
        binary = _binary("redis-sentinel")
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"requirepass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel auth-pass {MASTER} {DATA_PASSWORD}\n"
                f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.sentinel_ports:
            # Ready once each sentinel knows the replica and the other two sentinels: only then
            # can a failover be asked for and agreed on.
            _wait(lambda port=port: self._knows_everyone(port), "the sentinels to meet")

    def _knows_everyone(self, port: int) -> bool:
        info = self.sentinel(port, "SENTINEL", "MASTER", MASTER)
        replicas = self.sentinel(port, "SENTINEL", "REPLICAS", MASTER)
        return (
            b"num-other-sentinels\r\n$1\r\n2\r\n" in info
            and b"master-link-status\r\n$2\r\nok" in replicas
        )

    def sentinel(self, port: int, *args: str) -> bytes:
        return _command(port, *args, password=SENTINEL_PASSWORD)

    def primary_port(self) -> int:
        reply = self.sentinel(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(reply.split(b"\r\n")[-2])

    def failover(self) -> None:
        reply = self.sentinel(self.sentinel_ports[0], "SENTINEL", "FAILOVER", MASTER)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"SENTINEL FAILOVER refused: {reply!r}")

    def close(self) -> None:
        for proc in self._sentinels:
            _stop(proc)
        for server in (self.replica, self.primary):
            with contextlib.suppress(Exception):
                server.resume()
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too."""
    chosen: list[int] = []
    while len(chosen) < count:
        for port in unused_ports(8):
            if port + 10000 > 65535 or port in chosen:
                continue
            with contextlib.closing(socket.socket()) as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            chosen.append(port)
            if len(chosen) == count:
                break
    return chosen


class RedisCluster:
    """A real 3-primary Redis Cluster without replicas, created with ``redis-cli --cluster``."""

    def __init__(self, primaries: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgw-cluster-"))
        self.ports = _cluster_ports(primaries)
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        server = _binary("redis-server")
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self._procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port in self.ports:
            _wait(lambda port=port: _command(port, "PING").startswith(b"+PONG"), "a cluster node")
        subprocess.run(
            [
                _binary("redis-cli"), "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        for port in self.ports:
            _wait(
                lambda port=port: b"cluster_state:ok" in _command(port, "CLUSTER", "INFO"),
                "the cluster to be ok",
            )

    def close(self) -> None:
        for proc in self._procs:
            _stop(proc)
        shutil.rmtree(self.dir, ignore_errors=True)
