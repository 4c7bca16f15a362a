"""The payload of a chunked body, for the one client that cannot read chunks: HTTP/1.0.

``core.http_framing.ChunkedScanner`` has already checked the framing of every byte given here
(and found where the body ends), so this only follows it: sizes, data, CRLFs, trailers.
"""

from __future__ import annotations

_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class Dechunker:
    __slots__ = ("_line", "_remaining", "_state")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""

    def payload(self, data: bytes) -> bytes:
        """The chunk data in ``data`` (a piece of the body, in order), without the framing."""
        out: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if self._state == _DATA:
                take = min(self._remaining, n - i)
                out.append(data[i : i + take])
                i += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                break
            line, self._line = self._line + data[i:end], b""
            i = end + 1
            if self._state == _SIZE:
                self._remaining = int(line.split(b";", 1)[0].strip() or b"0", 16)
                self._state = _DATA if self._remaining else _TRAILER
            elif self._state == _DATA_END:
                self._state = _SIZE
            # _TRAILER: trailer lines and the final blank line carry no payload
        return b"".join(out)
