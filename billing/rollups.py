"""The usage rollups: hourly and daily sums of the usage events, written by ``usage.record_batch``
in the same transaction as the events (one multi-row upsert per table and batch; on PostgreSQL
part of the very statement that inserts the events), and the rule
by which pages turn UTC hours into days of the reader's time zone.

Days in a time zone. ``HourlyUsage`` buckets are UTC hours. A page shows a local day D as the
sum of the hourly rows whose hour *starts* in D, i.e. whose ``hour`` lies in
``[start of D, start of D+1)`` in UTC (``local_day_hours``): one range query on the
(account, hour) index. That is exact in every zone whose offset from UTC is a whole number of
hours at both ends of D (nearly all of them, DST changes included). Where the offset has 30 or
45 minutes (Asia/Kolkata +5:30, Asia/Kathmandu +5:45, America/St_Johns -3:30, Australia/Adelaide
+9:30/+10:30, ...), one UTC hour straddles local midnight; it counts, whole, in the day in which
it starts, so up to the first 30 or 45 minutes of each local day are shown in the day before.
Every event is still counted once, in a day that started at most 45 minutes before it, and a
range of days adds up exactly to what its hours add up to. Exact quarter-hour days would take
four times the rows on every page for every reader (see the report of issue 14); this rule
costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection

from .models import UsageEvent

# The rollups' figures, in the order of ``Sums`` and of the columns below.
FIGURES = (
    "requests",
    "errors",
    "streamed",
    "estimated",
    *UsageEvent.COUNTS,
    "cost",
    "duration_ms",
    "ttfb_ms",
    "ttfb_count",
    "byok",
)
COST = FIGURES.index("cost")
DIMENSIONS = ("key_id", "model_id", "provider")

# (account id, bucket, key id or None, model id, provider)
Slot = tuple[int, Any, int | None, str, str]


def figures_of(event: Any, cost: Decimal) -> list[Any]:
    """One event's contribution to a rollup row (``event``: a ``usage.Event``)."""
    return [
        1,
        int(event.status != "ok"),
        int(event.streamed),
        int(event.estimated),
        event.prompt_tokens,
        event.completion_tokens,
        event.cached_tokens,
        event.cache_write_tokens,
        event.cache_write_1h_tokens,
        event.reasoning_tokens,
        event.input_audio_tokens,
        event.output_audio_tokens,
        event.images,
        event.audio_ms,
        cost,
        event.duration_ms,
        event.ttfb_ms or 0,
        int(event.ttfb_ms is not None),
        int(event.byok),
    ]


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def group(
    rows: Iterable[tuple[int, datetime, int | None, str, str, list[Any]]],
) -> tuple[dict[Slot, list[Any]], dict[Slot, list[Any]]]:
    """(hourly, daily) sums of (account, started_at, key, model, provider, figures) rows."""
    hourly: dict[Slot, list[Any]] = {}
    for account, started_at, key, model, provider, figures in rows:
        slot = (account, hour_of(started_at), key, model, provider)
        sums = hourly.get(slot)
        if sums is None:
            hourly[slot] = list(figures)
        else:
            for i, value in enumerate(figures):
                sums[i] += value
    daily: dict[Slot, list[Any]] = {}
    for (account, hour, key, model, provider), figures in hourly.items():
        slot = (account, hour.date(), key, model, provider)
        sums = daily.get(slot)
        if sums is None:
            daily[slot] = list(figures)
        else:
            for i, value in enumerate(figures):
                sums[i] += value
    return hourly, daily


_CONFLICT = "ON CONFLICT (account_id, {bucket}, (COALESCE(key_id, 0)), model_id, provider)"


def _upsert_sql(table: str, bucket: str, values: str) -> str:
    columns = ("account_id", bucket, *DIMENSIONS, *FIGURES)
    updates = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in FIGURES)
    # The conflict target is the unique index: (account, bucket, COALESCE(key, 0), model,
    # provider), so that events of an unknown key add up in one row too.
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) {values} "
        f"{_CONFLICT.format(bucket=bucket)} DO UPDATE SET {updates}"
    )


_WIDTH = 2 + len(DIMENSIONS) + len(FIGURES)


def _rows(slots: dict[Slot, list[Any]], adapt: Any) -> list[list[Any]]:
    # In one order (account, bucket, ...), so that two writers never wait on each other's rows
    # crosswise (the accounts' locks serialise them anyway).
    return [
        [account, adapt(bucket), key, model, provider, *figures]
        for (account, bucket, key, model, provider), figures in sorted(
            slots.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or 0, *item[0][3:])
        )
    ]


def _write(cursor: Any, table: str, bucket: str, kind: str, rows: list[list[Any]]) -> None:
    values = "VALUES (" + ", ".join(["%s"] * _WIDTH) + ")"
    cursor.executemany(_upsert_sql(table, bucket, values), rows)


def add(hourly: dict[Slot, list[Any]], daily: dict[Slot, list[Any]]) -> None:
    """Adds the sums to the rollup rows (SQLite, in ``make run``; on PostgreSQL the recording
    statement sums and upserts them itself, ``upserts_from``): one statement per table for the
    whole batch (each slot once, as one statement may not update a row twice). Runs in the
    caller's transaction, under the accounts' row locks, so an account's rows are never
    written by two batches at once."""
    if not hourly:
        return
    ops = connection.ops
    with connection.cursor() as cursor:
        _write(
            cursor,
            "billing_hourlyusage",
            "hour",
            "timestamptz",
            _rows(hourly, ops.adapt_datetimefield_value),
        )
        _write(cursor, "billing_dailyusage", "day", "date", _rows(daily, ops.adapt_datefield_value))


# The figures of ``FIGURES`` summed over usage event rows, as SQL (what ``figures_of`` and
# ``group`` compute in Python), and the UTC hour and day of an event's ``started_at``.
_METRICS = (
    "COUNT(*), SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN streamed THEN 1 ELSE 0 END), SUM(CASE WHEN estimated THEN 1 ELSE 0 END),"
    " SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),"
    " SUM(cache_write_tokens), SUM(cache_write_1h_tokens), SUM(reasoning_tokens),"
    " SUM(input_audio_tokens), SUM(output_audio_tokens), SUM(images), SUM(audio_ms),"
    " SUM(cost), SUM(duration_ms), COALESCE(SUM(ttfb_ms), 0), COUNT(ttfb_ms),"
    " SUM(CASE WHEN byok THEN 1 ELSE 0 END)"
)
_HOUR = "date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_DAY = "(started_at AT TIME ZONE 'UTC')::date"
# The usage event columns those read.
EVENT_COLUMNS = (
    "account_id",
    "started_at",
    "key_id",
    "model_id",
    "provider",
    "status",
    "streamed",
    "estimated",
    *UsageEvent.COUNTS,
    "cost",
    "duration_ms",
    "ttfb_ms",
    "byok",
)


def upserts_from(events: str) -> list[str]:
    """PostgreSQL: the hourly and the daily upsert of the usage event rows of relation
    ``events`` (the recording statement's rows as it inserts them, a ``WITH`` query holding
    ``EVENT_COLUMNS``), summed in the database by slot, so each slot once, in one order.
    The same sums as ``figures_of`` and ``group`` (SQLite's way); tests/test_usage_rollups.py
    holds the rows written this way to the raw events, figure by figure."""
    out = []
    for table, bucket, expression in (
        ("billing_hourlyusage", "hour", _HOUR),
        ("billing_dailyusage", "day", _DAY),
    ):
        slot = f"account_id, {expression}, key_id, model_id, provider"
        out.append(
            _upsert_sql(
                table,
                bucket,
                f"SELECT {slot}, {_METRICS} FROM {events} GROUP BY {slot}"  # noqa: S608
                f" ORDER BY account_id, 2, COALESCE(key_id, 0), model_id, provider",
            )
        )
    return out


def rebuild(account_ids: Sequence[int] | None = None) -> None:
    """The rollups of the given accounts (or all) summed again from their raw events, in SQL
    (PostgreSQL): for a bulk load (the usage benchmark) or a repair. Raw events that retention
    dropped are gone, so a repair after retention would lose their rows: refused then by the
    caller's judgement, not here."""
    where = "WHERE account_id = ANY(%s)" if account_ids is not None else ""
    params = [list(account_ids)] if account_ids is not None else []
    columns = ", ".join(FIGURES)
    hour, day, metrics = _HOUR, "(hour AT TIME ZONE 'UTC')::date", _METRICS
    sums = ", ".join(f"SUM({name})" for name in FIGURES)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM billing_dailyusage {where}", params)  # noqa: S608
        cursor.execute(f"DELETE FROM billing_hourlyusage {where}", params)  # noqa: S608
        cursor.execute(
            f"INSERT INTO billing_hourlyusage (account_id, hour, key_id, model_id, provider,"  # noqa: S608
            f" {columns}) SELECT account_id, {hour}, key_id, model_id, provider, {metrics}"
            f" FROM billing_usageevent {where}"
            f" GROUP BY account_id, {hour}, key_id, model_id, provider",
            params,
        )
        cursor.execute(
            f"INSERT INTO billing_dailyusage (account_id, day, key_id, model_id, provider,"  # noqa: S608
            f" {columns}) SELECT account_id, {day}, key_id, model_id, provider, {sums}"
            f" FROM billing_hourlyusage {where}"
            f" GROUP BY account_id, {day}, key_id, model_id, provider",
            params,
        )


def local_day_hours(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC bounds [start, end) of ``hour`` for the hourly rows that make the local ``day``
    in ``zone``: local midnight of ``day`` and of the next day, as UTC instants. A row belongs
    to the day in which its hour starts (module docstring): exact wherever the zone's offset
    is a whole number of hours; elsewhere the hour that straddles midnight counts in the day
    before."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
    return start, end


def local_day_of_hour(hour: datetime, zone: ZoneInfo) -> date:
    """The local day in ``zone`` to which the hourly row of ``hour`` (a UTC hour start)
    belongs: the day in which that hour starts, the inverse of ``local_day_hours``."""
    return hour.astimezone(zone).date()
