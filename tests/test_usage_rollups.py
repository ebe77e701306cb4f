"""The usage data layer (issue 14): hourly and daily rollups written with each recorded batch
equal the sums of the raw events to the nano-dollar, in any time zone and across the monthly
partitions; recording stays idempotent on (request_id, started_at); retention drops raw
partitions and keeps the rollups' totals, and reconciliation stays clean."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import partitions, reconcile, rollups, usage
from billing.models import DailyUsage, HourlyUsage, LedgerEntry, UsageEvent
from keys.services import issue_key

from .conftest import credit

NOW = datetime.now(UTC)
# Month starts two to five months back: every event is well inside the default retention.
BOUNDARIES = [
    datetime(*partitions.add_months(partitions.month_start(NOW), -n).timetuple()[:3], tzinfo=UTC)
    for n in (2, 3, 5)
]
ZONES = [
    "UTC",
    "Asia/Kolkata",  # +5:30
    "Asia/Kathmandu",  # +5:45
    "America/St_Johns",  # -3:30, with DST
    "Europe/Paris",  # DST
    "America/New_York",  # DST
    "Australia/Adelaide",  # +9:30 / +10:30
    "Pacific/Chatham",  # +12:45 / +13:45
]
STATUSES = ["ok", "ok", "ok", "error", "client_closed", "upstream_cut"]


@pytest.fixture
def people(make_user: Any) -> dict[str, Any]:
    """Two accounts with two keys each (and an id no key has); plenty of credit."""
    found: dict[str, Any] = {}
    for name in ("alice", "bob"):
        user = make_user(f"{name}@example.com")
        credit(user, 1_000_000)
        keys = [issue_key(account=user.account, name=f"{name}-{i}")[0].pk for i in range(2)]
        found[name] = (user.account.pk, [*keys, 999_999])
    return found


def reset_usage() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE billing_usageevent, billing_hourlyusage, billing_dailyusage")


def event_strategy(people: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    owners = list(people.values())

    @st.composite
    def event(draw: Any) -> dict[str, Any]:
        account, keys = draw(st.sampled_from(owners))
        boundary = draw(st.sampled_from(BOUNDARIES))
        seconds = draw(st.integers(-3 * 86400, 3 * 86400))
        micros = draw(st.integers(0, 999_999))
        started = boundary + timedelta(seconds=seconds, microseconds=micros)
        ttfb = draw(st.none() | st.integers(0, 60_000))
        return {
            "request_id": f"req-{draw(st.uuids()).hex}",
            "account": account,
            "key": draw(st.sampled_from(keys)),
            "model": draw(st.sampled_from(["m-large", "m-small", "vendor/m-embed"])),
            "provider": draw(st.sampled_from(["mistral", "openai", ""])),
            "prompt_tokens": draw(st.integers(0, 2_000_000)),
            "completion_tokens": draw(st.integers(0, 200_000)),
            "cached_tokens": draw(st.integers(0, 100_000)),
            "cache_write_tokens": draw(st.integers(0, 10_000)),
            "cache_write_1h_tokens": draw(st.integers(0, 10_000)),
            "reasoning_tokens": draw(st.integers(0, 50_000)),
            "input_audio_tokens": draw(st.integers(0, 1000)),
            "output_audio_tokens": draw(st.integers(0, 1000)),
            "images": draw(st.integers(0, 4)),
            "audio_ms": draw(st.integers(0, 100_000)),
            # Nano-dollar precision, up to $100 a request.
            "cost": str(Decimal(draw(st.integers(0, 100 * 10**9))).scaleb(-9)),
            "estimated": draw(st.booleans()),
            "status": draw(st.sampled_from(STATUSES)),
            "streamed": draw(st.booleans()),
            "byok": draw(st.booleans()),
            "started_at": started.timestamp(),
            "duration_ms": draw(st.integers(0, 600_000)),
            "ttfb_ms": ttfb,
        }

    return event()


def raw_figures(event: UsageEvent) -> list[Any]:
    return [
        1,
        int(event.status != "ok"),
        int(event.streamed),
        int(event.estimated),
        *(getattr(event, name) for name in rollups.FIGURES[4:14]),
        event.cost,
        event.duration_ms,
        event.ttfb_ms or 0,
        int(event.ttfb_ms is not None),
        int(event.byok),
    ]


def summed(rows: Iterator[tuple[Any, list[Any]]]) -> dict[Any, list[Any]]:
    sums: dict[Any, list[Any]] = {}
    for slot, figures in rows:
        if slot in sums:
            sums[slot] = [a + b for a, b in zip(sums[slot], figures, strict=True)]
        else:
            sums[slot] = list(figures)
    return sums


def rollup_rows(model: Any, bucket: str) -> dict[Any, list[Any]]:
    return {
        (row["account_id"], row[bucket], row["key_id"], row["model_id"], row["provider"]): [
            row[name] for name in rollups.FIGURES
        ]
        for row in model.objects.values("account_id", bucket, *rollups.DIMENSIONS, *rollups.FIGURES)
    }


def check_rollups_match_raw_events(zones: list[str]) -> None:
    events = list(UsageEvent.objects.all())
    hourly = rollup_rows(HourlyUsage, "hour")
    daily = rollup_rows(DailyUsage, "day")

    def slot(e: UsageEvent, bucket: Any) -> tuple[Any, ...]:
        return (e.account_id, bucket, e.key_id, e.model_id, e.provider)

    assert hourly == summed(
        (slot(e, rollups.hour_of(e.started_at)), raw_figures(e)) for e in events
    )
    assert daily == summed(
        (slot(e, e.started_at.astimezone(UTC).date()), raw_figures(e)) for e in events
    )

    # Days of a time zone as a page reads them: a range query on the hourly rows per local day.
    for name in zones:
        zone = ZoneInfo(name)
        expected: dict[tuple[int, date], Decimal] = defaultdict(Decimal)
        exact = True
        for e in events:
            hour = rollups.hour_of(e.started_at)
            day = rollups.local_day_of_hour(hour, zone)
            expected[(e.account_id, day)] += e.cost
            local = e.started_at.astimezone(zone)
            if local.date() != day:  # only where the offset is not whole hours
                offset = local.utcoffset()
                assert offset is not None and offset.seconds % 3600 != 0, (name, e.started_at)
                assert local - day_start(day, zone) < timedelta(hours=1) + timedelta(days=1)
                exact = False
        for account_id, day in list(expected):
            start, end = rollups.local_day_hours(day, zone)
            total = HourlyUsage.objects.filter(
                account_id=account_id, hour__gte=start, hour__lt=end
            ).aggregate(s=Sum("cost"))["s"]
            assert total == expected[(account_id, day)], (name, day)
        if name in {"UTC", "Europe/Paris", "America/New_York"}:
            assert exact


def day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def usage_debits(account_id: int) -> Decimal:
    total = LedgerEntry.objects.filter(account_id=account_id, kind="usage").aggregate(
        s=Sum("amount")
    )["s"]
    return -(total or Decimal(0))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_rollups_equal_the_raw_events_to_the_nano_dollar(people: dict[str, Any], data: Any) -> None:
    """Random events in random batches, some resent in a later batch (and a whole batch
    redelivered), across month boundaries: the hourly and daily rows hold exactly the sums of
    the raw rows, local days in any zone add up, and each event is billed once."""
    reset_usage()
    debits_before = {a: usage_debits(a) for a, _ in people.values()}
    events = data.draw(st.lists(event_strategy(people), min_size=1, max_size=40))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3)))
    batches = [events[i:j] for i, j in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    resent = data.draw(st.lists(st.sampled_from(events), max_size=5))
    batches.append(resent)
    batches.append(batches[0])  # a redelivered batch
    recorded = sum(usage.record_batch(batch) for batch in batches if batch)
    assert recorded == len(events) == UsageEvent.objects.count()
    if data.draw(st.booleans()):
        # Beat's upkeep moves the rows the DEFAULT partition took into their months' partitions.
        partitions.upkeep()
        assert UsageEvent.objects.count() == len(events)
    zones = data.draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True))
    check_rollups_match_raw_events(zones)
    for account_id, _ in people.values():
        costs = UsageEvent.objects.filter(account_id=account_id).aggregate(s=Sum("cost"))["s"]
        assert usage_debits(account_id) - debits_before[account_id] == (costs or Decimal(0))


def test_a_replayed_event_is_the_same_request(people: dict[str, Any]) -> None:
    """The relay stamps started_at once, as a float; the spool and the broker carry it as JSON
    (orjson both ways), so a replayed copy parses to the identical instant and meets the
    (request_id, started_at) constraint: recording it again, alone or in another batch, bills
    nothing."""
    account, keys = people["alice"]
    event = {
        "request_id": "req-replayed",
        "account": account,
        "key": keys[0],
        "model": "m-large",
        "provider": "mistral",
        "cost": "0.123456789",
        "started_at": NOW.timestamp() + 0.123456789,
    }
    replayed = orjson.loads(orjson.dumps([event]))[0]
    assert usage.Event.parse(replayed).started_at == usage.Event.parse(event).started_at
    before = usage_debits(account)
    assert usage.record_batch([event]) == 1
    assert usage.record_batch([replayed]) == 0
    other = {**event, "request_id": "req-other", "cost": "1"}
    assert usage.record_batch([other, replayed]) == 1
    assert usage_debits(account) - before == Decimal("1.123456789")
    assert DailyUsage.objects.filter(account_id=account).aggregate(s=Sum("requests"))["s"] == 2
    # The database refuses a copy that would slip past the check.
    from django.db import IntegrityError, transaction

    row = UsageEvent.objects.get(request_id="req-replayed")
    row.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        row.save()


def partition_of(request_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM billing_usageevent WHERE request_id = %s",
            [request_id],
        )
        return cursor.fetchone()[0]


def test_partitions_are_made_ahead_and_take_stray_rows(people: dict[str, Any]) -> None:
    account, keys = people["bob"]
    current = partitions.month_start(NOW)
    out = io.StringIO()
    call_command("usagepartitions", stdout=out)
    made = partitions.partitions()
    assert {partitions.add_months(current, i) for i in range(partitions.AHEAD + 1)} <= set(made)
    # An event from a month without a partition (a clock far ahead) still goes in...
    far = partitions.add_months(current, 8)
    when = datetime(far.year, far.month, 15, tzinfo=UTC)
    event = {"request_id": "req-far", "account": account, "key": keys[0], "model": "m-small"}
    assert usage.record_batch([{**event, "cost": "0.5", "started_at": when.timestamp()}]) == 1
    assert partition_of("req-far") == partitions.DEFAULT
    # ...and moves to its own partition when upkeep sees it; it is still recorded once.
    report = partitions.upkeep()
    assert partitions.partition_name(far) in report.created
    assert partition_of("req-far") == partitions.partition_name(far)
    assert usage.record_batch([{**event, "cost": "0.5", "started_at": when.timestamp()}]) == 0
    assert reconcile.check() == []


def test_retention_drops_raw_partitions_and_keeps_the_totals(
    people: dict[str, Any], settings: Any
) -> None:
    account, keys = people["alice"]
    reset_usage()
    months_back = [1, 2, 3, 4, 6]
    batch = []
    for i, back in enumerate(months_back):
        month = partitions.add_months(partitions.month_start(NOW), -back)
        when = datetime(month.year, month.month, 1, tzinfo=UTC) + timedelta(days=2, hours=i)
        batch.append(
            {
                "request_id": f"req-old-{back}",
                "account": account,
                "key": keys[i % 3],
                "model": "m-large",
                "provider": "openai",
                "cost": f"{back}.000000001",
                "started_at": when.timestamp(),
            }
        )
    assert usage.record_batch(batch) == len(batch)
    partitions.upkeep()  # their months' partitions (they were in DEFAULT until now)
    totals = {
        model: model.objects.filter(account_id=account).aggregate(c=Sum("cost"), r=Sum("requests"))
        for model in (HourlyUsage, DailyUsage)
    }
    assert totals[DailyUsage]["c"] == sum(Decimal(e["cost"]) for e in batch)

    settings.TP_USAGE_RETENTION_MONTHS = 3
    horizon = partitions.retention_horizon()
    assert horizon is not None
    report = partitions.upkeep()
    kept = set(UsageEvent.objects.filter(account_id=account).values_list("request_id", flat=True))
    for back in months_back:
        month = partitions.add_months(partitions.month_start(NOW), -back)
        whole_month_past = partitions.add_months(month, 1) <= horizon.date()
        assert (f"req-old-{back}" not in kept) == whole_month_past, back
        assert (partitions.partition_name(month) in report.dropped) == whole_month_past
    assert {"req-old-1", "req-old-2"} <= kept and "req-old-6" not in kept
    for model, before in totals.items():
        after = model.objects.filter(account_id=account).aggregate(c=Sum("cost"), r=Sum("requests"))
        assert after == before, model
    assert reconcile.check() == []
    call_command("reconcile", stdout=io.StringIO())
    # An event from beyond the horizon comes back (a very old spool): its first copy may be
    # gone, so it is not recorded, not billed twice.
    before = usage_debits(account)
    assert usage.record_batch([batch[-1]]) == 0
    assert usage_debits(account) == before
    assert reconcile.check() == []

    settings.TP_USAGE_RETENTION_MONTHS = 0  # keep for ever: nothing more goes
    assert partitions.upkeep().dropped == []
    assert partitions.retention_horizon() is None


def test_local_days_follow_the_documented_rule() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    start, end = rollups.local_day_hours(date(2026, 3, 10), kolkata)
    assert (start, end) == (
        datetime(2026, 3, 9, 18, 30, tzinfo=UTC),
        datetime(2026, 3, 10, 18, 30, tzinfo=UTC),
    )
    # The hour 18:00-19:00 UTC (23:30-00:30 local) counts whole in the day it starts in.
    assert rollups.local_day_of_hour(datetime(2026, 3, 9, 18, tzinfo=UTC), kolkata) == date(
        2026, 3, 9
    )
    paris = ZoneInfo("Europe/Paris")  # a 23-hour day (DST starts on 29 March 2026)
    start, end = rollups.local_day_hours(date(2026, 3, 29), paris)
    assert end - start == timedelta(hours=23)
