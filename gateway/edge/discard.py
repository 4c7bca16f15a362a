"""The rest of a request body that its answer did not need (an error page, a preflight): read
and dropped, so that a keep-alive connection can serve its next request. Only small ones are
worth it; over ``DISCARD_MAX`` the connection closes instead.
"""

from __future__ import annotations

from gateway.core.http_framing import ChunkedScanner, FramingError

DISCARD_MAX = 0x100000


class Discard:
    """Reads and drops the rest of a body the response did not need."""

    def __init__(self, left: int, chunked: bool) -> None:
        self.left = left
        self.scanner = ChunkedScanner() if chunked else None
        self.body_done = False
        self.failed = False

    def take_body(self, data: bytes | bytearray) -> int:
        if self.scanner is None:
            n = min(self.left, len(data))
            self.left -= n
            self.body_done = not self.left
            return n
        try:
            end = self.scanner.feed(data)
        except FramingError:
            self.failed = True
            return len(data)
        self.body_done = end >= 0
        return len(data) if end < 0 else end

    def client_pause_writing(self) -> None:
        pass

    def client_resume_writing(self) -> None:
        pass

    def client_lost(self) -> None:
        pass
