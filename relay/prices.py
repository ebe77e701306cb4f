"""A model's price as integers, so the relay's per-request costs are integer arithmetic.

``billing.pricing.cost`` computes ``(uncached × input + cached × cached_input + completion ×
output) / 1,000,000`` exactly and rounds it once, up, to the nano-dollar. In nano-dollars that
is ``ceil(Σ tokens × price × 1000)``; with each ``price × 1000`` written as a fraction over one
common denominator it is ``ceil(Σ tokens × numerator / denominator)`` — the same rule in
integers (the test suite checks they agree exactly). Built once per model when first used.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

from billing.pricing import Price, from_nanos


class NanoPrice:
    __slots__ = ("cached_input", "denominator", "input", "output", "price")

    def __init__(self, price: Price) -> None:
        self.price = price
        per_token = [Fraction(p) * 1000 for p in (price.input, price.cached_input, price.output)]
        denominator = math.lcm(*(f.denominator for f in per_token))
        self.denominator = denominator
        self.input, self.cached_input, self.output = (
            f.numerator * (denominator // f.denominator) for f in per_token
        )

    def nanos(self, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """``to_nanos(cost(price, ...))``, exactly."""
        if prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
            raise ValueError("token counts cannot be negative")
        cached = cached_tokens if cached_tokens < prompt_tokens else prompt_tokens
        total = (
            (prompt_tokens - cached) * self.input
            + cached * self.cached_input
            + completion_tokens * self.output
        )
        if self.denominator == 1:
            return total
        return -(-total // self.denominator)


def amount(nanos: int) -> Decimal:
    """The Decimal ``cost`` returns for the same figure (nine places)."""
    return from_nanos(nanos)


def of_model(model: dict[str, Any]) -> NanoPrice:
    """The model's price, built on first use and kept on the catalog entry (a catalog reload
    replaces the entries, and with them these)."""
    cached = model.get("_nano_price")
    if cached is None:
        cached = model["_nano_price"] = NanoPrice(Price.from_dict(model["price"]))
    assert isinstance(cached, NanoPrice)
    return cached
