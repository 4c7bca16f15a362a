"""WebSocket close codes: which ones may go on the wire, and how long a reason may be.

Shared by the aiohttp relay and the raw tunnel, so both map a side's ending to the same frame.
"""

from __future__ import annotations

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
NO_STATUS = 1005
"""A close frame without a status (aiohttp reports it as code 0)."""
ABNORMAL = 1006
"""The connection ended without a close frame."""

# RFC 6455 §7.4.1: these "MUST NOT be set as a status code in a Close control frame".
_RESERVED_CODES = {1005: 1000, 1006: 1011, 1015: 1011}
# A close frame's payload is at most 125 bytes, two of which are the code.
MAX_REASON_BYTES = 123


def valid_received_code(code: int) -> bool:
    """May a peer's close frame carry ``code``? RFC 6455 §7.4: the defined codes (1004 is
    reserved; 1005, 1006 and 1015 never go on the wire) and the 3000-4999 range. Any other code
    is a protocol error, answered with 1002 (Autobahn 7.9.*), not relayed or mapped."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def wire_close_code(code: int | None) -> int:
    """The code to put in a close frame for a side that ended with ``code``."""
    if code is None or code == 0:
        return NORMAL
    if code in _RESERVED_CODES:
        return _RESERVED_CODES[code]
    if code < 1000 or 1016 <= code < 3000 or code >= 5000 or code == 1004:
        return INTERNAL_ERROR
    return code


def wire_reason(reason: str) -> bytes:
    """``reason`` cut to what fits a close frame, never in the middle of a UTF-8 sequence
    (a split sequence is invalid UTF-8, which the peer must treat as a protocol error)."""
    raw = reason.encode("utf-8", errors="replace")
    if len(raw) <= MAX_REASON_BYTES:
        return raw
    return raw[:MAX_REASON_BYTES].decode("utf-8", errors="ignore").encode()
