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
import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_FIELDS = 128
MAX_LINE_BYTES = 8 * 1024
MAX_CHUNK_SIZE_DIGITS = 16


class FramingError(ValueError):
    """The bytes are not a well-formed HTTP/1.1 message (the connection cannot be reused)."""


class HeadTooLarge(FramingError):
    """Over ``MAX_HEAD_BYTES``, ``MAX_FIELDS`` fields, or a line over ``MAX_LINE_BYTES``."""


# ChunkedScanner states.
_SIZE, _EXT, _SIZE_LF, _DATA, _DATA_CR, _DATA_LF = range(6)
_TRAILER, _TRAILER_LINE, _TRAILER_LF, _FINAL_LF, _DONE = range(6, 11)
_CR, _LF, _SEMICOLON = 0x0D, 0x0A, 0x3B
_FRAMING_TRAILERS = frozenset({b"content-length", b"transfer-encoding", b"host"})
"""Fields a trailer may not carry (RFC 9110 §6.5.1): a lenient parser behind the gateway that
merges trailers into the head would reframe or reroute the message (threat model S06)."""
_TRAILER_NAME_MAX = 20
"""Longer than any name in ``_FRAMING_TRAILERS``: past it, a trailer's name is not one of them."""
_HEX_VALUE: dict[int, int] = {ord(c): int(c, 16) for c in "0123456789abcdefABCDEF"}


class ChunkedScanner:
    """Incremental scanner of a chunked body (RFC 9112 §7.1). Feed it every byte of the body in
    order; ``feed`` returns -1 while the body goes on, else the offset in that piece just past
    the body's end (bytes after it belong to the next message). Chunk extensions and trailers
    are passed over, not interpreted. Strict: every line ends in CRLF (a bare LF is where
    smuggling starts), and the data of each chunk is followed by CRLF.

    Raises ``FramingError`` on a malformed size line, a size over 16 hex digits, a missing CRLF
    after chunk data, an over-long extension or trailer section, a trailer named
    Content-Length, Transfer-Encoding or Host, or bytes fed after the end.
    """

    __slots__ = ("_digits", "_line", "_name", "_remaining", "_size", "_state", "_trailer")

    def __init__(self) -> None:
        self._state = _SIZE
        self._size = 0
        self._digits = 0
        self._remaining = 0
        self._line = 0
        self._trailer = 0
        self._name: bytearray | None = None
        """The start of the current trailer line, until its name is known."""

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes | bytearray) -> int:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                # The bulk of a body: passed over by count, never looked at.
                take = min(self._remaining, n - i)
                self._remaining -= take
                i += take
                if not self._remaining:
                    self._state = _DATA_CR
            elif state in (_EXT, _TRAILER_LINE):
                i = self._skip_line(data, i, n)
            elif state == _DONE:
                raise FramingError("bytes after the end of a chunked body")
            else:
                self._byte(data[i])
                i += 1
                if self._state == _DONE:
                    return i
        return -1

    def _byte(self, byte: int) -> None:
        state = self._state
        if state == _SIZE:
            self._size_byte(byte)
        elif state == _TRAILER:
            # A trailer line starts here, unless this is the CR of the body's last CRLF.
            if byte == _CR:
                self._state = _FINAL_LF
            else:
                self._line = 1
                self._check_line_byte(byte)
                self._name = bytearray((byte,))
                self._state = _TRAILER_LINE
        elif byte != (_CR if state == _DATA_CR else _LF):
            raise FramingError("malformed chunked framing: CRLF expected")
        elif state == _DATA_CR:
            self._state = _DATA_LF
        elif state == _DATA_LF:
            self._state, self._size, self._digits = _SIZE, 0, 0
        elif state == _SIZE_LF:
            self._remaining = self._size
            self._state = _DATA if self._size else _TRAILER
        elif state == _TRAILER_LF:
            self._state = _TRAILER
        else:  # _FINAL_LF
            self._state = _DONE

    def _size_byte(self, byte: int) -> None:
        value = _HEX_VALUE.get(byte)
        if value is not None:
            self._digits += 1
            if self._digits > MAX_CHUNK_SIZE_DIGITS:
                raise FramingError("chunk size over 16 hex digits")
            self._size = self._size * 16 + value
        elif not self._digits:
            raise FramingError("malformed chunk size")
        elif byte == _SEMICOLON:
            self._state, self._line = _EXT, 1
        elif byte == _CR:
            self._state = _SIZE_LF
        else:
            raise FramingError("malformed chunk size")

    def _check_line_byte(self, byte: int) -> None:
        if byte == _LF or byte == 0:
            raise FramingError("malformed chunk extension or trailer")

    def _check_trailer_name(self, piece: bytes | bytearray, *, done: bool) -> None:
        assert self._name is not None
        self._name += piece[:_TRAILER_NAME_MAX]
        colon = self._name.find(b":")
        if colon < 0 and not done and len(self._name) < _TRAILER_NAME_MAX:
            return  # the name goes on in the next piece
        name = self._name[:colon] if colon >= 0 else self._name
        self._name = None
        if bytes(name).strip().lower() in _FRAMING_TRAILERS:
            raise FramingError("a trailer may not carry framing or routing fields")

    def _skip_line(self, data: bytes | bytearray, i: int, n: int) -> int:
        """Pass over an extension or a trailer line up to its CR: bounded, no bare LF or NUL."""
        stop = min(n, i + MAX_LINE_BYTES + 1 - self._line)
        cr = data.find(b"\r", i, stop)
        end = stop if cr < 0 else cr
        if data.find(b"\n", i, end) >= 0 or data.find(b"\0", i, end) >= 0:
            raise FramingError("malformed chunk extension or trailer")
        self._line += end - i
        if self._state == _TRAILER_LINE:
            if self._name is not None:
                self._check_trailer_name(data[i:end], done=cr >= 0)
            self._trailer += end - i + 2
            if self._trailer > MAX_HEAD_BYTES:
                raise FramingError("chunked trailers too large")
        if cr < 0:
            if self._line > MAX_LINE_BYTES:
                raise FramingError("chunk extension or trailer line too long")
            return end
        self._state = _SIZE_LF if self._state == _EXT else _TRAILER_LF
        return cr + 1


class BodyKind(enum.Enum):
    NONE = "none"
    """No body: HEAD, 1xx, 204, 304."""
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"
    """Until the upstream closes the connection (no length, not chunked)."""


@dataclass(slots=True)  # not frozen: built per response (frozen costs ~2 µs); never mutated
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
    at = buffer.find(b"\r\n\r\n", max(0, start))
    return -1 if at < 0 else at + 4


_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Control bytes but HTAB, and DEL: never inside a field value (obs-text 0x80-0xFF is allowed).
_VALUE_CTL = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"
_NO_BODY_STATUSES = frozenset({204, 304})
# Header lines as _field accepts them: a token name, a colon, a value without control bytes
# (HTAB and obs-text allowed), each line ended by CRLF.
_FIELD_LINES = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")


def parse_response_head(
    data: bytes | bytearray,
    *,
    request_method: str,
    max_size: int = MAX_HEAD_BYTES,
    max_fields: int = MAX_FIELDS,
    max_line: int = MAX_LINE_BYTES,
) -> ResponseHead:
    """Parse a complete response head (``data`` up to and including its blank line; bytes after
    it are ignored). Raises ``HeadTooLarge`` or ``FramingError``."""
    at = data.find(b"\r\n\r\n", 0, max_size + 4)
    end = -1 if at < 0 else at + 4
    if end < 0 or end > max_size:
        if end < 0 and len(data) < max_size:
            raise FramingError("incomplete response head")
        raise HeadTooLarge("response head too large")
    text = data[:end].decode("latin-1")  # lossless: the bytes are checked, then kept as they are
    first = text.find("\r\n")
    fields = text[first + 2 : end - 2]
    if end <= max_line and text.count("\r\n") - 2 <= max_fields and _FIELD_LINES.fullmatch(fields):
        # Every line valid, checked by one regular expression in C rather than line by line
        # (the line-by-line check cost 2.5x this per proxied request).
        status, version = _status_line(bytes(data[:first]), max_line)
        headers = []
        for line in fields[:-2].split("\r\n") if fields else ():
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t")))
    else:
        # Something is wrong, or the head is long: line by line, to say what.
        lines = bytes(data[: end - 4]).split(b"\r\n")
        if len(lines) - 1 > max_fields:
            raise HeadTooLarge("too many response header fields")
        status, version = _status_line(lines[0], max_line)
        headers = [_field(line, max_line) for line in lines[1:]]
    return _response_head(headers, status, version, request_method, end)


def _response_head(
    headers: list[tuple[str, str]],
    status: int,
    version: tuple[int, int],
    request_method: str,
    end: int,
) -> ResponseHead:
    body, length, connection = _framing(headers, status, request_method)
    if version == (1, 1):
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection and "close" not in connection
    return ResponseHead(
        status=status,
        version=version,
        headers=headers,
        body=body,
        content_length=length,
        keep_alive=keep_alive and body is not BodyKind.CLOSE,
        size=end,
    )


def _status_line(line: bytes, max_line: int) -> tuple[int, tuple[int, int]]:
    if len(line) > max_line:
        raise HeadTooLarge("status line too long")
    # "HTTP/1.1 200 OK", "HTTP/1.1 200 " or "HTTP/1.1 200": the reason phrase is never used.
    if len(line) < 12 or line[8] != 0x20 or (len(line) > 12 and line[12] != 0x20):
        raise FramingError("malformed status line")
    if line[:8] == b"HTTP/1.1":
        version = (1, 1)
    elif line[:8] == b"HTTP/1.0":
        version = (1, 0)
    else:
        raise FramingError("unsupported HTTP version in status line")
    code = line[9:12]
    if not code.isdigit() or code[0] not in b"12345":
        raise FramingError("malformed status code")
    if len(line.translate(None, _VALUE_CTL)) != len(line):
        raise FramingError("control byte in status line")
    return int(code), version


def _field(line: bytes, max_line: int) -> tuple[str, str]:
    if len(line) > max_line:
        raise HeadTooLarge("response header line too long")
    name, colon, value = line.partition(b":")
    if not colon or not name:
        # A line starting with whitespace is obs-fold (RFC 9112 §5.2), refused with the rest.
        raise FramingError("malformed response header line")
    if not _TCHAR.issuperset(name):
        raise FramingError("invalid response header name")
    value = value.strip(b" \t")
    if len(value.translate(None, _VALUE_CTL)) != len(value):
        raise FramingError("control byte in a response header value")
    return name.decode("ascii"), value.decode("latin-1")


def _framing(
    headers: list[tuple[str, str]], status: int, request_method: str
) -> tuple[BodyKind, int, set[str]]:
    """RFC 9112 §6.3, strictly: a response that frames its body two ways is refused."""
    lengths: list[str] = []
    codings: list[str] = []
    connection: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            lengths.append(value)
        elif lower == "transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(","))
        elif lower == "connection":
            connection.update(t.strip().lower() for t in value.split(","))
    if request_method == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
        return BodyKind.NONE, 0, connection
    if codings:
        if lengths:
            raise FramingError("response has both Content-Length and Transfer-Encoding")
        # Chunked last: the message ends where the chunks do. Any other coding last: the
        # body runs to the close of the connection.
        return (BodyKind.CHUNKED if codings[-1] == "chunked" else BodyKind.CLOSE), 0, connection
    if not lengths:
        return BodyKind.CLOSE, 0, connection
    values = {v.strip() for value in lengths for v in value.split(",")}
    if len(values) != 1:
        raise FramingError("conflicting Content-Length values")
    text = values.pop()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise FramingError("invalid Content-Length")
    length = int(text)
    return (BodyKind.LENGTH if length else BodyKind.NONE), length, connection
