"""The one cost function (pure; no Django, so the relay imports it too).

Token prices are USD per 1M tokens as exact decimals: ``input``, ``output``, ``cached_input``
(prompt tokens read from the provider's cache), ``cache_write`` (written to a 5-minute cache),
``cache_write_1h`` (written to a 1-hour cache), ``reasoning`` (output tokens spent thinking),
``input_audio`` and ``output_audio`` (audio tokens). A price left empty (``None``) falls back:
``cached_input``, ``cache_write`` and ``input_audio`` to ``input``; ``cache_write_1h`` to
``cache_write``; ``reasoning`` and ``output_audio`` to ``output``. A model may also charge per
request (``request``, USD), per input image (``image``, USD each) and per second of input audio
(``audio_second``, USD).

Counts follow OpenAI's convention: ``prompt_tokens`` is the whole prompt, *including* its
cached, cache-written and audio tokens; ``completion_tokens`` the whole output, *including*
its reasoning and audio tokens. Each part is taken from what is left of its whole, in the
order of the arguments (cached, 5-minute writes, 1-hour writes, audio; reasoning, audio), so
the parts never exceed the whole and no token is billed twice. A cost is

    (Σ prompt part × its price + Σ completion part × its price) / 1,000,000
    + requests × request + images × image + audio_ms × audio_second / 1,000

computed exactly and rounded once, *up*, to the nano-dollar (1e-9 USD). With token prices given
to at most six decimals per 1M tokens and the others to at most nine and six decimals (the
catalog enforces it) no rounding beyond the nano-dollar happens, so a cost equals what was used
× price to the digit.

Long-context tiers: a tier applies to the whole request when the prompt has more than its
``above`` tokens (the highest such tier wins); the per-token prices it names replace the base
ones, the others are the base's, and the fallbacks above are then applied within the tier (a
tier that raises ``input`` raises an empty ``cache_write`` with it).

A request served with the account's own provider key (BYOK, ``core.byok``) pays ``percent``
per cent of that list price: the exact sum above times ``percent / 100``, rounded once, up,
by the same rule (never the rounded cost scaled and rounded again).

Redis works in integer nano-dollars; the ledger keeps the same value as a Decimal with nine
places.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any

NANO = Decimal("0.000000001")
NANOS_PER_USD = 1_000_000_000
PER = Decimal(1_000_000)
HUNDRED = Decimal(100)
ZERO = Decimal(0)

# The per-token prices, in the order Rates keeps them.
TOKEN_PRICES = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "input_audio",
    "output_audio",
)
# A per-token price left empty costs what this one does.
FALLBACKS = {
    "cached_input": "input",
    "cache_write": "input",
    "cache_write_1h": "cache_write",
    "reasoning": "output",
    "input_audio": "input",
    "output_audio": "output",
}


def _decimal(value: object) -> Decimal:
    return Decimal(str(value))


def _optional(value: object) -> Decimal | None:
    return None if value is None or value == "" else _decimal(value)


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-token prices (USD per 1M) with every fallback applied: what one request pays."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal
    input_audio: Decimal
    output_audio: Decimal


@dataclass(frozen=True, slots=True)
class Tier:
    """Prices for a whole request whose prompt has more than ``above`` tokens; a price left
    ``None`` is the base price's."""

    above: int
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    input_audio: Decimal | None = None
    output_audio: Decimal | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tier:
        above = int(str(data["above"]))
        if above < 0:
            raise ValueError("a tier's prompt size cannot be negative")
        return cls(above, **{name: _optional(data.get(name)) for name in TOKEN_PRICES})

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"above": self.above}
        for name in TOKEN_PRICES:
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        return out


@dataclass(frozen=True, slots=True)
class Price:
    version: int
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    image: Decimal = Decimal(0)  # per input image
    audio_second: Decimal = Decimal(0)  # per second of input audio
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    input_audio: Decimal | None = None
    output_audio: Decimal | None = None
    request: Decimal = Decimal(0)  # per billed request
    tiers: tuple[Tier, ...] = ()  # by ``above``, lowest first

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.tiers, key=lambda t: t.above))
        if ordered != self.tiers:
            object.__setattr__(self, "tiers", ordered)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Price:
        tiers = data.get("tiers") or ()
        return cls(
            version=int(str(data["version"])),
            input=_decimal(data["input"]),
            output=_decimal(data["output"]),
            cached_input=_optional(data.get("cached_input")),
            image=_decimal(data.get("image") or 0),
            audio_second=_decimal(data.get("audio_second") or 0),
            cache_write=_optional(data.get("cache_write")),
            cache_write_1h=_optional(data.get("cache_write_1h")),
            reasoning=_optional(data.get("reasoning")),
            input_audio=_optional(data.get("input_audio")),
            output_audio=_optional(data.get("output_audio")),
            request=_decimal(data.get("request") or 0),
            tiers=tuple(Tier.from_dict(t) for t in tiers),
        )

    def as_dict(self) -> dict[str, object]:
        """Decimal strings; a per-token price left empty is ``None`` (it falls back)."""
        out: dict[str, object] = {"version": self.version}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "version":
                continue
            if f.name == "tiers":
                out["tiers"] = [t.as_dict() for t in self.tiers]
            else:
                out[f.name] = None if value is None else str(value)
        return out

    def tier(self, prompt_tokens: int) -> Tier | None:
        """The tier a prompt of this size is priced by (``None``: the base prices)."""
        chosen = None
        for tier in self.tiers:
            if tier.above < prompt_tokens:
                chosen = tier
        return chosen

    def rates(self, tier: Tier | None = None) -> Rates:
        """The per-token prices of the base, or of ``tier``, with the fallbacks applied."""
        return _rates(self, tier)


# Prices and tiers are immutable and few, and every cost needs their rates: computed once each
# (about 5 µs saved per cost, on the relay's and the worker's every request).
@lru_cache(maxsize=4096)
def _rates(price: Price, tier: Tier | None) -> Rates:
    named: dict[str, Decimal | None] = {name: getattr(price, name) for name in TOKEN_PRICES}
    if tier is not None:
        for name in TOKEN_PRICES:
            value = getattr(tier, name)
            if value is not None:
                named[name] = value
    for name in TOKEN_PRICES:  # in order: a fallback's target is resolved before it
        if named[name] is None:
            named[name] = named[FALLBACKS[name]]
    resolved: dict[str, Decimal] = {k: v for k, v in named.items() if v is not None}
    return Rates(**resolved)


@dataclass(frozen=True, slots=True)
class Split:
    """A request's token counts split into the parts priced apart (each clamped to what is
    left of its whole)."""

    uncached: int
    cached: int
    cache_write: int
    cache_write_1h: int
    input_audio: int
    output: int
    reasoning: int
    output_audio: int


def split(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
    input_audio_tokens: int = 0,
    output_audio_tokens: int = 0,
) -> Split:
    counts = (
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        cache_write_tokens,
        cache_write_1h_tokens,
        reasoning_tokens,
        input_audio_tokens,
        output_audio_tokens,
    )
    if min(counts) < 0:
        raise ValueError("counts cannot be negative")
    left = prompt_tokens
    prompt_parts = []
    for part in (cached_tokens, cache_write_tokens, cache_write_1h_tokens, input_audio_tokens):
        taken = part if part < left else left
        prompt_parts.append(taken)
        left -= taken
    rest = completion_tokens
    reasoning = reasoning_tokens if reasoning_tokens < rest else rest
    rest -= reasoning
    output_audio = output_audio_tokens if output_audio_tokens < rest else rest
    rest -= output_audio
    cached, write, write_1h, input_audio = prompt_parts
    return Split(left, cached, write, write_1h, input_audio, rest, reasoning, output_audio)


@dataclass(frozen=True, slots=True)
class Line:
    """One price type's part of a cost: ``quantity`` (tokens; requests; images; milliseconds
    of audio) at ``rate`` (USD per 1M tokens; per request; per image; per second of audio)
    comes to ``amount``, exact and unrounded."""

    kind: str  # a per-token price's name (TOKEN_PRICES), or request, image, audio_second
    quantity: int
    rate: Decimal
    amount: Decimal


def _terms(
    price: Price,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    cache_write_tokens: int,
    cache_write_1h_tokens: int,
    reasoning_tokens: int,
    input_audio_tokens: int,
    output_audio_tokens: int,
    images: int,
    audio_ms: int,
    requests: int,
) -> list[tuple[str, int, Decimal, Decimal]]:
    """(kind, quantity, rate, exact amount) of each price type the request used: what
    :func:`lines` lists and :func:`cost` sums (as plain tuples: a cost is on every request of
    the relay and the worker, and building a ``Line`` each was a third of its time)."""
    if min(images, audio_ms, requests) < 0:
        raise ValueError("counts cannot be negative")
    parts = split(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        cache_write_tokens=cache_write_tokens,
        cache_write_1h_tokens=cache_write_1h_tokens,
        reasoning_tokens=reasoning_tokens,
        input_audio_tokens=input_audio_tokens,
        output_audio_tokens=output_audio_tokens,
    )
    rates = price.rates(price.tier(prompt_tokens))
    out = [
        (kind, count, rate, count * rate / PER)
        for kind, count, rate in (
            ("input", parts.uncached, rates.input),
            ("cached_input", parts.cached, rates.cached_input),
            ("cache_write", parts.cache_write, rates.cache_write),
            ("cache_write_1h", parts.cache_write_1h, rates.cache_write_1h),
            ("input_audio", parts.input_audio, rates.input_audio),
            ("output", parts.output, rates.output),
            ("reasoning", parts.reasoning, rates.reasoning),
            ("output_audio", parts.output_audio, rates.output_audio),
        )
        if count
    ]
    if requests and price.request:
        out.append(("request", requests, price.request, requests * price.request))
    if images:
        out.append(("image", images, price.image, images * price.image))
    if audio_ms:
        out.append(
            ("audio_second", audio_ms, price.audio_second, audio_ms * price.audio_second / 1000)
        )
    return out


def lines(
    price: Price,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
    input_audio_tokens: int = 0,
    output_audio_tokens: int = 0,
    images: int = 0,
    audio_ms: int = 0,
    requests: int = 1,
) -> list[Line]:
    """What each price type charges, exact: :func:`cost` is their sum rounded once. Only the
    types the request used are listed (a per-request price only where the model has one)."""
    return [
        Line(*term)
        for term in _terms(
            price,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            cache_write_tokens,
            cache_write_1h_tokens,
            reasoning_tokens,
            input_audio_tokens,
            output_audio_tokens,
            images,
            audio_ms,
            requests,
        )
    ]


def cost(
    price: Price,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
    input_audio_tokens: int = 0,
    output_audio_tokens: int = 0,
    images: int = 0,
    audio_ms: int = 0,
    requests: int = 1,
    percent: Decimal = HUNDRED,
) -> Decimal:
    """USD, exact, rounded up to the nano-dollar (see the module docstring for the counts): the
    sum of :func:`lines`, so the two can never disagree. ``percent``: the share of the list
    price charged (a BYOK request's fee; 100, the price itself)."""
    if not ZERO <= percent <= HUNDRED:
        raise ValueError("percent must be between 0 and 100")
    total = ZERO
    for term in _terms(
        price,
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        cache_write_tokens,
        cache_write_1h_tokens,
        reasoning_tokens,
        input_audio_tokens,
        output_audio_tokens,
        images,
        audio_ms,
        requests,
    ):
        total += term[3]
    if percent != HUNDRED:
        total = total * percent / HUNDRED
    return total.quantize(NANO, rounding=ROUND_CEILING)


def to_nanos(amount: Decimal) -> int:
    """Exact for ledger amounts; anything finer is rounded up (holds must never be short)."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def nanos_floor(amount: Decimal) -> int:
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_FLOOR))


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * NANO).quantize(NANO)
