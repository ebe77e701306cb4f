"""Per-key limits checked in the relay before anything is held: expiry, allowed models, allowed
client addresses. Rate limits and spend caps are counted in Redis by the reserve script."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from .errors import RelayError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(specs: list[str]) -> list[Network]:
    nets = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            continue  # the portal validates; a bad entry allows nothing
    return nets


def client_ip(scope: dict[str, Any], trusted: list[Network]) -> str | None:
    """The peer's address; behind trusted proxies, the right-most untrusted X-Forwarded-For
    entry (entries further left can be forged by the client)."""
    client = scope.get("client")
    peer: str | None = str(client[0]) if client else None
    if not peer or not trusted or not _within(peer, trusted):
        return peer
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            text: str = value.decode("latin-1")
            hops = [h.strip() for h in text.split(",") if h.strip()]
            for hop in reversed(hops):
                if not _within(hop, trusted):
                    return hop
    return peer


def _within(address: str, nets: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def check(record: dict[str, Any], model_id: str, ip: str | None, now: float | None = None) -> None:
    expires = record.get("expires")
    if expires is not None and (now or time.time()) >= expires:
        raise RelayError(
            401, "This API key has expired.", type="authentication_error", code="key_expired"
        )
    allowed_models = record.get("models")
    if allowed_models and model_id not in allowed_models:
        raise RelayError(
            403,
            f"This API key may not use the model '{model_id}'.",
            type="permission_error",
            param="model",
            code="model_not_allowed",
        )
    if record.get("ips"):
        nets = record.get("_nets")
        if nets is None:
            nets = record["_nets"] = networks(record["ips"])
        if ip is None or not _within(ip, nets):
            raise RelayError(
                403,
                "This API key may not be used from this address.",
                type="permission_error",
                code="ip_not_allowed",
            )
