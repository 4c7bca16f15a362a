"""Named loggers and the access line.

The access line is one JSON object per request or WebSocket session. It never holds a query
string, a cookie, a token or a key: the path is logged without its query, and no header value is
logged at all except the User-Agent.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields

access = logging.getLogger("gateway.access")
edge = logging.getLogger("gateway.edge")


@dataclass(slots=True)
class AccessRecord:
    request_id: str
    method: str
    host: str
    path: str
    remote: str
    kind: str = "http"
    status: int = 0
    error_code: str | None = None
    workspace: str | None = None
    sandbox: str | None = None
    preview: str | None = None
    upstream: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    upstream_ms: float | None = None
    overhead_ms: float | None = None
    """Time in the gateway before the request went upstream: parse, route lookup, admission."""
    extra: dict[str, object] = field(default_factory=dict)


_FIELDS = tuple(f.name for f in fields(AccessRecord) if f.name != "extra")
# The same encoder json.dumps(..., separators=(",", ":")) builds on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def write_access(record: AccessRecord) -> None:
    if not access.isEnabledFor(logging.INFO):
        return
    if record.extra:
        data = asdict(record)
        data.update(data.pop("extra"))
    else:
        # The record's fields are plain values: the same dict as asdict(), which deep-copies
        # (docs/benchmarks.md), in the same order.
        data = {name: getattr(record, name) for name in _FIELDS}
    data = {k: v for k, v in data.items() if v is not None}
    data["time"] = _utc_time()
    access.info(_encode(data))


def _utc_time() -> str:
    # time.gmtime() reads the current second, floored: format each second once, not per line.
    return _format_second(int(time.time()))


@functools.lru_cache(maxsize=1)
def _format_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def configure(level: str, access_enabled: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO if access_enabled else logging.CRITICAL)
    root = logging.getLogger("gateway")
    if not root.handlers:
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(err)
    root.setLevel(level.upper())
    # aiohttp's own access logger writes the query string and the Referer (threat model L03).
    logging.getLogger("aiohttp.access").disabled = True


def random_ids() -> Iterator[str]:
    """16-hex-digit request ids from a block of 512 drawn at once, rather than one ``secrets``
    call (a getrandom syscall) per request (docs/benchmarks.md). Each id is still 8 bytes from
    the CSPRNG, used once."""
    while True:
        block = secrets.token_hex(8 * 512)
        for start in range(0, len(block), 16):
            yield block[start : start + 16]
