"""Where a request came from, coarsened: the IPv4 /24 or IPv6 /48 network, never the address
itself. One rule for the relay (a key's "last used from") and the portal (the audit log's
network), so that the two figures a user compares are cut the same way."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)
def coarse(address: str | None) -> str:
    if not address:
        return ""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        return ""
    # An IPv4 client seen through a dual-stack socket (::ffff:203.0.113.9): its /48 would be
    # every IPv4 address at once.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
