"""Free loopback ports for servers the tests start."""

from __future__ import annotations

import contextlib
import socket


def unused_port() -> int:
    return unused_ports(1)[0]


def unused_ports(count: int) -> list[int]:
    """Distinct free ports: all are held open while they are chosen, so two calls in a row can
    never hand out the same port (which made a gateway refuse to start: edge = api port)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(contextlib.closing(socket.socket()))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
