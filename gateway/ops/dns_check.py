"""The TXT lookup behind custom-domain verification (dnspython's asyncio resolver).

``GATEWAY_DNS_NAMESERVERS`` names the servers (``host`` or ``host:port``, IPv6 as ``[addr]:port``);
unset, the system's resolver configuration is used. Every failure becomes a ``Lookup`` with an
``error``: the caller turns it into ``verificationError``, never into an exception.
"""

from __future__ import annotations

import logging

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from gateway.core.domains import Lookup

log = logging.getLogger("gateway.domains")


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``10.0.0.2`` -> (``10.0.0.2``, 53); ``127.0.0.1:5353``; ``[::1]:5353``; ``::1``."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest.removeprefix(":") or 53)
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, 53


class TxtResolver:
    def __init__(self, nameservers: list[str], timeout_s: float) -> None:
        try:
            self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration:
            log.warning("no DNS resolver configuration; custom domains cannot be verified")
            self._resolver = dns.asyncresolver.Resolver(configure=False)
        if nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in map(parse_nameserver, nameservers)
            ]
        self._resolver.lifetime = timeout_s
        self._resolver.timeout = timeout_s

    async def lookup(self, name: str) -> Lookup:
        try:
            answer = await self._resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Lookup(())
        except dns.exception.Timeout:
            return Lookup(error="timeout")
        except dns.exception.DNSException as exc:
            return Lookup(error=type(exc).__name__)
        values = []
        for record in answer:
            # A TXT record is a list of strings of at most 255 bytes; the value is their join.
            values.append(b"".join(record.strings).decode(errors="replace"))
        return Lookup(tuple(values))
