"""Money in the database and on the page. Amounts are exact decimals (USD), never floats."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# Every amount column: nine places, the nano-dollar the cost function rounds to.
MONEY: dict[str, Any] = {"max_digits": 20, "decimal_places": 9}


def usd(value: Any) -> str:
    """An exact amount: at least two decimals, more only where they are not zero (no float
    round trip, so $0.000012345 shows as it is charged)."""
    if value is None or value == "":
        return ""
    amount = Decimal(str(value))
    text = format(amount.normalize(), "f") if amount != 0 else "0"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
