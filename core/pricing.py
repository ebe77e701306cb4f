"""The one cost function (pure; no Django, so the relay imports it too).

Token prices are USD per 1M tokens as exact decimals; a model may also charge per input image
(``image``, USD each) and per second of input audio (``audio_second``, USD). A cost is

    (prompt_uncached × input + cached × cached_input + completion × output) / 1,000,000
    + images × image + audio_ms × audio_second / 1,000

computed exactly and rounded once, *up*, to the nano-dollar (1e-9 USD). With token prices given
to at most three decimals per 1M tokens and the others to at most nine and six decimals (the
catalog enforces it) no rounding ever happens, so a cost equals what was used × price to the
digit.

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
    image: Decimal = Decimal(0)  # per input image
    audio_second: Decimal = Decimal(0)  # per second of input audio

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Price:
        cached = data.get("cached_input")
        return cls(
            version=int(str(data["version"])),
            input=Decimal(str(data["input"])),
            output=Decimal(str(data["output"])),
            cached_input=Decimal(str(cached if cached is not None else data["input"])),
            image=Decimal(str(data.get("image") or 0)),
            audio_second=Decimal(str(data.get("audio_second") or 0)),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "input": str(self.input),
            "output": str(self.output),
            "cached_input": str(self.cached_input),
            "image": str(self.image),
            "audio_second": str(self.audio_second),
        }


def cost(
    price: Price,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    images: int = 0,
    audio_ms: int = 0,
) -> Decimal:
    """USD, exact, rounded up to the nano-dollar. ``prompt_tokens`` includes cached ones."""
    if min(prompt_tokens, completion_tokens, cached_tokens, images, audio_ms) < 0:
        raise ValueError("counts cannot be negative")
    cached = min(cached_tokens, prompt_tokens)
    total = (
        (prompt_tokens - cached) * price.input
        + cached * price.cached_input
        + completion_tokens * price.output
    ) / PER
    if images:
        total += images * price.image
    if audio_ms:
        total += audio_ms * price.audio_second / 1000
    return total.quantize(NANO, rounding=ROUND_CEILING)


def to_nanos(amount: Decimal) -> int:
    """Exact for ledger amounts; anything finer is rounded up (holds must never be short)."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def nanos_floor(amount: Decimal) -> int:
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_FLOOR))


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * NANO).quantize(NANO)
