"""Provider routing per request: which (model, route) pairs a request with preferences may
try, and in what order.

A request names preferences in its ``provider`` object (OpenRouter's; checked by
:mod:`core.routing`), its key may carry defaults, and a ``models`` list names models to fall
back to. For each model in turn its routes that take the request are filtered (``only``,
``ignore``, ``data_collection``, ``zdr``, ``max_price``), put in order (the operator's
priorities and weights, then ``sort``, then ``order`` in front), and cut to the preferred
providers when ``allow_fallbacks`` is false. The tries are every model's admissible routes,
the first model's first. A model none of whose routes is admissible is passed over; when no
model has one, the answer is a 404 saying which preference left none.

Only requests with preferences come here: a request without ``provider`` or ``models`` from a
key without defaults keeps the plain path (:meth:`relay.upstream.Upstream.forward`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from core.routing import Preferences

from . import prices

JSON = dict[str, Any]
Try = tuple[JSON, JSON]  # (model, route)
# Live figures of a model's routes by provider slug: the hour window (catalog.figures).
Figures = dict[str, JSON]


class Plan:
    """The (model, route) pairs to try in order; ``pinnable``: how many of the first a
    conversation's pin may choose among (they rank alike by the preferences, and are of one
    model), so that a pin never overrides a preference."""

    __slots__ = ("pinnable", "tries")

    def __init__(self, tries: list[Try], pinnable: int) -> None:
        self.tries = tries
        self.pinnable = pinnable


def price_of(model: JSON, route: JSON, name: str) -> Decimal:
    """The route's price for one of ``max_price``'s names (USD per 1M tokens, per request,
    per image), at the base tier."""
    price = prices.of_route(model, route).price
    if name == "prompt":
        return price.input
    if name == "completion":
        return price.output
    if name == "request":
        return price.request
    return price.image


def _providers(routes: list[JSON]) -> str:
    return ", ".join(sorted({str(r["provider"]) for r in routes}))


def admissible(model: JSON, routes: list[JSON], prefs: Preferences) -> tuple[list[JSON], str]:
    """(the routes the preferences admit, in the order given; why none is, when none is)."""
    served = _providers(routes)
    if prefs.only is not None:
        only = prefs.only
        routes = [r for r in routes if r["provider"] in only]
        if not routes:
            return [], f"provider.only names none of its providers ({served})"
    if prefs.ignore:
        ignore = prefs.ignore
        routes = [r for r in routes if r["provider"] not in ignore]
        if not routes:
            return [], f"provider.ignore excludes every one of its providers ({served})"
    if prefs.deny_data_collection:
        routes = [r for r in routes if r.get("trains_on_prompts") is False]
        if not routes:
            return [], (
                f"data_collection 'deny': none of its providers ({served}) states that it "
                f"does not train on prompts"
            )
    if prefs.zdr:
        routes = [r for r in routes if r.get("prompt_retention_days") == 0]
        if not routes:
            return [], f"zdr: none of its providers ({served}) keeps prompts for zero days"
    if prefs.max_price:
        limits = prefs.max_price
        kept = [r for r in routes if all(price_of(model, r, n) <= most for n, most in limits)]
        if not kept:
            for name, most in limits:
                lowest = min(price_of(model, r, name) for r in routes)
                if lowest > most:
                    return [], (
                        f"max_price.{name} {most} is below every route's price (the lowest "
                        f"is {lowest.normalize():f})"
                    )
            return [], "max_price: no route is within every limit at once"
        routes = kept
    return routes, ""


def _sort_key(
    model: JSON, sort: str, figures: Figures | None
) -> Callable[[JSON], tuple[int, Decimal | float]]:
    """Routes without figures sort last (``1``), in the order they had."""
    if sort == "price":

        def by_price(route: JSON) -> tuple[int, Decimal | float]:
            price = prices.of_route(model, route).price
            return 0, price.input + price.output

        return by_price
    name, sign = ("p50_tokens_per_second", -1.0) if sort == "throughput" else ("p50_ttfb_ms", 1.0)

    def by_figure(route: JSON) -> tuple[int, Decimal | float]:
        hour = (figures or {}).get(str(route["provider"]))
        value = hour.get(name) if hour and hour.get("enough_data") else None
        if not isinstance(value, int | float):
            return 1, 0.0
        return 0, sign * float(value)

    return by_figure


def arrange(
    model: JSON, routes: list[JSON], prefs: Preferences, figures: Figures | None
) -> tuple[list[JSON], int]:
    """(``routes``, already in the operator's order, put in the preferences' order and cut
    when fallbacks are not allowed; how many of the first rank alike)."""
    key = _sort_key(model, prefs.sort, figures) if prefs.sort else None
    if key is not None:
        routes = sorted(routes, key=key)  # stable: ties keep the operator's order
    rank_of = {slug: i for i, slug in enumerate(prefs.order)}
    last = len(rank_of)
    if rank_of:
        preferred = sorted(
            (r for r in routes if r["provider"] in rank_of), key=lambda r: rank_of[r["provider"]]
        )
        rest = [r for r in routes if r["provider"] not in rank_of]
        routes = preferred + rest if prefs.allow_fallbacks else preferred
    elif not prefs.allow_fallbacks and routes:
        first = routes[0]["provider"]
        routes = [r for r in routes if r["provider"] == first]
    if not prefs.reorders or not routes:
        return routes, len(routes)

    def rank(route: JSON) -> tuple[Any, ...]:
        return (
            rank_of.get(route["provider"], last) if rank_of else 0,
            key(route) if key is not None else 0,
        )

    top = rank(routes[0])
    alike = 1
    while alike < len(routes) and rank(routes[alike]) == top:
        alike += 1
    return routes, alike


def hour_figures(raw: bytes | str | None) -> Figures | None:
    """A model's published figures (catalog.figures, one JSON list per model) as the hour
    window by provider."""
    if not raw:
        return None
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    out: Figures = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            hour = (entry.get("windows") or {}).get("hour")
            if isinstance(hour, dict):
                out.setdefault(str(entry.get("provider")), hour)
    return out
