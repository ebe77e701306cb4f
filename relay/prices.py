"""A model's price as integers, so the relay's per-request costs are integer arithmetic.

``core.pricing.cost`` sums each part of the usage times its price (per 1M tokens; per request,
image and second of audio) and rounds once, up, to the nano-dollar. In nano-dollars that is
``ceil(Σ count × nanos per unit)`` (a token's price × 1000, a request's or an image's × 10⁹, a
millisecond of audio's × 10⁶); with each written as a fraction over one common denominator it
is ``ceil(Σ count × numerator / denominator)`` — the same rule in integers (the test suite
checks they agree exactly). A long-context tier is one more vector of token prices, chosen by
the prompt's size as ``cost`` chooses it. Built once per model when first used.

A BYOK request pays a share of the price (``cost``'s ``percent``): the same sum times the
share as a fraction, and the one ceiling (``share``: ``Fraction(percent, 100)``).
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

from core.pricing import TOKEN_PRICES, Price, from_nanos, split

# Positions in a vector of token prices (the order of core.pricing.TOKEN_PRICES).
INPUT, OUTPUT, CACHED, WRITE, WRITE_1H, REASONING, INPUT_AUDIO, OUTPUT_AUDIO = range(8)
PROMPT_PRICES = (INPUT, CACHED, WRITE, WRITE_1H, INPUT_AUDIO)
COMPLETION_PRICES = (OUTPUT, REASONING, OUTPUT_AUDIO)


class NanoPrice:
    __slots__ = ("audio_ms", "base", "denominator", "image", "price", "request", "tiers")

    def __init__(self, price: Price) -> None:
        self.price = price
        vectors = [price.rates(None)] + [price.rates(tier) for tier in price.tiers]
        token_units = [
            [Fraction(getattr(rates, name)) * 1000 for name in TOKEN_PRICES] for rates in vectors
        ]
        others = [
            Fraction(price.request) * 1_000_000_000,
            Fraction(price.image) * 1_000_000_000,
            Fraction(price.audio_second) * 1_000_000,
        ]
        every = [f for vector in token_units for f in vector] + others
        denominator = math.lcm(*(f.denominator for f in every))
        self.denominator = denominator

        def scaled(f: Fraction) -> int:
            return f.numerator * (denominator // f.denominator)

        base, *tiers = [tuple(scaled(f) for f in vector) for vector in token_units]
        self.base: tuple[int, ...] = base
        # (above, vector), lowest first, as Price keeps its tiers.
        self.tiers: tuple[tuple[int, tuple[int, ...]], ...] = tuple(
            (tier.above, vector) for tier, vector in zip(price.tiers, tiers, strict=True)
        )
        self.request, self.image, self.audio_ms = (scaled(f) for f in others)

    def _vector(self, prompt_tokens: int) -> tuple[int, ...]:
        chosen = self.base
        for above, vector in self.tiers:
            if above < prompt_tokens:
                chosen = vector
        return chosen

    def _ceil(self, total: int, share: Fraction | None = None) -> int:
        if share is not None:
            return -(-total * share.numerator // (self.denominator * share.denominator))
        if self.denominator == 1:
            return total
        return -(-total // self.denominator)

    def nanos(
        self,
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
        share: Fraction | None = None,
    ) -> int:
        """``to_nanos(cost(price, ...))``, exactly (with ``share``, ``cost``'s ``percent``
        / 100)."""
        if images < 0 or audio_ms < 0 or requests < 0:
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
        v = self._vector(prompt_tokens)
        total = (
            parts.uncached * v[INPUT]
            + parts.cached * v[CACHED]
            + parts.cache_write * v[WRITE]
            + parts.cache_write_1h * v[WRITE_1H]
            + parts.input_audio * v[INPUT_AUDIO]
            + parts.output * v[OUTPUT]
            + parts.reasoning * v[REASONING]
            + parts.output_audio * v[OUTPUT_AUDIO]
            + requests * self.request
            + images * self.image
            + audio_ms * self.audio_ms
        )
        return self._ceil(total, share)

    def most(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        images: int = 0,
        audio_ms: int = 0,
        share: Fraction | None = None,
    ) -> int:
        """The most a request of at most this many prompt and completion tokens can cost, in
        nano-dollars: every prompt token at the dearest prompt price (a prompt may be all
        1-hour cache writes, or all audio), every output token at the dearest output price,
        at the dearest of the tiers a prompt this size could reach, plus one request's fee."""
        if min(prompt_tokens, completion_tokens, images, audio_ms) < 0:
            raise ValueError("counts cannot be negative")
        vectors = [self.base] + [v for above, v in self.tiers if above < prompt_tokens]
        prompt_rate = max(v[i] for v in vectors for i in PROMPT_PRICES)
        completion_rate = max(v[i] for v in vectors for i in COMPLETION_PRICES)
        total = (
            prompt_tokens * prompt_rate
            + completion_tokens * completion_rate
            + self.request
            + images * self.image
            + audio_ms * self.audio_ms
        )
        return self._ceil(total, share)


def amount(nanos: int) -> Decimal:
    """The Decimal ``cost`` returns for the same figure (nine places)."""
    return from_nanos(nanos)


def of_model(model: dict[str, Any]) -> NanoPrice:
    """The model's price, built on first use and kept on the catalog entry (a catalog reload
    replaces the entries, and with them these)."""
    cached = model.get("_nano_price")
    if not isinstance(cached, NanoPrice):
        cached = model["_nano_price"] = NanoPrice(Price.from_dict(model["price"]))
    return cached


def of_route(model: dict[str, Any], route: dict[str, Any]) -> NanoPrice:
    """The price a request served by ``route`` is charged: the route's own where the catalog
    gives it one, else the model's. Built on first use and kept on the route's entry."""
    cached = route.get("_nano_price")
    if not isinstance(cached, NanoPrice):
        own = route.get("price")
        cached = route["_nano_price"] = NanoPrice(Price.from_dict(own)) if own else of_model(model)
    return cached


def uniform(model: dict[str, Any]) -> bool:
    """Whether every route of ``model`` is charged the model's price (no route has one of its
    own): then one price covers the request, whichever route serves it. Kept on the entry."""
    cached = model.get("_uniform")
    if cached is None:
        cached = model["_uniform"] = not any(r.get("price") for r in model.get("routes", ()))
    return bool(cached)
