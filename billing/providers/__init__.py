"""The payment providers, one module each, all built on :class:`base.PaymentProvider`."""

from __future__ import annotations

from functools import cache

from .base import PaymentProvider


@cache
def _registry() -> dict[str, PaymentProvider]:
    from .btcpay import BTCPay
    from .paypal import PayPal
    from .stripe import Stripe

    return {p.identifier: p for p in (Stripe(), PayPal(), BTCPay())}


def get_provider(identifier: str) -> PaymentProvider:
    try:
        return _registry()[identifier]
    except KeyError:
        raise LookupError(f"no payment provider {identifier!r}") from None


def all_providers() -> list[PaymentProvider]:
    return list(_registry().values())


def enabled_providers() -> list[PaymentProvider]:
    return [p for p in _registry().values() if p.is_enabled]
