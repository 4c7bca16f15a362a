"""HTTP/1.1 message framing from raw bytes. Pure: no I/O.

Bodies are relayed as the sender framed them, never decoded or re-framed. These scanners only
find where a message ends, so the relay knows when a response (or a chunked request body) is
complete and a keep-alive connection can be reused:

- ``ChunkedScanner`` is fed the bytes of a chunked body as they arrive and reports the offset,
  in the last piece fed, at which the body (last chunk and trailers included) ends.
- ``parse_response_head`` reads a status line and headers strictly and says how the body that
  follows is framed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_FIELDS = 128
MAX_LINE_BYTES = 8 * 1024
MAX_CHUNK_SIZE_DIGITS = 16


class FramingError(ValueError):
    """The bytes are not a well-formed HTTP/1.1 message (the connection cannot be reused)."""


class HeadTooLarge(FramingError):
    """Over ``MAX_HEAD_BYTES``, ``MAX_FIELDS`` fields, or a line over ``MAX_LINE_BYTES``."""


class ChunkedScanner:
    """Incremental scanner of a chunked body (RFC 9112 §7.1). Feed it every byte of the body in
    order; ``feed`` returns -1 while the body goes on, else the offset in that piece just past
    the body's end (bytes after it belong to the next message). Chunk extensions and trailers
    are passed over, not interpreted.

    Raises ``FramingError`` on a malformed size line, a size over 16 hex digits, a missing CRLF
    after chunk data, or an over-long extension/trailer line.
    """

    __slots__ = ()

    def feed(self, data: bytes) -> int:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        raise NotImplementedError


class BodyKind(enum.Enum):
    NONE = "none"
    """No body: HEAD, 1xx, 204, 304."""
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"
    """Until the upstream closes the connection (no length, not chunked)."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    version: tuple[int, int]
    headers: list[tuple[str, str]]
    """As received (names' case kept), obs-fold refused."""
    body: BodyKind
    content_length: int
    """When ``body`` is LENGTH."""
    keep_alive: bool
    """The connection may carry another request after this response's body."""
    size: int
    """Bytes the head took, its final blank line included."""


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """The offset just past the blank line that ends a head in ``buffer``, or -1. ``start``:
    where to resume searching (a previous call's buffer length, minus 3)."""
    raise NotImplementedError


def parse_response_head(data: bytes | bytearray, *, request_method: str) -> ResponseHead:
    """Parse a complete response head (``data`` up to and including its blank line; bytes after
    it are ignored). Raises ``HeadTooLarge`` or ``FramingError``."""
    raise NotImplementedError
