"""Live figures per route (model × provider), from our own traffic: median time to first
token, median tokens per second, uptime, error rate and requests over the last hour, day and
week, read from the hourly rollup (:class:`~catalog.models.RouteHour`) that the worker keeps.

How they are counted (billing.routestats writes the rollup):

- Every attempt on a route is a request to it: a request that failed on route A before its
  first byte and was then served by route B counts once on each.
- Uptime is the share of requests the upstream did not fail: a 5xx, an upstream that could
  not be reached, timed out or closed the stream early counts against it; a 4xx the upstream
  gave to a bad request and a 429 (the provider is up and limiting, often our own quota) do
  not. The error rate counts every request that did not end well, those included.
- Time to first token (ms) is from the request's arrival at the relay to the upstream's first
  byte; tokens per second are completion tokens / (duration − time to first byte) for a
  streamed answer and completion tokens / duration for a whole one.
- Both are kept as histograms over fixed, roughly log-spaced buckets; the median of a window
  (the hours' histograms added together) is interpolated linearly inside the bucket that
  holds it, so it is exact to within that bucket's width (about ±20%); in the open last
  bucket it is that bucket's lower bound.
- A window is the hours that began in it: "hour" is the current clock hour and the one
  before (between 60 and 120 minutes), "day" the last 24 hours and "week" the last 7 days, to
  the hour. With fewer than :data:`MIN_REQUESTS` requests in a window its figures are ``None``
  ("not enough data").
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from core import state
from lib.redis import client

from .health import open_routes
from .models import Model, Route, RouteHour

MIN_REQUESTS = 10
KEEP = timedelta(days=8)  # rollup rows older than this are deleted (the week is all we show)

# Upper bounds; a value falls in the first bucket whose bound it does not exceed, and the last
# bucket (beyond the last bound) is open.
TTFB_BUCKETS: tuple[int, ...] = (
    25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500,
    10000, 15000, 20000, 30000, 60000,
)  # fmt: skip
TPS_BUCKETS: tuple[int, ...] = (
    1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 100, 125, 150, 200, 300, 500, 1000, 2000,
)  # fmt: skip

WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("hour", timedelta(hours=1)),
    ("day", timedelta(hours=23)),
    ("week", timedelta(days=7, hours=-1)),
)


def bucket(bounds: Sequence[int], value: float) -> int:
    """The index of the bucket ``value`` falls in (``len(bounds)``: the open last one)."""
    return bisect.bisect_left(bounds, value)


def add_counts(total: list[int], counts: Sequence[int]) -> None:
    """Adds a histogram into ``total`` (a shorter one, kept before buckets were added, too)."""
    if len(total) < len(counts):
        total.extend([0] * (len(counts) - len(total)))
    for i, count in enumerate(counts):
        total[i] += int(count)


def median(bounds: Sequence[int], counts: Sequence[int]) -> float | None:
    """The median of a histogram, interpolated inside its bucket (see the module's notes)."""
    total = sum(counts)
    if total == 0:
        return None
    half = total / 2
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= half:
            if i >= len(bounds):
                return float(bounds[-1])
            low = bounds[i - 1] if i > 0 else 0
            return low + (bounds[i] - low) * (half - seen) / count
        seen += count
    return float(bounds[-1])


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One window of one route. Figures are ``None`` below the threshold (``enough`` false)."""

    name: str
    requests: int
    enough: bool
    p50_ttfb_ms: int | None = None
    p50_tps: float | None = None
    uptime: float | None = None  # percent
    error_rate: float | None = None  # percent

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "enough_data": self.enough,
            "p50_ttfb_ms": self.p50_ttfb_ms,
            "p50_tokens_per_second": self.p50_tps,
            "uptime": self.uptime,
            "error_rate": self.error_rate,
        }


@dataclass(slots=True)
class _Sums:
    requests: int = 0
    errors: int = 0
    upstream_errors: int = 0
    ttfb: list[int] = field(default_factory=list)
    tps: list[int] = field(default_factory=list)

    def add(self, row: RouteHour) -> None:
        self.requests += row.requests
        self.errors += row.errors
        self.upstream_errors += row.upstream_errors
        add_counts(self.ttfb, row.ttfb or [])
        add_counts(self.tps, row.tps or [])

    def figures(self, name: str) -> WindowFigures:
        if self.requests < MIN_REQUESTS:
            return WindowFigures(name=name, requests=self.requests, enough=False)
        ttfb = median(TTFB_BUCKETS, self.ttfb)
        tps = median(TPS_BUCKETS, self.tps)
        return WindowFigures(
            name=name,
            requests=self.requests,
            enough=True,
            p50_ttfb_ms=round(ttfb) if ttfb is not None else None,
            p50_tps=round(tps, 1) if tps is not None else None,
            uptime=round(100 * (1 - self.upstream_errors / self.requests), 2),
            error_rate=round(100 * self.errors / self.requests, 2),
        )


@dataclass(frozen=True, slots=True)
class RouteFigures:
    """One active route of a model: what serves it, on what terms, and how it has done."""

    provider_slug: str
    provider_name: str
    upstream_model: str
    context_length: int | None
    max_output_tokens: int
    region: str
    trains_on_prompts: bool | None
    prompt_retention_days: int | None
    privacy_url: str
    windows: tuple[WindowFigures, ...]
    # Its circuit breaker is open: the relays skip it for now (catalog.health; pages only).
    open: bool = False

    def window(self, name: str) -> WindowFigures:
        return next(w for w in self.windows if w.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider_slug,
            "provider_name": self.provider_name,
            "upstream_model": self.upstream_model,
            "context_length": self.context_length,
            "max_output_tokens": self.max_output_tokens,
            "region": self.region,
            "trains_on_prompts": self.trains_on_prompts,
            "prompt_retention_days": self.prompt_retention_days,
            "privacy_url": self.privacy_url,
            "windows": {w.name: w.as_dict() for w in self.windows},
        }


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _window_starts(now: datetime) -> list[tuple[str, datetime]]:
    current = hour_of(now)
    return [(name, current - span) for name, span in WINDOWS]


def _figures_of(
    model: Model, routes: Iterable[Route], rows: Iterable[RouteHour], now: datetime
) -> list[RouteFigures]:
    starts = _window_starts(now)
    sums: dict[str, dict[str, _Sums]] = defaultdict(lambda: {n: _Sums() for n, _ in starts})
    for row in rows:
        for name, start in starts:
            if row.hour >= start:
                sums[row.provider][name].add(row)
    result = []
    seen: set[str] = set()
    for route in routes:
        provider = route.provider
        if provider.slug in seen:  # two routes to one provider share its figures
            continue
        seen.add(provider.slug)
        windows = sums[provider.slug]
        result.append(
            RouteFigures(
                provider_slug=provider.slug,
                provider_name=provider.name,
                upstream_model=route.upstream_model,
                context_length=route.context_window or model.context_window,
                max_output_tokens=route.max_output_tokens or model.max_output_tokens,
                region=provider.region,
                trains_on_prompts=provider.trains_on_prompts,
                prompt_retention_days=provider.prompt_retention_days,
                privacy_url=provider.privacy_url,
                windows=tuple(windows[name].figures(name) for name, _ in starts),
            )
        )
    return result


def _active_routes() -> QuerySet[Route]:
    return Route.objects.filter(active=True, provider__active=True).select_related("provider")


def route_figures(model: Model, *, now: datetime | None = None) -> list[RouteFigures]:
    """One entry per active route of ``model`` (per provider), in the relay's order."""
    now = now or timezone.now()
    week = _window_starts(now)[-1][1]
    rows = RouteHour.objects.filter(model_id=model.pk, hour__gte=week)
    result = _figures_of(model, _active_routes().filter(model=model), rows, now)
    down = open_routes(model.pk)
    return [replace(r, open=True) if r.provider_slug in down else r for r in result]


def all_route_figures(*, now: datetime | None = None) -> dict[str, list[RouteFigures]]:
    """The figures of every listed model, by model id, in two queries (for the relay)."""
    now = now or timezone.now()
    week = _window_starts(now)[-1][1]
    rows: dict[str, list[RouteHour]] = defaultdict(list)
    for row in RouteHour.objects.filter(hour__gte=week):
        rows[row.model_id].append(row)
    models = Model.objects.filter(active=True, provider__active=True).prefetch_related(
        Prefetch("routes", queryset=_active_routes(), to_attr="active_routes")
    )
    return {m.pk: _figures_of(m, m.active_routes, rows.get(m.pk, ()), now) for m in models}


def publish(*, now: datetime | None = None) -> int:
    """Every listed model's figures into the relay's view (one hash, replaced whole, so a
    model no longer listed leaves it); returns how many models. The relay reads one field per
    ``/v1/models/{id}/endpoints`` request."""
    figures = all_route_figures(now=now)
    pipe = client().pipeline(transaction=True)
    pipe.delete(state.ROUTE_FIGURES)
    if figures:
        pipe.hset(
            state.ROUTE_FIGURES,
            mapping={
                model: orjson.dumps([r.as_dict() for r in routes])
                for model, routes in figures.items()
            },
        )
    pipe.execute()
    return len(figures)


def prune(*, now: datetime | None = None) -> int:
    """Deletes the rollup's hours older than :data:`KEEP`; returns how many rows."""
    cutoff = hour_of(now or timezone.now()) - KEEP
    deleted, _ = RouteHour.objects.filter(hour__lt=cutoff).delete()
    return deleted
