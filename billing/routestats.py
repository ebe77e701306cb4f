"""Each route's hourly figures (:class:`catalog.models.RouteHour`) from the relay's usage
events, written in the transaction that records them (``usage.record_batch``), so a batch
counts once: a redelivered one finds its requests recorded and counts nothing.

What an event tells about routes: its own route's outcome (from ``status``), and in
``attempts`` the routes that failed before it, each ``[provider, upstream model, outcome]``
(and a fourth, the model, where it was another: a request that fell back to another model of
its ``models`` list).
A request that no route served leaves no usage row (it costs nothing); the relay sends it as
an event of kind :data:`FAILED` carrying only its model, start and attempts. Such an event has
no row to be deduplicated against: a batch delivered twice after the worker died between
commit and acknowledgement counts its failures twice (figures, never money).

How the outcomes count (see catalog.figures for the figures read from them):

- ``ok``: a request served; ``client_closed``: the client left, no error either way;
- ``client_error`` (a 4xx the upstream gave to this request) and ``rate_limited`` (429):
  errors, not against uptime;
- ``upstream_error`` (5xx, unreachable, timed out, closed at once) and ``upstream_cut`` (the
  stream ended early): errors, against uptime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, reduce
from operator import or_
from typing import Any

from django.db.models import Q

from catalog.figures import TPS_BUCKETS, TTFB_BUCKETS, add_counts, bucket
from catalog.models import RouteHour
from lib import pgbatch

log = logging.getLogger(__name__)

FAILED = "failed"  # the kind of an event for a request no route served

OK = "ok"
UPSTREAM_ERRORS = frozenset({"upstream_error", "upstream_cut"})
ERRORS = UPSTREAM_ERRORS | {"client_error", "rate_limited", "error"}

Slot = tuple[str, str, datetime]  # model, provider, hour


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    errors: int = 0
    upstream_errors: int = 0
    ttfb: list[int] = field(default_factory=lambda: [0] * (len(TTFB_BUCKETS) + 1))
    tps: list[int] = field(default_factory=lambda: [0] * (len(TPS_BUCKETS) + 1))

    def outcome(self, outcome: str) -> None:
        self.requests += 1
        if outcome in ERRORS:
            self.errors += 1
        if outcome in UPSTREAM_ERRORS:
            self.upstream_errors += 1


def split(raw_events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(usage events, events of requests that no route served)."""
    usage: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for raw in raw_events:
        (failed if raw.get("kind") == FAILED else usage).append(raw)
    return usage, failed


def tokens_per_second(raw: dict[str, Any]) -> float | None:
    """Completion tokens over the time they took: from the first byte for a stream, the whole
    request otherwise."""
    tokens = int(raw.get("completion_tokens") or 0)
    duration = int(raw.get("duration_ms") or 0)
    if tokens <= 0:
        return None
    if raw.get("streamed"):
        ttfb = raw.get("ttfb_ms")
        if ttfb is None:
            return None
        duration -= int(ttfb)
    if duration <= 0:
        return None
    return tokens * 1000 / duration


@lru_cache(maxsize=64)
def _hour(hours_since_epoch: int) -> datetime:
    """The UTC hour a request started in (a batch's events fall in one or two)."""
    return datetime.fromtimestamp(hours_since_epoch * 3600, tz=UTC)


def _count(raw: dict[str, Any], slots: dict[Slot, _Counts]) -> None:
    model = str(raw["model"])[:150]
    hour = _hour(int(float(raw["started_at"]) // 3600))
    for provider, _upstream_model, outcome, *of_model in raw.get("attempts") or ():
        tried = str(of_model[0])[:150] if of_model else model
        slots.setdefault((tried, str(provider)[:50], hour), _Counts()).outcome(str(outcome))
    if raw.get("kind") == FAILED:
        return
    counts = slots.setdefault((model, str(raw["provider"])[:50], hour), _Counts())
    status = str(raw.get("status", OK))
    counts.outcome(status)
    if status != OK:
        return
    ttfb = raw.get("ttfb_ms")
    # Time to first token is a streamed answer's: a whole one's first byte is its end.
    if raw.get("streamed") and ttfb is not None:
        counts.ttfb[bucket(TTFB_BUCKETS, int(ttfb))] += 1
    tps = tokens_per_second(raw)
    if tps is not None:
        counts.tps[bucket(TPS_BUCKETS, tps)] += 1


def record(raw_events: Iterable[dict[str, Any]], *, already: set[str]) -> None:
    """Adds the events' requests (but those in ``already``: recorded before) to the hours of
    their routes. Runs inside the caller's transaction; rows are locked in one order."""
    slots: dict[Slot, _Counts] = {}
    seen = set(already)
    for raw in raw_events:
        request_id = str(raw.get("request_id", ""))[:64]
        if request_id in seen:
            continue
        seen.add(request_id)
        try:
            _count(raw, slots)
        except (KeyError, TypeError, ValueError, OverflowError):
            log.error("route figures: malformed event %r skipped", request_id)
    if slots:
        _add(slots)


def _histogram_sum(column: str) -> str:
    """SQL: the row's histogram plus the incoming one, bucket by bucket (a shorter one, kept
    before buckets were added, counts as zeros), as ``add_counts`` does."""
    current = f"CASE WHEN jsonb_typeof(t.{column}) = 'array' THEN t.{column} ELSE '[]' END"
    return (
        f"{column} = (SELECT COALESCE(jsonb_agg(COALESCE(a::bigint, 0) + COALESCE(b::bigint, 0)"  # noqa: S608
        f" ORDER BY i), '[]'::jsonb) FROM ROWS FROM (jsonb_array_elements_text({current}),"
        f" jsonb_array_elements_text(excluded.{column})) WITH ORDINALITY AS h(a, b, i))"
    )


# PostgreSQL: every slot of the batch in one upsert, the rows as arrays (lib.pgbatch).
_UPSERT = (
    "INSERT INTO catalog_routehour AS t"  # noqa: S608 (constant names)
    " (model_id, provider, hour, requests, errors, upstream_errors, ttfb, tps)"
    " SELECT m, p, h, r, e, u, tt::jsonb, tp::jsonb FROM unnest(%s::varchar[], %s::varchar[],"
    " %s::timestamptz[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[])"
    " AS v(m, p, h, r, e, u, tt, tp)"
    " ON CONFLICT (model_id, provider, hour) DO UPDATE SET requests = t.requests"
    " + excluded.requests, errors = t.errors + excluded.errors, upstream_errors ="
    f" t.upstream_errors + excluded.upstream_errors, {_histogram_sum('ttfb')},"
    f" {_histogram_sum('tps')}"
)


def _add(slots: dict[Slot, _Counts]) -> None:
    if pgbatch.available():
        # In one order, so two batches meeting on the same hours never wait for each other in
        # a cycle; each slot once (one statement may not update a row twice).
        values = [
            (
                m,
                p,
                h,
                c.requests,
                c.errors,
                c.upstream_errors,
                json.dumps(c.ttfb),
                json.dumps(c.tps),
            )
            for (m, p, h), c in sorted(slots.items())
        ]
        with pgbatch.cursor() as cur:
            pgbatch.execute(cur, _UPSERT, pgbatch.columns(values, 8))
        return
    # Inserted and locked in one order, so two batches meeting on the same hours never wait
    # for each other in a cycle.
    RouteHour.objects.bulk_create(
        [RouteHour(model_id=m, provider=p, hour=h) for m, p, h in sorted(slots)],
        ignore_conflicts=True,
    )
    wanted = reduce(or_, (Q(model_id=m, provider=p, hour=h) for m, p, h in slots))
    rows = list(
        RouteHour.objects.select_for_update()
        .filter(wanted)
        .order_by("model_id", "provider", "hour")
    )
    for row in rows:
        counts = slots[(row.model_id, row.provider, row.hour.astimezone(UTC))]
        row.requests += counts.requests
        row.errors += counts.errors
        row.upstream_errors += counts.upstream_errors
        row.ttfb = list(row.ttfb or [])
        add_counts(row.ttfb, counts.ttfb)
        row.tps = list(row.tps or [])
        add_counts(row.tps, counts.tps)
    RouteHour.objects.bulk_update(rows, ["requests", "errors", "upstream_errors", "ttfb", "tps"])
