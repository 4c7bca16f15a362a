"""Network policy: which addresses are sandbox targets, and which peers are trusted proxies.

Both questions unwrap IPv4-mapped IPv6 addresses first, so ``::ffff:169.254.169.254`` is judged
as the IPv4 address it carries (threat model R01).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(address: str) -> IPAddress | None:
    ip = _raw(address)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _within(ip: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)


def address_allowed(
    address: str, allowed: Sequence[IPNetwork], denied: Sequence[IPNetwork] = ()
) -> bool:
    """May the gateway dial this address? Never the unspecified or a multicast address, never
    one in ``denied`` (which wins over ``allowed``), in either spelling of an IPv4-mapped one."""
    ip = _parse(address)
    if ip is None or ip.is_unspecified or ip.is_multicast or address_denied(address, denied):
        return False
    return _within(ip, allowed)


def address_denied(address: str, denied: Sequence[IPNetwork]) -> bool:
    """Is this address in ``deny_target_nets``, as written or as the IPv4 address it maps?"""
    raw = _raw(address)
    if raw is None or not denied:
        return False
    ip = _parse(address)
    return _within(raw, denied) or (ip is not None and _within(ip, denied))


def _raw(address: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None


def is_trusted(peer_ip: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """Is this peer a load balancer whose forwarding headers are kept?"""
    if not peer_ip or not trusted:
        return False
    ip = _parse(peer_ip)
    return ip is not None and _within(ip, trusted)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
