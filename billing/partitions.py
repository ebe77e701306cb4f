"""The raw usage events' monthly partitions (PostgreSQL) and their retention.

On PostgreSQL ``billing_usageevent`` is partitioned by range of ``started_at``: one partition a
UTC month, named ``billing_usageevent_YYYYMM``, and a DEFAULT partition that takes whatever no
month's partition holds, so an insert never fails (migration 0003 made them). ``upkeep()``,
run by beat every day and by ``manage.py usagepartitions``, keeps partitions made
``AHEAD`` months ahead (and moves any rows the DEFAULT partition took into a partition of
their own), then applies retention.

Retention (``TP_USAGE_RETENTION_MONTHS``, 0 = keep forever): raw events that started more than
N months ago are dropped, a whole partition at a time (DETACH, then DROP: no row-by-row
delete, no bloat) once every row it can hold is older than that (so a month's rows stay until
its last day is N months old; old rows in the DEFAULT partition are deleted); the rollups keep their
figures, which is what pages, caps and ``reconcile`` read. On SQLite (the ``make run`` demo)
the table is plain and the old rows are deleted. ``usage.record_batch`` refuses events older
than the same horizon, since their earlier copy may be gone (recording them would bill twice).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import connection, transaction

from .models import UsageEvent

log = logging.getLogger(__name__)

TABLE = UsageEvent._meta.db_table
DEFAULT = f"{TABLE}_default"
AHEAD = 3  # months made ahead of the current one
_NAME = re.compile(rf"^{TABLE}_(\d{{4}})(\d{{2}})$")


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_rows: int = 0


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def months_before(moment: datetime, count: int) -> datetime:
    """The same instant ``count`` calendar months earlier (the day clamped to the month)."""
    index = moment.year * 12 + moment.month - 1 - count
    year, month = index // 12, index % 12 + 1
    last_day = (add_months(date(year, month, 1), 1) - date(year, month, 1)).days
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def retention_horizon(now: datetime | None = None) -> datetime | None:
    """Raw events that started before this instant may have been dropped (None: kept forever)."""
    months = settings.TP_USAGE_RETENTION_MONTHS
    if months <= 0:
        return None
    return months_before(now or datetime.now(UTC), months)


def partition_name(month: date) -> str:
    return f"{TABLE}_{month:%Y%m}"


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partitions() -> dict[date, str]:
    """Month → name of each month's partition attached to the table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    months = {}
    for name in names:
        match = _NAME.match(name)
        if match:
            months[date(int(match[1]), int(match[2]), 1)] = name
    return months


def _bound(month: date) -> str:
    return f"'{month:%Y-%m-%d} 00:00:00+00'"


def ensure_partition(month: date) -> bool:
    """Makes the partition of ``month`` if missing; True if made. Rows of that month that the
    DEFAULT partition took meanwhile move into it first (PostgreSQL refuses to attach a
    partition whose rows sit in the DEFAULT one)."""
    name = partition_name(month)
    if month in partitions():
        return False
    low, high = _bound(month), _bound(add_months(month, 1))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE started_at >= {low}"  # noqa: S608 (constant names)
            f" AND started_at < {high} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        if cursor.rowcount:
            log.info("moved %d usage events from %s to %s", cursor.rowcount, DEFAULT, name)
        # Attaching makes the table's indexes and constraints on the new partition.
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
        )
    return True


def drop_partition(name: str) -> None:
    """DETACH, then DROP: the table's lock is held only for the detach. (DETACH CONCURRENTLY
    is not allowed while a DEFAULT partition exists.)"""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
        cursor.execute(f"DROP TABLE {name}")


def upkeep(now: datetime | None = None) -> Report:
    """Partitions made ahead, then retention applied (module docstring)."""
    now = now or datetime.now(UTC)
    report = Report()
    horizon = retention_horizon(now)
    if not is_partitioned():
        if horizon is not None:
            report.deleted_rows, _ = UsageEvent.objects.filter(started_at__lt=horizon).delete()
        return report
    current = month_start(now)
    wanted = {add_months(current, i) for i in range(AHEAD + 1)}
    # Months of rows the DEFAULT partition took (events from before the first partition, or
    # from a clock far ahead) get a partition of their own, unless retention drops them anyway.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT (date_trunc('month', started_at AT TIME ZONE 'UTC'))::date"  # noqa: S608
            f" FROM {DEFAULT}"
        )
        wanted |= {row[0] for row in cursor.fetchall()}
    for month in sorted(wanted):
        if horizon is not None and add_months(month, 1) <= horizon.date():
            continue
        if ensure_partition(month):
            report.created.append(partition_name(month))
    if horizon is not None:
        for month, name in sorted(partitions().items()):
            end = datetime(*add_months(month, 1).timetuple()[:3], tzinfo=UTC)
            if end <= horizon:
                drop_partition(name)
                report.dropped.append(name)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {DEFAULT} WHERE started_at < %s", [horizon])  # noqa: S608
            report.deleted_rows = cursor.rowcount
    for name in report.created:
        log.info("usage partition %s created", name)
    for name in report.dropped:
        log.info("usage partition %s dropped (retention)", name)
    return report
