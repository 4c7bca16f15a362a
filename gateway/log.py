"""Named loggers and the access line.

The access line is one JSON object per request or WebSocket session. It never holds a query
string, a cookie, a token or a key: the path is logged without its query, and no header value is
logged at all except the User-Agent.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

access = logging.getLogger("gateway.access")
edge = logging.getLogger("gateway.edge")
control = logging.getLogger("gateway.control")


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


def write_access(record: AccessRecord) -> None:
    if not access.isEnabledFor(logging.INFO):
        return
    data = asdict(record)
    extra = data.pop("extra")
    data.update(extra)
    data = {k: v for k, v in data.items() if v is not None}
    data["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    access.info(json.dumps(data, separators=(",", ":")))


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
