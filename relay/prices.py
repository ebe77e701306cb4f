"""A model's price as integers, so the relay's per-request costs are integer arithmetic.

``core.pricing.cost`` computes ``(uncached × input + cached × cached_input + completion ×
output) / 1,000,000 + images × image + audio_ms × audio_second / 1,000`` exactly and rounds it
once, up, to the nano-dollar. In nano-dollars that is ``ceil(Σ count × nanos per unit)`` (a
token's price × 1000, an image's × 10⁹, a millisecond of audio's × 10⁶); with each written as a
fraction over one common denominator it is ``ceil(Σ count × numerator / denominator)`` — the
same rule in integers (the test suite checks they agree exactly). Built once per model when
first used.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

from core.pricing import Price, from_nanos


class NanoPrice:
    __slots__ = (
        "audio_ms",
        "cached_input",
        "denominator",
        "image",
        "input",
        "output",
        "price",
    )

    def __init__(self, price: Price) -> None:
        self.price = price
        per_unit = [
            Fraction(price.input) * 1000,
            Fraction(price.cached_input) * 1000,
            Fraction(price.output) * 1000,
            Fraction(price.image) * 1_000_000_000,
            Fraction(price.audio_second) * 1_000_000,
        ]
        denominator = math.lcm(*(f.denominator for f in per_unit))
        self.denominator = denominator
        self.input, self.cached_input, self.output, self.image, self.audio_ms = (
            f.numerator * (denominator // f.denominator) for f in per_unit
        )

    def nanos(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        images: int = 0,
        audio_ms: int = 0,
    ) -> int:
        """``to_nanos(cost(price, ...))``, exactly."""
        if prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
            raise ValueError("token counts cannot be negative")
        if images < 0 or audio_ms < 0:
            raise ValueError("counts cannot be negative")
        cached = cached_tokens if cached_tokens < prompt_tokens else prompt_tokens
        total = (
            (prompt_tokens - cached) * self.input
            + cached * self.cached_input
            + completion_tokens * self.output
            + images * self.image
            + audio_ms * self.audio_ms
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
