"""HTTP/1.1 framing on raw bytes for the protocol edge: where a chunked body ends, and a strict
parser for the untrusted response head a sandbox sends. Pure: no I/O.

A stop-gap for ``gateway/core/http_framing.py`` (H1b's, not merged when this was written): the
exchange needs only ``ChunkScanner`` and ``parse_response_head``, and switches to the core module
once it lands.
"""

from __future__ import annotations

import re

MAX_CHUNK_SIZE_DIGITS = 16
"""More hex digits than a 64-bit length holds: refused (400 from clients, 502 from sandboxes)."""
_MAX_SIZE_LINE = 4096
_MAX_TRAILERS = 0x10000
MAX_RESPONSE_HEAD = 0x10000
MAX_RESPONSE_FIELDS = 256

_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(rb"^HTTP/1\.([01]) ([1-9][0-9]{2})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?$")


class FramingError(Exception):
    """The bytes are not valid HTTP/1.1 framing."""


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkScanner:
    """Follows a chunked body through raw bytes without copying them, so it can be relayed as
    it was framed. ``feed`` returns the offset just past the body's end, or -1 when more bytes
    are needed; ``spans``, when given, collects the (start, end) of each piece of payload (to
    unframe the body for an HTTP/1.0 client)."""

    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = bytearray()
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(
        self, data: bytes | bytearray, start: int = 0, spans: list[tuple[int, int]] | None = None
    ) -> int:
        i, n = start, len(data)
        while i < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - i)
                if spans is not None:
                    spans.append((i, i + take))
                i += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:n]
                self._check_line_length()
                return -1
            self._line += data[i:end]
            i = end + 1
            line = bytes(self._line)
            self._line.clear()
            self._check_line_length()
            if not line.endswith(b"\r"):
                raise FramingError("bare LF in chunked framing")
            line = line[:-1]
            if state == _SIZE:
                self._remaining = _chunk_size(line)
                self._state = _DATA if self._remaining else _TRAILER
            elif state == _DATA_END:
                if line:
                    raise FramingError("chunk data longer than its size")
                self._state = _SIZE
            elif not line:
                self._state = _DONE
                return i
            else:
                self._trailer_bytes += len(line)
                if self._trailer_bytes > _MAX_TRAILERS:
                    raise FramingError("trailers too large")
        return -1

    def _check_line_length(self) -> None:
        if len(self._line) > _MAX_SIZE_LINE:
            raise FramingError("chunk size line too long")


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].rstrip(b" \t")
    if not digits or len(digits) > MAX_CHUNK_SIZE_DIGITS or not _HEX.issuperset(digits):
        raise FramingError("invalid chunk size")
    return int(digits, 16)


class ResponseHead:
    __slots__ = ("chunked", "close", "content_length", "headers", "status", "version")

    def __init__(
        self,
        status: int,
        version: int,
        headers: list[tuple[str, str]],
        content_length: int | None,
        chunked: bool,
        close: bool,
    ) -> None:
        self.status = status
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.close = close


def parse_response_head(raw: bytes) -> ResponseHead:
    """``raw`` is the head without its final CRLFCRLF. Anything not plainly valid raises:
    the sandbox is untrusted and its framing decides where the client's next response starts."""
    lines = raw.split(b"\r\n")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise FramingError("invalid status line")
    if len(lines) > MAX_RESPONSE_FIELDS + 1:
        raise FramingError("too many header fields")
    headers: list[tuple[str, str]] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise FramingError("invalid header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise FramingError("control character in a header value")
        lower = name.lower()
        if lower == b"content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        elif lower == b"transfer-encoding":
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
        elif lower == b"connection":
            close = close or b"close" in (t.strip(b" \t").lower() for t in value.split(b","))
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    status, version = int(match.group(2)), int(match.group(1))
    if codings and (codings != [b"chunked"] or lengths):
        raise FramingError("unsupported or ambiguous Transfer-Encoding")
    length = None
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit() or len(next(iter(lengths))) > 18:
            raise FramingError("invalid Content-Length")
        length = int(next(iter(lengths)))
    return ResponseHead(status, version, headers, length, bool(codings), close or version == 0)
