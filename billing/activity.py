"""The activity figures (issue 14): spend, tokens and requests of an account over a range of
days or hours in the reader's time zone, by model, key or provider, read from the rollups only
(never the raw events).

How a local day is read. A bucket is ``[b_i, b_{i+1})`` in UTC and holds the ``HourlyUsage``
rows whose hour starts in it (``billing.rollups.local_day_hours``: exact wherever the zone's
offset is a whole number of hours; in a half-hour zone the UTC hour that straddles local
midnight counts, whole, in the day in which it starts). Summing those hourly rows directly
would read every hour of the range. Instead each boundary ``b`` is tied to the UTC midnight
``a`` nearest to it (within 12 hours): with F(t) the sum of the hourly rows before t,
F(b) = F(a) + H[a, b) when ``b`` is after ``a``, F(a) − H[b, a) when before, and the
difference F(a') − F(a) between two UTC midnights is the ``DailyUsage`` rows of the days
between (a daily row is by construction the sum of its UTC day's hourly rows). So

    bucket_i = Daily[a_i, a_{i+1}) + corr(b_{i+1}) − corr(b_i)

with corr(b) = ±H between ``a`` and ``b``: at most 12 hours of hourly rows per boundary, none in
UTC (or any zone whose midnight is UTC midnight), 5 per day in New York, 5 in Kolkata (whose
midnight, 18:30 UTC, is nearer the next UTC midnight). The result is exactly the sum of the
hourly rows of each bucket, to the nano-dollar; tests/test_activity.py checks it against the
raw events.

Hourly buckets (the 24-hour view, and ``granularity=hour`` for the export and the API) are UTC
hours, labelled in the reader's zone (10:30 in Kolkata): one hourly row each, exactly.

Every read is a grouped aggregate on the (account, day) or (account, hour) index, made by the
ORM, so it runs on PostgreSQL and on the SQLite file of ``make run`` alike.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connections, transaction
from django.db.models import BigIntegerField, BooleanField, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, TruncDate

from accounts.models import Account
from lib import pgbatch

from .models import DailyUsage, HourlyUsage
from .rollups import hour_of, local_day_hours

# What the activity page, the export and the API show, in this order.
FIGURES = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    # Of the requests, those sent with the account's own provider key (BYOK).
    "byok",
    "cost",
)
COST = FIGURES.index("cost")
DIMENSIONS = {"key": "key_id", "model": "model_id", "provider": "provider"}
GROUPS = ("model", "key", "provider", "none")
MAX_DAYS = 366
HALF_DAY = timedelta(hours=12)
HOUR_LABEL = "%Y-%m-%d %H:%M"


def zero() -> list[Any]:
    return [Decimal(0) if i == COST else 0 for i in range(len(FIGURES))]


def add_to(target: list[Any], figures: Sequence[Any], sign: int = 1) -> None:
    # In one pass of C-level adds: a 90-day page adds some 6,000 rows of figures.
    target[:] = map(operator.add if sign > 0 else operator.sub, target, figures)


@dataclass(frozen=True)
class Period:
    """A range cut into buckets: ``boundaries`` are the buckets' UTC bounds (n + 1 of them for n
    buckets), ``labels`` their names in the reader's zone, ``granularity`` day or hour."""

    boundaries: tuple[datetime, ...]
    labels: tuple[str, ...]
    granularity: str
    zone: ZoneInfo
    first_day: date | None = None
    last_day: date | None = None

    @property
    def start(self) -> datetime:
        return self.boundaries[0]

    @property
    def end(self) -> datetime:
        return self.boundaries[-1]

    def previous(self) -> Period:
        """The period of equal length just before this one (as many days, or hours)."""
        if self.first_day is not None and self.last_day is not None:
            length = (self.last_day - self.first_day).days + 1
            first = self.first_day - timedelta(days=length)
            return days(first, first + timedelta(days=length - 1), self.zone, self.granularity)
        span = self.end - self.start
        return hours(self.start - span, self.start, self.zone)


def days(first: date, last: date, zone: ZoneInfo, granularity: str = "day") -> Period:
    """The local days ``first`` to ``last`` (both included) in ``zone``; with
    ``granularity="hour"`` the same range cut into its UTC hours."""
    if granularity == "hour":
        start, end = local_day_hours(first, zone)[0], local_day_hours(last, zone)[1]
        period = hours(start, end, zone)
        return Period(period.boundaries, period.labels, "hour", zone, first, last)
    count = (last - first).days + 1
    local = [first + timedelta(days=i) for i in range(count)]
    boundaries = [local_day_hours(day, zone)[0] for day in local]
    boundaries.append(local_day_hours(last, zone)[1])
    return Period(tuple(boundaries), tuple(d.isoformat() for d in local), "day", zone, first, last)


def hours(start: datetime, end: datetime, zone: ZoneInfo) -> Period:
    """The UTC hours that start in [start, end), labelled in ``zone``."""
    first = hour_of(start)
    if first < start:  # a half-hour zone's midnight: its first row is the next hour's
        first += timedelta(hours=1)
    boundaries = [first]
    while boundaries[-1] < end:
        boundaries.append(boundaries[-1] + timedelta(hours=1))
    labels = tuple(b.astimezone(zone).strftime(HOUR_LABEL) for b in boundaries[:-1])
    return Period(tuple(boundaries), labels, "hour", zone)


def last_hours(now: datetime, zone: ZoneInfo, count: int = 24) -> Period:
    """The ``count`` UTC hours up to and including the current one."""
    current = hour_of(now)
    return hours(current - timedelta(hours=count - 1), current + timedelta(hours=1), zone)


# ---- reading the rollups --------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose rows, narrowed by key and model (the drill-down)."""

    account: Account
    key_id: int | None = None
    model_id: str | None = None
    # Only these keys (an organization's member reads their own keys' usage alone).
    keys: tuple[int, ...] | None = None

    def filter(self, queryset: Any) -> QuerySet[Any]:
        queryset = queryset.filter(account=self.account)
        if self.keys is not None:
            queryset = queryset.filter(key_id__in=self.keys)
        if self.key_id is not None:
            queryset = queryset.filter(key_id=self.key_id)
        if self.model_id is not None:
            queryset = queryset.filter(model_id=self.model_id)
        return queryset


_SUMS = {f"s_{name}": Sum(name) for name in FIGURES}
# The same as PostgreSQL gives them to psycopg as Python's own types: counts as bigint (a sum
# of bigints is numeric), the cost as numeric (Decimal).
_SQL_SUMS = {
    f"s_{name}": Sum(name) if name == "cost" else Cast(Sum(name), BigIntegerField())
    for name in FIGURES
}


def _figures(row: dict[str, Any]) -> list[Any]:
    values = [row[f"s_{name}"] for name in FIGURES]
    return [
        (Decimal(0) if i == COST else 0) if value is None else value
        for i, value in enumerate(values)
    ]


def _anchor(moment: datetime) -> datetime:
    """The UTC midnight within 12 hours of ``moment`` (the earlier one at exactly 12)."""
    midnight = datetime.combine(moment.astimezone(UTC).date(), time(0), tzinfo=UTC)
    return midnight if moment - midnight <= HALF_DAY else midnight + timedelta(days=1)


def _grouped(
    queryset: QuerySet[Any], bucket: str | None, dims: Sequence[str]
) -> Iterator[tuple[Any, tuple[Any, ...], list[Any]]]:
    names = [name for name in (bucket, *dims) if name]
    if not names:  # one row of sums (``values()`` of nothing would mean every column)
        yield None, (), _figures(queryset.aggregate(**_SUMS))
        return
    width = len(names)
    grouped = queryset.values_list(*names).order_by()
    rows: Iterable[tuple[Any, ...]]
    connection = connections[queryset.db]
    if connection.vendor == "postgresql":
        # Fetched as psycopg loads them: Django's converters, a call per value, were a sixth
        # of a 90-day page's time (some 2,000 rows of ten values).
        sql, params = grouped.annotate(**_SQL_SUMS).query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    else:
        rows = grouped.annotate(**_SUMS)
    for row in rows:
        sums = [value if value is not None else 0 for value in row[width:]]
        yield (row[0] if bucket else None), row[width - len(dims) : width], sums


def _at_hours(queryset: QuerySet[Any], hours: list[datetime]) -> QuerySet[Any]:
    """The hourly rows of ``hours``. On PostgreSQL as one array parameter: Django prepares each
    value of an ``__in`` list on its own, some 30 µs apiece, and a 90-day page in Tokyo names
    819 hours. The array goes as one literal (``lib.pgbatch.array``), which psycopg would
    otherwise build element by element."""
    if connections[queryset.db].vendor != "postgresql":
        return queryset.filter(hour__in=hours)
    at = RawSQL(
        '"billing_hourlyusage"."hour" = ANY(%s::timestamptz[])',
        (pgbatch.array(hours),),
        output_field=BooleanField(),
    )
    return queryset.alias(at_hours=at).filter(at_hours=True)


@contextmanager
def _reading(db: str) -> Iterator[None]:
    """A read of many hourly rows, in a transaction on PostgreSQL with room to
    group in memory: a 90-day page groups some 50,000 hourly rows, which PostgreSQL
    overestimates as too many groups for the default 4 MB ``work_mem`` and sorts on disk
    instead (three times slower); the grouping itself needs about 3 MB."""
    connection = connections[db]
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(using=db, savepoint=False), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '16MB'")
        yield


def sums(
    scope: Scope, period: Period, dims: Sequence[str] = (), *, bucketed: bool = True
) -> dict[tuple[int, tuple[Any, ...]], list[Any]]:
    """The figures of ``scope`` in ``period``: {(bucket index, dimension values): figures}, with
    ``dims`` a subset of key_id, model_id, provider. Unbucketed (``bucketed=False``), the whole
    period is bucket 0."""
    out: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}

    def put(index: int, key: tuple[Any, ...], figures: Sequence[Any], sign: int = 1) -> None:
        slot = (index, key)
        if slot not in out:
            out[slot] = zero()
        add_to(out[slot], figures, sign)

    bounds = period.boundaries
    if period.granularity == "hour":
        rows = scope.filter(HourlyUsage.objects).filter(hour__gte=bounds[0], hour__lt=bounds[-1])
        for hour, key, figures in _grouped(rows, "hour" if bucketed else None, dims):
            put(bisect.bisect_right(bounds, hour) - 1 if bucketed else 0, key, figures)
        return out

    edges = list(bounds) if bucketed else [bounds[0], bounds[-1]]
    anchors = [_anchor(b) for b in edges]
    # Whole UTC days from the daily rows, each in the bucket whose anchors hold it.
    anchor_days = [a.date() for a in anchors]
    daily = scope.filter(DailyUsage.objects).filter(
        day__gte=anchor_days[0], day__lt=anchor_days[-1]
    )
    for day, key, figures in _grouped(daily, "day" if bucketed else None, dims):
        put(bisect.bisect_right(anchor_days, day) - 1 if bucketed else 0, key, figures)
    # The corrections: the hourly rows between each boundary and its anchor, added to the bucket
    # before the boundary and taken from the bucket after it (F(b) − F(a) = ±H).
    # The windows are named by their hours, so that the index is probed for those hours only
    # (a few per day) rather than scanned across the range.
    windows: dict[date, tuple[int, int]] = {}  # UTC day of the window -> (boundary, sign)
    window_hours: list[datetime] = []
    for i, (edge, anchor) in enumerate(zip(edges, anchors, strict=True)):
        if edge == anchor:
            continue
        low, high, sign = (anchor, edge, 1) if edge > anchor else (edge, anchor, -1)
        windows[low.date()] = (i, sign)
        hour = hour_of(low)
        hour += timedelta(hours=1) if hour < low else timedelta(0)
        while hour < high:
            window_hours.append(hour)
            hour += timedelta(hours=1)
    if not window_hours:
        return out
    hourly = _at_hours(scope.filter(HourlyUsage.objects), window_hours).annotate(
        utc_day=TruncDate("hour", tzinfo=UTC)
    )
    with _reading(hourly.db):
        corrections = list(_grouped(hourly, "utc_day", dims))
    for day, key, figures in corrections:
        boundary, sign = windows[day]
        if boundary > 0:
            put(boundary - 1 if bucketed else 0, key, figures, sign)
        if boundary < len(edges) - 1:
            put(boundary if bucketed else 0, key, figures, -sign)
    return {slot: figures for slot, figures in out.items() if any(figures)}


def totals(scope: Scope, period: Period) -> list[Any]:
    found = sums(scope, period, bucketed=False)
    return found.get((0, ()), zero())


# ---- what the page, the export and the API show ----------------------------------------------


def change(current: Any, previous: Any) -> Decimal | None:
    """The change from ``previous`` to ``current`` in per cent (one decimal), or None when
    there was nothing before."""
    if not previous:
        return None
    return ((Decimal(current) - Decimal(previous)) * 100 / Decimal(previous)).quantize(
        Decimal("0.1")
    )


@dataclass
class Report:
    period: Period
    group_by: str
    totals: dict[str, Any]
    previous: dict[str, Any]
    changes: dict[str, Decimal | None]
    # One per bucket: {"label", "figures": {...}, "groups": {group: cost}, "by_group": [cost]}
    buckets: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)  # {"value", "label"} in order
    by_key: list[dict[str, Any]] = field(default_factory=list)
    by_model: list[dict[str, Any]] = field(default_factory=list)


def named(figures: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(FIGURES, figures, strict=True))


def key_names(account: Account) -> dict[int, str]:
    """How pages name keys: by name; in an organization, with the member who made each, so
    that usage reads by member too ("laptop · bob@example.com")."""
    keys = account.api_keys  # type: ignore[attr-defined]
    if account.organization_id is None:
        return dict(keys.values_list("pk", "name"))
    return {
        pk: f"{name} · {email}" if email else name
        for pk, name, email in keys.values_list("pk", "name", "created_by__email")
    }


def _label(dim: str, value: Any, names: dict[int, str], unknown: str) -> str:
    if dim == "key_id":
        return names.get(value, unknown) if value is not None else unknown
    return str(value) if value else unknown


def _breakdown(
    found: dict[tuple[int, tuple[Any, ...]], list[Any]],
    dim: str,
    names: dict[int, str],
    unknown: str,
) -> list[dict[str, Any]]:
    rows = [
        {"value": key[0], "label": _label(dim, key[0], names, unknown), "figures": named(figures)}
        for (_bucket, key), figures in found.items()
    ]
    rows.sort(key=lambda r: (-r["figures"]["cost"], -r["figures"]["requests"], r["label"]))
    return rows


def report(scope: Scope, period: Period, group_by: str, *, unknown: str = "—") -> Report:
    """Everything the activity page shows: totals against the previous period, a series by
    bucket stacked by ``group_by`` and the breakdowns by key and by model."""
    names = key_names(scope.account)
    before = totals(scope, period.previous())
    dim = DIMENSIONS.get(group_by)
    series = sums(scope, period, (dim,) if dim else ())
    # The totals and the breakdown by the grouped dimension are the series summed: the same
    # rows, without reading them again.
    current = zero()
    per_group: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
    for (_index, key), figures in series.items():
        add_to(current, figures)
        add_to(per_group.setdefault((0, key), zero()), figures)

    def breakdown(by: str) -> list[dict[str, Any]]:
        found = per_group if by == dim else sums(scope, period, (by,), bucketed=False)
        return _breakdown(found, by, names, unknown)

    group_cost: dict[Any, Decimal] = {}
    buckets: list[dict[str, Any]] = [
        {"label": label, "figures": zero(), "groups": {}} for label in period.labels
    ]
    for (index, key), figures in series.items():
        bucket = buckets[index]
        add_to(bucket["figures"], figures)
        value = key[0] if key else None
        bucket["groups"][value] = bucket["groups"].get(value, Decimal(0)) + figures[COST]
        group_cost[value] = group_cost.get(value, Decimal(0)) + figures[COST]
    order = sorted(group_cost, key=lambda v: (-group_cost[v], str(v)))
    for bucket in buckets:
        bucket["figures"] = named(bucket["figures"])
        # The spend of each group in ``groups``' order (the chart's stacks, the table's columns).
        bucket["by_group"] = [bucket["groups"].get(v, Decimal(0)) for v in order]
    groups = [{"value": v, "label": _label(dim, v, names, unknown) if dim else ""} for v in order]
    return Report(
        period=period,
        group_by=group_by,
        totals=named(current),
        previous=named(before),
        changes={name: change(a, b) for name, a, b in zip(FIGURES, current, before, strict=True)},
        buckets=buckets,
        groups=groups,
        by_key=breakdown("key_id"),
        by_model=breakdown("model_id"),
    )


def export_rows(scope: Scope, period: Period) -> Iterable[list[Any]]:
    """The rollups of ``period`` by bucket × key × model × provider, in bucket order: the rows
    of the CSV export (bucket label, key id, key name, model, provider, figures)."""
    names = key_names(scope.account)
    if period.granularity == "hour":
        # An hourly row is already one hour × key × model × provider: streamed from the
        # database as it comes, in hour order, whatever the length of the range.
        rows = (
            scope.filter(HourlyUsage.objects)
            .filter(hour__gte=period.start, hour__lt=period.end)
            .order_by("hour", "key_id", "model_id", "provider")
            .values_list("hour", "key_id", "model_id", "provider", *FIGURES)
        )
        for hour, key_id, model_id, provider, *figures in rows.iterator(chunk_size=2000):
            yield [
                hour.astimezone(period.zone).strftime(HOUR_LABEL),
                "" if key_id is None else key_id,
                names.get(key_id, "") if key_id is not None else "",
                model_id,
                provider,
                *figures,
            ]
        return
    found = sums(scope, period, ("key_id", "model_id", "provider"))
    for (index, (key_id, model_id, provider)), figures in sorted(
        found.items(), key=lambda item: (item[0][0], item[0][1][0] or 0, *item[0][1][1:])
    ):
        yield [
            period.labels[index],
            "" if key_id is None else key_id,
            names.get(key_id, "") if key_id is not None else "",
            model_id,
            provider,
            *figures,
        ]
