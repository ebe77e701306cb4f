"""Bring your own key (BYOK): an account's own provider keys, as the portal publishes them and
the relay reads them. Pure: no Django, no I/O.

An account keeps at most one credential per provider, each with a mode:

- ``prioritised``: a request for a model that provider serves tries the provider's routes with
  the account's key first, then the operator's routes as usual;
- ``always``: such a request is served only with the account's key; if that fails, the error
  is the answer (the operator's keys are never used for it).

A request served with the account's key is billed a fee, ``TP_BYOK_FEE_PERCENT`` per cent of
the list price, instead of the price (:func:`core.pricing.cost`'s ``percent``).

In Redis (``state.byok(account)``) the credentials are one JSON object, provider slug ->
``{"id", "mode", "key_encrypted"}``: the key stays a Fernet token (``core.secrets``) there, and
only a relay opens it, in memory.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PRIORITISED = "prioritised"
ALWAYS = "always"
MODES = (PRIORITISED, ALWAYS)

DEFAULT_FEE_PERCENT = Decimal(5)


def fee_percent(value: str | None) -> Decimal:
    """``TP_BYOK_FEE_PERCENT`` as an exact Decimal in [0, 100] (empty: the default, 5)."""
    if value is None or not value.strip():
        return DEFAULT_FEE_PERCENT
    try:
        percent = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"TP_BYOK_FEE_PERCENT must be a number, got {value!r}") from None
    if not percent.is_finite() or not Decimal(0) <= percent <= Decimal(100):
        raise ValueError(f"TP_BYOK_FEE_PERCENT must be between 0 and 100, got {value!r}")
    return percent


def last_four(secret: str) -> str:
    """What pages show of a provider key: its last four characters, never more (a key shorter
    than 12 characters shows none, so that a short key is not half shown)."""
    secret = secret.strip()
    return secret[-4:] if len(secret) >= 12 else ""
