"""Server time of the activity page, the usage API and the CSV export for a heavy account
(issue 14): the figures of ~4M requests over 181 days, read from the rollups.

Creates a throwaway PostgreSQL database (``tokenpapa_bench_activity``, dropped at the end),
migrates it and fills, by COPY, the hourly rollups of one account with 5 keys × 12 models
(each on its provider) for every hour of the last 181 days (so that a 90-day range and the 90
days before it are both full: ~260k hourly rows, ~130k per 90 days, ~30 requests a row, ~8M
requests), the daily rows summed from them, and 50 lighter accounts around it. Then requests
each page through Django's test client in this process: 5 warm-up runs, then N timed runs
(median and p95 in milliseconds, middleware, view, queries and template included; no
network) and the number of queries of one run. For the CSV, the time to the first bytes (the
header) and to the whole file. The target: well under 150 ms for 90 days. Figures, not
assertions: nothing fails.

    .venv/bin/python tests/bench/activity_pages.py [--runs 20] [--days 181] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
DB = "tokenpapa_bench_activity"
TARGET_MS = 150.0
WARMUP = 5
KEYS = 5
NY = "America/New_York"
MODELS = [(f"vendor-{i % 4}/model-{i}", f"provider-{i % 4}") for i in range(12)]
COLUMNS = (
    "account_id, hour, key_id, model_id, provider, requests, errors, streamed, estimated,"
    " prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,"
    " cache_write_1h_tokens, reasoning_tokens, input_audio_tokens, output_audio_tokens,"
    " images, audio_ms, cost, duration_ms, ttfb_ms, ttfb_count"
)


def prepare_environment() -> None:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(ROOT))


def recreate_database(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{DB}"')


def fill(days: int) -> tuple[Any, int]:
    """The heavy account's user and the number of hourly rows written for it."""
    from django.db import connection

    from accounts.models import User
    from keys.services import issue_key

    rng = random.Random(14)
    heavy = User.objects.create_user("heavy@example.com", "x")
    keys = [issue_key(account=heavy.account, name=f"key-{i}")[0].pk for i in range(KEYS)]
    others = []
    for n in range(50):
        user = User.objects.create_user(f"light{n}@example.com", "x")
        others.append((user.account.pk, issue_key(account=user.account, name="k")[0].pk))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(days=days)
    written = 0
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY billing_hourlyusage ({COLUMNS}) FROM STDIN") as copy:
            hour = first
            while hour <= now:
                for key in keys:
                    for model, provider in MODELS:
                        requests = rng.randint(10, 50)
                        prompt = requests * rng.randint(200, 3000)
                        completion = requests * rng.randint(20, 800)
                        cost = f"{requests * rng.randint(1, 5_000_000) / 1e9:.9f}"
                        copy.write_row(
                            (heavy.account.pk, hour, key, model, provider, requests,
                             rng.randint(0, 2), requests // 2, 0, prompt, completion,
                             prompt // 4, 0, 0, completion // 5, 0, 0, 0, 0, cost,
                             requests * 900, requests * 200, requests)
                        )  # fmt: skip
                        written += 1
                for account, key in rng.sample(others, 3):
                    model, provider = rng.choice(MODELS)
                    copy.write_row(
                        (account, hour, key, model, provider, 1, 0, 0, 0, 100, 10, 0, 0, 0, 0,
                         0, 0, 0, 0, "0.000100000", 900, 200, 1)
                    )  # fmt: skip
                hour += timedelta(hours=1)
        sums = ", ".join(f"SUM({name})" for name in COLUMNS.split(", ")[5:])
        figures = ", ".join(COLUMNS.split(", ")[5:])
        cursor.execute(
            f"INSERT INTO billing_dailyusage (account_id, day, key_id, model_id, provider,"
            f" {figures}) SELECT account_id, (hour AT TIME ZONE 'UTC')::date, key_id, model_id,"
            f" provider, {sums} FROM billing_hourlyusage"
            " GROUP BY account_id, (hour AT TIME ZONE 'UTC')::date, key_id, model_id, provider"
        )
        cursor.execute("ANALYZE billing_hourlyusage")
        cursor.execute("ANALYZE billing_dailyusage")
    return heavy, written


def measure(get: Callable[[], Any], runs: int) -> tuple[float, float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(WARMUP):
        get()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        response = get()
        times.append((time.perf_counter_ns() - start) / 1e6)
    with CaptureQueriesContext(connection) as queries:
        response = get()
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
    return statistics.median(times), p95, len(queries), response.status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--days", type=int, default=181)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    prepare_environment()
    recreate_database()
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections
        from django.test import Client

        from billing.models import DailyUsage, HourlyUsage

        call_command("migrate", verbosity=0)
        started = time.monotonic()
        heavy, rows = fill(args.days)
        requests = sum(
            HourlyUsage.objects.filter(account=heavy.account).values_list("requests", flat=True)
        )
        # As in production: no query log, no debug pages.
        settings.DEBUG = False
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        client = Client()
        client.force_login(heavy)

        def page(zone: str, query: str) -> Callable[[], Any]:
            def get() -> Any:
                if heavy.time_zone != zone:
                    heavy.time_zone = zone
                    heavy.save(update_fields=["time_zone"])
                return client.get(query)

            return get

        def first_bytes(query: str) -> Callable[[], Any]:
            def get() -> Any:
                response = client.get(query)
                next(iter(response.streaming_content))
                response.close()
                return response

            return get

        def whole(query: str) -> Callable[[], Any]:
            def get() -> Any:
                response = client.get(query)
                b"".join(response.streaming_content)
                return response

            return get

        today = datetime.now(UTC).date()
        api = f"/api/v1/usage/?from={today - timedelta(days=89)}&to={today}"
        csv = "/usage/export.csv?range=90d"
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("/usage/ 24 h, UTC", page("UTC", "/usage/?range=24h")),
            ("/usage/ 30 days, UTC", page("UTC", "/usage/?range=30d")),
            ("/usage/ 90 days, UTC", page("UTC", "/usage/?range=90d")),
            ("/usage/ 30 days, New York", page("America/New_York", "/usage/?range=30d")),
            ("/usage/ 90 days, New York", page("America/New_York", "/usage/?range=90d")),
            ("/usage/ 90 days, Kolkata", page("Asia/Kolkata", "/usage/?range=90d")),
            ("/usage/ 90 days, Paris, by key", page("Europe/Paris", "/usage/?range=90d&group_by=key")),  # noqa: E501
            ("/usage/ 90 days, NY, one model", page(NY, f"/usage/?range=90d&model={MODELS[3][0]}")),
            ("API 90 days by model, NY", page("UTC", f"{api}&group_by=model&tz={NY}")),
            ("API 90 days by key, hourly", page("UTC", f"{api}&group_by=key&granularity=hour")),
            ("CSV 90 days by day, first bytes", first_bytes(csv)),
            ("CSV 90 days by day, whole", whole(csv)),
            ("CSV 90 days by hour, first bytes", first_bytes(f"{csv}&granularity=hour")),
            ("CSV 90 days by hour, whole", whole(f"{csv}&granularity=hour")),
        ]  # fmt: skip
        print(
            f"Activity of one account: {rows:,} hourly rows over {args.days} days "
            f"({KEYS} keys x {len(MODELS)} models), {requests:,} requests; "
            f"{DailyUsage.objects.count():,} daily rows in all; 50 light accounts around it; "
            f"filled in {time.monotonic() - started:.0f} s"
        )
        print(
            f"{args.runs} runs each after {WARMUP} warm-up runs (Django test client, in "
            f"process, DEBUG off, PostgreSQL database {DB})"
        )
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the start")
        print(f"{'case':<40} {'median ms':>10} {'p95 ms':>9} {'queries':>8} {'status':>7}")
        worst = 0.0
        for name, get in cases:
            median, p95, queries, status = measure(get, args.runs)
            if "90 days" in name and "CSV" not in name and "hourly" not in name:
                worst = max(worst, median)
            print(f"{name:<40} {median:>10.1f} {p95:>9.1f} {queries:>8} {status:>7}")
        verdict = "PASS" if worst <= TARGET_MS else "MISS"
        print(f"target: 90-day page/API median under {TARGET_MS:.0f} ms -> {verdict} "
              f"(worst {worst:.1f} ms)")  # fmt: skip
        connections.close_all()
    finally:
        if not args.keep:
            recreate_database(drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
