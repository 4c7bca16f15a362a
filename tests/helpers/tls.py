"""A test CA (trustme) and TLS clients for the edge's HTTPS listener: which certificate a
handshake got, and one request over it, on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trustme

from tests.helpers.raw_http import RawResponse, read_response, request_bytes

PREVIEW_WILDCARD = "*.local.preview.localhost"
"""Random preview hostnames are ``<id>.local.preview.localhost`` in the test settings."""


class TestCA:
    __test__ = False  # not a test class, despite the name

    def __init__(self, root: Path) -> None:
        self.ca = trustme.CA()
        self.root = root
        self.ca_pem = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))

    def issue(self, directory: Path, stem: str, *names: str) -> tuple[Path, Path]:
        """``<stem>.pem`` (chain) and ``<stem>.key`` in ``directory``, for ``names``. Written
        to a temporary file and renamed, as an operator's tooling (certbot, cert-manager) does."""
        directory.mkdir(parents=True, exist_ok=True)
        cert = self.ca.issue_cert(*names)
        pem, key = directory / f"{stem}.pem", directory / f"{stem}.key"
        for path, blobs in ((key, [cert.private_key_pem]), (pem, cert.cert_chain_pems)):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(b"".join(blob.bytes() for blob in blobs))
            tmp.replace(path)
        return pem, key

    def client_context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        context.check_hostname = check_hostname
        return context


@contextlib.asynccontextmanager
async def tls_connect(
    port: int, server_name: str, context: ssl.SSLContext
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_name
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def served_names(writer: asyncio.StreamWriter) -> set[str]:
    """The DNS names of the certificate the server presented on this connection."""
    cert: dict[str, Any] = writer.get_extra_info("peercert")
    return {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


def served_serial(writer: asyncio.StreamWriter) -> str:
    return str(writer.get_extra_info("peercert")["serialNumber"])


async def tls_get(
    port: int, server_name: str, context: ssl.SSLContext, path: str = "/"
) -> tuple[set[str], RawResponse]:
    """A handshake with SNI ``server_name``, then GET ``path`` for that host."""
    async with tls_connect(port, server_name, context) as (reader, writer):
        writer.write(request_bytes(server_name, path))
        await writer.drain()
        return served_names(writer), await read_response(reader)
