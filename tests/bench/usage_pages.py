"""The usage pages at ten million events (issue 14): server time of the activity page, the
request log, the exports and the usage API, over a data set built by ``usage_data.py``.

    .venv/bin/python tests/bench/usage_data.py --events 10000000 --record 2000 --keep \\
        --database-url postgres://postgres@127.0.0.1:5432/tokenpapa_bench_usage   # ~15-25 min
    .venv/bin/python tests/bench/usage_pages.py \\
        --database-url postgres://postgres@127.0.0.1:5432/tokenpapa_bench_usage [--runs 20]

(or ``make bench-usage``, which builds the data set when the database does not exist). The data
set: 10M events over 90 days, a heavy account with ~40% of them (5 keys, 12 models, 3
providers) among 2,000 small accounts; migrate the kept database after pulling new migrations
(``DATABASE_URL=... manage.py migrate``). Each case runs through Django's test client signed in
as the heavy account (middleware, view, queries and template; no network), one warm-up, then
``--runs`` timed; p50 and p95 in ms with PASS/MISS against the issue's targets: p95 at most
150 ms for the pages, the log and the API, the first bytes of a 30-day CSV within 200 ms.
Figures, not assertions; pytest does not collect this folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import request_log
import usage_data

PAGE_TARGET = 150.0
FIRST_BYTE_TARGET = 200.0


def activity_cases(client: Any, heavy: Any) -> list[tuple[str, Callable[[], Any], float]]:
    def ok(response: Any) -> Any:
        assert response.status_code == 200, (response.status_code, response.content[:300])
        return response

    def page(zone: str, query: str) -> Callable[[], Any]:
        def get() -> Any:
            if heavy.time_zone != zone:
                heavy.time_zone = zone
                heavy.save(update_fields=["time_zone"])
            return ok(client.get(query))

        return get

    def first_bytes(query: str) -> Callable[[], Any]:
        def get() -> Any:
            response = ok(client.get(query))
            chunks = iter(response.streaming_content)
            assert next(chunks)
            response.close()
            return response

        return get

    today = datetime.now(UTC).date()
    api = f"/api/v1/usage/?from={today - timedelta(days=89)}&to={today}"
    return [
        ("activity: 24 hours, UTC", page("UTC", "/usage/?range=24h"), PAGE_TARGET),
        ("activity: 30 days, UTC", page("UTC", "/usage/?range=30d"), PAGE_TARGET),
        ("activity: 90 days, UTC", page("UTC", "/usage/?range=90d"), PAGE_TARGET),
        ("activity: 30 days, Tokyo", page("Asia/Tokyo", "/usage/?range=30d"), PAGE_TARGET),
        ("activity: 90 days, Tokyo", page("Asia/Tokyo", "/usage/?range=90d"), PAGE_TARGET),
        (
            "activity: 90 days, New York, by key",
            page("America/New_York", "/usage/?range=90d&group_by=key"),
            PAGE_TARGET,
        ),
        ("activity API: 90 days by model", page("UTC", api), PAGE_TARGET),
        (
            "activity CSV: first bytes, 30 days",
            first_bytes("/usage/export.csv?range=30d"),
            FIRST_BYTE_TARGET,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=usage_data.DEFAULT_URL)
    args = parser.parse_args()

    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
    usage_data.prepare_environment(args.database_url)
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from accounts.models import User

    setup_test_environment()
    settings.DEBUG = False
    heavy = User.objects.get(email="heavy@example.com")
    usage_data.settle()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM billing_usageevent),"
            " (SELECT count(*) FROM billing_usageevent WHERE account_id = %s),"
            " (SELECT count(*) FROM billing_hourlyusage WHERE account_id = %s)",
            [heavy.account.pk, heavy.account.pk],
        )
        total, mine, hourly = cursor.fetchone()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the start")
    print(
        f"data set: {total:,} usage events; the heavy account {mine:,} "
        f"({hourly:,} hourly rollup rows); {args.runs} runs each, ms"
    )
    client = Client()
    client.force_login(heavy)
    rows: list[tuple[str, float, float, float]] = []
    for label, call, target in activity_cases(client, heavy):
        rows.append((label, *request_log.timed(args.runs, call), target))
    heavy.time_zone = ""
    heavy.save(update_fields=["time_zone"])
    for label, p50, p95 in request_log.measure(args.runs):
        target = FIRST_BYTE_TARGET if label.startswith("CSV") else PAGE_TARGET
        rows.append((label, p50, p95, target))
    print(f"{'':44} {'p50':>8} {'p95':>8}  target (p95)")
    for label, p50, p95, target in rows:
        verdict = "PASS" if p95 <= target else "MISS"
        print(f"{label:44} {p50:8.1f} {p95:8.1f}  {verdict} (≤ {target:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
