"""The request log at scale (issue 14): how long its pages, its API and its CSV take for the
heavy account of a data set of N usage events (``usage_data.build_dataset``: one heavy account
with about 40% of them over 90 days, among 2,000 small ones).

Creates a throwaway PostgreSQL database (``--database-url``; created, migrated and dropped at
the end unless ``--keep``; ``--reuse`` measures a kept one again without building), then times
each of these through Django's test Client, signed in as the heavy account, ``--runs`` times
(20), and prints p50 and p95 in milliseconds:

- the log's newest page (``/usage/requests/``), and the last 30 days;
- a deep page: 50 cursors followed from the newest, the 50th page timed;
- one model over the last 30 days; the failed requests (``status=error``), all time;
- the API's newest page and its deep page (50 ``next`` cursors followed);
- the first bytes of the 30 days' CSV (the header and the first chunk of rows).

Figures, not assertions. Not collected by pytest.

    .venv/bin/python tests/bench/request_log.py [--events 1000000] [--runs 20] \\
        [--database-url postgres://postgres@127.0.0.1:5432/tokenpapa_bench_requestlog] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import usage_data
from stats import percentile

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tokenpapa_bench_requestlog"
DEEP = 50


def timed(runs: int, call: Callable[[], Any]) -> tuple[float, float]:
    """(p50, p95) in ms of ``runs`` calls, after one untimed warm-up."""
    call()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
    assert p50 is not None and p95 is not None
    return p50, p95


def measure(runs: int) -> list[tuple[str, float, float]]:
    from django.test import Client

    from accounts.models import User
    from billing.models import DailyUsage

    heavy = User.objects.get(email="heavy@example.com")
    client = Client()
    client.force_login(heavy)
    today = datetime.now(UTC).date()
    month = {"since": str(today - timedelta(days=29)), "until": str(today)}
    month_api = {
        "since": datetime.combine(today - timedelta(days=29), datetime.min.time(), UTC).isoformat()
    }
    top_model = (
        DailyUsage.objects.filter(account=heavy.account)
        .values_list("model_id", flat=True)
        .order_by("model_id")
        .first()
    )

    def ok(response: Any) -> Any:
        assert response.status_code == 200, (response.status_code, response.content[:300])
        return response

    def page(params: dict[str, str]) -> Callable[[], Any]:
        return lambda: ok(client.get("/usage/requests/", params))

    # The 50th page's cursor, found by following the links as a reader would.
    cursor = None
    for _ in range(DEEP - 1):
        found = ok(client.get("/usage/requests/", {"cursor": cursor} if cursor else {}))
        cursor = found.context["page"].older
    api_cursor = None
    for _ in range(DEEP - 1):
        body = ok(
            client.get("/api/v1/usage/requests/", {"cursor": api_cursor} if api_cursor else {})
        ).json()
        api_cursor = body["next"]

    def csv_first_bytes() -> None:
        response = ok(client.get("/usage/requests/export.csv", month))
        chunks = iter(response.streaming_content)
        header = next(chunks)
        first_row = next(chunks)  # the first chunk's first row: its query has run
        assert header and first_row
        response.close()

    return [
        ("log: newest page", *timed(runs, page({}))),
        ("log: last 30 days", *timed(runs, page(month))),
        (f"log: page {DEEP} (cursor)", *timed(runs, page({"cursor": cursor or ""}))),
        (
            f"log: one model ({top_model}), 30 days",
            *timed(runs, page({**month, "model": top_model or ""})),
        ),
        ("log: failed requests (status=error)", *timed(runs, page({"status": "error"}))),
        ("API: newest page", *timed(runs, lambda: ok(client.get("/api/v1/usage/requests/")))),
        (
            f"API: page {DEEP} (cursor)",
            *timed(runs, lambda: ok(client.get("/api/v1/usage/requests/", {"cursor": api_cursor}))),
        ),
        (
            "API: last 30 days",
            *timed(runs, lambda: ok(client.get("/api/v1/usage/requests/", month_api))),
        ),
        ("CSV: first bytes, 30 days", *timed(runs, csv_first_bytes)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database again")
    args = parser.parse_args()

    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/2")
    usage_data.prepare_environment(args.database_url)
    if not args.reuse:
        usage_data.recreate_database(args.database_url)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, connections
        from django.test.utils import setup_test_environment

        setup_test_environment()
        if not args.reuse:
            call_command("migrate", verbosity=0)
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"machine: {os.cpu_count()} CPUs, load average {load} at the start")
            print(f"Building {args.events:,} usage events over {args.days} days")
            heavy = usage_data.build_dataset(args.events, args.days)
        else:
            from accounts.models import User

            heavy = User.objects.get(email="heavy@example.com").account.pk
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM billing_usageevent WHERE account_id = %s", [heavy])
            (count,) = cursor.fetchone()
        print(f"heavy account {heavy}: {count:,} events; {args.runs} runs each, ms")
        print(f"{'':42} {'p50':>8} {'p95':>8}")
        for label, p50, p95 in measure(args.runs):
            print(f"{label:42} {p50:8.1f} {p95:8.1f}")
        connections.close_all()
    finally:
        if not args.keep:
            usage_data.recreate_database(args.database_url, drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
