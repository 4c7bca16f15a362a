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
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_allowed(address: str, allowed: Sequence[IPNetwork]) -> bool:
    """May the gateway dial this address? Never the unspecified or a multicast address."""
    ip = _parse(address)
    if ip is None or ip.is_unspecified or ip.is_multicast:
        return False
    return any(ip.version == net.version and ip in net for net in allowed)


def is_trusted(peer_ip: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """Is this peer a load balancer whose forwarding headers are kept?"""
    if not peer_ip or not trusted:
        return False
    ip = _parse(peer_ip)
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
