"""Large transfers over a plain blocking socket.

The client is deliberately as cheap as possible (``recv_into`` one reused buffer, ``sendall`` of
one reused block, no HTTP library on the body path), because it shares the 2 cores with the
proxy under test: every cycle it spends is one the proxy does not get. It runs in a thread so
the event loop can sample the proxy's RSS meanwhile (socket calls release the GIL).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

BLOCK = 1 << 20
IO_TIMEOUT_S = 30.0  # a stalled transfer fails instead of hanging the run


@dataclass
class Transfer:
    body_bytes: int
    seconds: float
    note: str = ""

    @property
    def mib_s(self) -> float:
        return self.body_bytes / (1 << 20) / self.seconds


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers, and whatever body bytes came with the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        n = sock.recv_into(buf)
        if n == 0:
            raise ConnectionError("connection closed before the response head")
        data += bytes(buf[:n])
        if b"\r\n\r\n" not in data and len(data) > 65536:
            raise ConnectionError("response head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def download(port: int, host: str, size: int, deadline_s: float) -> Transfer:
    """GET /download?bytes=size; reads to EOF (``Connection: close``) and checks the length."""
    buf = bytearray(BLOCK)
    started = time.perf_counter()
    with _connect(port) as sock:
        sock.sendall(
            f"GET /download?bytes={size} HTTP/1.1\r\nHost: {host}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        status, headers, rest = _read_head(sock, buf)
        if status != 200:
            raise RuntimeError(f"download answered {status}")
        got = len(rest)
        while True:
            n = sock.recv_into(buf)
            if n == 0:
                break
            got += n
            if time.perf_counter() - started > deadline_s:
                raise TimeoutError(f"download slower than {deadline_s}s")
    elapsed = time.perf_counter() - started
    note = ""
    if "content-length" in headers:
        if got != int(headers["content-length"]) or got != size:
            raise RuntimeError(f"download short: {got} of {size} bytes")
    else:
        # Chunked: the count includes the chunk framing; the body itself is not verified.
        note = f"no Content-Length ({headers.get('transfer-encoding', '?')})"
        if got < size:
            raise RuntimeError(f"download short: {got} of {size} bytes")
    return Transfer(size, elapsed, note)


def upload(port: int, host: str, size: int, deadline_s: float) -> Transfer:
    """POST /upload with Content-Length; the app answers with the byte count it received."""
    block = memoryview(os.urandom(BLOCK))
    buf = bytearray(65536)
    started = time.perf_counter()
    with _connect(port) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n"
            "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n".encode()
        )
        left = size
        while left:
            piece = block[: min(BLOCK, left)]
            sock.sendall(piece)
            left -= len(piece)
            if time.perf_counter() - started > deadline_s:
                raise TimeoutError(f"upload slower than {deadline_s}s")
        status, headers, rest = _read_head(sock, buf)
        body = rest
        length = int(headers.get("content-length", "-1"))
        while len(body) < length:
            n = sock.recv_into(buf)
            if n == 0:
                break
            body += bytes(buf[:n])
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"upload answered {status}: {body[:200]!r}")
    received = json.loads(body)["bytes"]
    if received != size:
        raise RuntimeError(f"upload: the app received {received} of {size} bytes")
    return Transfer(size, elapsed)
