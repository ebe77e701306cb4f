"""The one cost function (pure; no Django, so the relay imports it too).

Prices are USD per 1M tokens as exact decimals. A cost is
``(prompt_uncached × input + cached × cached_input + completion × output) / 1,000,000``
computed exactly and rounded once, *up*, to the nano-dollar (1e-9 USD). With prices given to
at most three decimals per 1M tokens (the catalog enforces it) no rounding ever happens, so a
cost equals tokens × price to the digit.

Redis works in integer nano-dollars; the ledger keeps the same value as a Decimal with nine
places.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

NANO = Decimal("0.000000001")
NANOS_PER_USD = 1_000_000_000
PER = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    version: int
    input: Decimal
    output: Decimal
    cached_input: Decimal

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Price:
        cached = data.get("cached_input")
        return cls(
            version=int(str(data["version"])),
            input=Decimal(str(data["input"])),
            output=Decimal(str(data["output"])),
            cached_input=Decimal(str(cached if cached is not None else data["input"])),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "input": str(self.input),
            "output": str(self.output),
            "cached_input": str(self.cached_input),
        }


def cost(
    price: Price, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> Decimal:
    """USD, exact, rounded up to the nano-dollar. ``prompt_tokens`` includes cached ones."""
    if min(prompt_tokens, completion_tokens, cached_tokens) < 0:
        raise ValueError("token counts cannot be negative")
    cached = min(cached_tokens, prompt_tokens)
    total = (
        (prompt_tokens - cached) * price.input
        + cached * price.cached_input
        + completion_tokens * price.output
    ) / PER
    return total.quantize(NANO, rounding=ROUND_CEILING)


def to_nanos(amount: Decimal) -> int:
    """Exact for ledger amounts; anything finer is rounded up (holds must never be short)."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def nanos_floor(amount: Decimal) -> int:
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_FLOOR))


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * NANO).quantize(NANO)
