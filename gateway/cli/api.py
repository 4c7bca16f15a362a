"""``python -m gateway api ...``: the control API from a shell, for operators.

    python -m gateway api sandboxes list
    python -m gateway api sandboxes create sb --host 10.0.0.7 --ttl 1d
    python -m gateway api previews create sb web --port 3000 --public
    python -m gateway api tokens create sb web --ttl 2h
    python -m gateway api --json previews list sb

It talks to a running gateway over HTTP (``--url`` or ``GATEWAY_API_URL``, default
``http://127.0.0.1:8081``; ``--key`` or ``GATEWAY_API_KEY``), like any other client: it has no
access to the store. Tables for people; ``--json`` prints the API's own JSON for scripts.
Exit status: 0 done, 1 the API refused (its message on stderr), 2 bad usage or unreachable.

Uses only the standard library (urllib), so it also runs where aiohttp's client would need an
event loop for one request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.cli import api_domains
from gateway.core.timeparse import format_timestamp, parse_ttl

DEFAULT_URL = "http://127.0.0.1:8081"
TIMEOUT_S = 30.0


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else None
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, url: str, key: str) -> None:
        base = url.rstrip("/")
        self.base = base if base.endswith("/v0") else base + "/v0"
        self.key = key

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - operator's URL
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiFailure(exc.code, parsed) from None


def _q(name: str) -> str:
    """A name as a path segment (the API decodes it)."""
    return urllib.parse.quote(name, safe="")


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {what} must be KEY=VALUE, got {value!r}")
        result[key] = val
    return result


def _lifetime(args: argparse.Namespace) -> dict[str, str]:
    spec = {}
    if args.ttl:
        spec["ttl"] = args.ttl
    if args.expires:
        spec["expires"] = args.expires
    return spec


# ── actions: each returns the API's JSON ─────────────────────────────────────────────────────
def sandboxes_list(c: Client, a: argparse.Namespace) -> Any:
    return c.call("GET", "/sandboxes")


def sandboxes_get(c: Client, a: argparse.Namespace) -> Any:
    return c.call("GET", f"/sandboxes/{_q(a.sandbox)}")


def sandboxes_create(c: Client, a: argparse.Namespace) -> Any:
    metadata: dict[str, Any] = {"name": a.sandbox}
    if a.label:
        metadata["labels"] = _pairs(a.label, "--label")
    spec: dict[str, Any] = {"target": {"host": a.host}, **_lifetime(a)}
    if a.wake_url or a.wake_timeout is not None:
        lifecycle: dict[str, Any] = {"wakeUrl": a.wake_url}
        if a.wake_timeout is not None:
            lifecycle["wakeTimeoutS"] = a.wake_timeout
        spec["lifecycle"] = lifecycle
    return c.call("POST", "/sandboxes", {"metadata": metadata, "spec": spec})


def sandboxes_state(c: Client, a: argparse.Namespace) -> Any:
    return c.call("POST", f"/sandboxes/{_q(a.sandbox)}/state", {"status": a.status})


def sandboxes_delete(c: Client, a: argparse.Namespace) -> Any:
    return c.call("DELETE", f"/sandboxes/{_q(a.sandbox)}")


def previews_list(c: Client, a: argparse.Namespace) -> Any:
    return c.call("GET", f"/sandboxes/{_q(a.sandbox)}/previews")


def previews_get(c: Client, a: argparse.Namespace) -> Any:
    return c.call("GET", f"/sandboxes/{_q(a.sandbox)}/previews/{_q(a.preview)}")


def previews_create(c: Client, a: argparse.Namespace) -> Any:
    spec: dict[str, Any] = {"port": a.port, "public": a.public, **_lifetime(a)}
    if a.prefix_url:
        spec["prefixUrl"] = a.prefix_url
    if a.custom_domain:
        spec["customDomain"] = a.custom_domain
    if a.request_header:
        spec["requestHeaders"] = _pairs(a.request_header, "--request-header")
    if a.response_header:
        spec["responseHeaders"] = _pairs(a.response_header, "--response-header")
    body = {"metadata": {"name": a.preview}, "spec": spec}
    query = {"force": "true"} if a.force else None
    return c.call("POST", f"/sandboxes/{_q(a.sandbox)}/previews", body, query)


def previews_delete(c: Client, a: argparse.Namespace) -> Any:
    return c.call("DELETE", f"/sandboxes/{_q(a.sandbox)}/previews/{_q(a.preview)}")


def tokens_list(c: Client, a: argparse.Namespace) -> Any:
    return c.call("GET", f"/sandboxes/{_q(a.sandbox)}/previews/{_q(a.preview)}/tokens")


def tokens_create(c: Client, a: argparse.Namespace) -> Any:
    if a.expires_at:
        expires_at = a.expires_at
    else:
        try:
            expires_at = format_timestamp(datetime.now(UTC) + parse_ttl(a.ttl))
        except ValueError as exc:
            raise SystemExit(f"error: --ttl: {exc}") from None
    body = {"metadata": {"name": a.name or ""}, "spec": {"expiresAt": expires_at}}
    return c.call("POST", f"/sandboxes/{_q(a.sandbox)}/previews/{_q(a.preview)}/tokens", body)


def tokens_delete(c: Client, a: argparse.Namespace) -> Any:
    path = f"/sandboxes/{_q(a.sandbox)}/previews/{_q(a.preview)}/tokens/{_q(a.token)}"
    return c.call("DELETE", path)


# ── tables ──────────────────────────────────────────────────────────────────────────────────
Column = tuple[str, Callable[[dict[str, Any]], object]]


def _get(*path: str) -> Callable[[dict[str, Any]], object]:
    def read(item: dict[str, Any]) -> object:
        value: Any = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return "-" if value is None or value == "" else value

    return read


SANDBOX_COLUMNS: list[Column] = [
    ("NAME", _get("metadata", "name")),
    ("TARGET", _get("spec", "target", "host")),
    ("STATUS", _get("status")),
    ("STATE", _get("state")),
    ("EXPIRES", _get("spec", "expires")),
    ("CREATED", _get("metadata", "createdAt")),
]
PREVIEW_COLUMNS: list[Column] = [
    ("NAME", _get("metadata", "name")),
    ("PORT", _get("spec", "port")),
    ("PUBLIC", _get("spec", "public")),
    ("URL", _get("spec", "url")),
    ("EXPIRES", lambda p: p["spec"].get("expires") or p["spec"].get("ttl") or "-"),
]
TOKEN_COLUMNS: list[Column] = [
    ("NAME", _get("metadata", "name")),
    ("EXPIRES AT", _get("spec", "expiresAt")),
    ("EXPIRED", _get("spec", "expired")),
]


def table(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    def text(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    cells = [[name for name, _ in columns]]
    cells += [[text(read(row)) for _, read in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def render(kind: str, action: str, result: Any) -> str:
    """What a person reads: a table of what was listed, created, read or deleted."""
    if kind == "tokens" and action == "delete":
        return str(result.get("message", "deleted"))
    columns = {
        "sandboxes": SANDBOX_COLUMNS,
        "previews": PREVIEW_COLUMNS,
        "domains": api_domains.columns(_get),
    }.get(kind, TOKEN_COLUMNS)
    rows = result if isinstance(result, list) else [result]
    if isinstance(result, list) and not result:
        return f"no {kind}"
    out = table(rows, columns)
    if kind == "tokens" and action == "create":
        # The only time a person needs the secret: show it, once, on its own line.
        out += f"\n\ntoken: {result['spec']['token']}"
    if kind == "domains" and action != "list":
        out += "\n\n" + api_domains.txt_lines(result)
    return out.rstrip()


# ── argument parsing ────────────────────────────────────────────────────────────────────────
def _lifetime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ttl", help="time to live: 30m, 2h, 1d, 1w")
    p.add_argument("--expires", help="absolute expiry, ISO 8601")


def _sandbox_commands(kinds: Any) -> None:  # argparse's subparsers
    sb = kinds.add_parser("sandboxes", help="sandboxes: where the gateway dials")
    sba = sb.add_subparsers(dest="action", required=True)
    sba.add_parser("list").set_defaults(run=sandboxes_list)
    p = sba.add_parser("get")
    p.add_argument("sandbox")
    p.set_defaults(run=sandboxes_get)
    p = sba.add_parser("create")
    p.add_argument("sandbox")
    p.add_argument("--host", required=True, help="IP address or DNS name of the sandbox")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p.add_argument("--wake-url", help="orchestrator endpoint called to wake it from standby")
    p.add_argument("--wake-timeout", type=int, metavar="S", help="hold requests this long")
    _lifetime_args(p)
    p.set_defaults(run=sandboxes_create)
    p = sba.add_parser("state", help="tell the gateway it went to standby or runs again")
    p.add_argument("sandbox")
    p.add_argument("status", choices=["standby", "running"])
    p.set_defaults(run=sandboxes_state)
    p = sba.add_parser("delete", help="also deletes its previews and their tokens")
    p.add_argument("sandbox")
    p.set_defaults(run=sandboxes_delete)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m gateway api",
        description="Manage sandboxes, previews, tokens and custom domains on a running gateway.",
    )
    root.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_API_URL", DEFAULT_URL),
        help=f"control API base URL (env GATEWAY_API_URL; default {DEFAULT_URL})",
    )
    root.add_argument(
        "--key", default=os.environ.get("GATEWAY_API_KEY"), help="API key (env GATEWAY_API_KEY)"
    )
    root.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    kinds = root.add_subparsers(
        dest="kind", required=True, metavar="{sandboxes,previews,tokens,domains}"
    )
    _sandbox_commands(kinds)
    _preview_commands(kinds)
    _token_commands(kinds)
    api_domains.add_parser(kinds)
    return root


def _preview_commands(kinds: Any) -> None:  # argparse's subparsers
    pv = kinds.add_parser("previews", help="previews: one URL per sandbox port")
    pva = pv.add_subparsers(dest="action", required=True)
    p = pva.add_parser("list")
    p.add_argument("sandbox")
    p.set_defaults(run=previews_list)
    for action, run in (("get", previews_get), ("delete", previews_delete)):
        p = pva.add_parser(action)
        p.add_argument("sandbox")
        p.add_argument("preview")
        p.set_defaults(run=run)
    p = pva.add_parser("create")
    p.add_argument("sandbox")
    p.add_argument("preview")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--public", action="store_true", help="no token needed (default: private)")
    p.add_argument("--prefix-url", help="serve at <prefix>-<workspace>.<preview domain>")
    p.add_argument("--custom-domain", help="also serve at this name of a registered domain")
    p.add_argument("--request-header", action="append", metavar="NAME=VALUE")
    p.add_argument("--response-header", action="append", metavar="NAME=VALUE")
    p.add_argument("--force", action="store_true", help="replace a preview with the same prefix")
    _lifetime_args(p)
    p.set_defaults(run=previews_create)


def _token_commands(kinds: Any) -> None:  # argparse's subparsers
    tk = kinds.add_parser("tokens", help="tokens: access to private previews")
    tka = tk.add_subparsers(dest="action", required=True)
    p = tka.add_parser("list")
    p.add_argument("sandbox")
    p.add_argument("preview")
    p.set_defaults(run=tokens_list)
    p = tka.add_parser("create")
    p.add_argument("sandbox")
    p.add_argument("preview")
    p.add_argument("--name", help="default: made up by the gateway")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--ttl", default="1h", help="lifetime (default 1h)")
    when.add_argument("--expires-at", help="absolute expiry, ISO 8601")
    p.set_defaults(run=tokens_create)
    p = tka.add_parser("delete")
    p.add_argument("sandbox")
    p.add_argument("preview")
    p.add_argument("token")
    p.set_defaults(run=tokens_delete)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.key:
        print("error: an API key is required (--key or GATEWAY_API_KEY)", file=sys.stderr)
        return 2
    client = Client(args.url, args.key)
    try:
        result = args.run(client, args)
    except ApiFailure as exc:
        if args.json:
            print(json.dumps(exc.body), file=sys.stderr)
        else:
            print(f"error: {exc} (HTTP {exc.status})", file=sys.stderr)
        return 1
    except OSError as exc:  # URLError, refused, timed out
        reason = getattr(exc, "reason", exc)
        print(f"error: cannot reach {client.base}: {reason}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else render(args.kind, args.action, result))
    return 0
