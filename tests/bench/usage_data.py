"""Usage data at scale (issue 14): a data set of N usage events over D days, and the recording
throughput of ``billing.usage.record_batch`` with its rollups.

Creates a throwaway PostgreSQL database (``--database-url``; created, migrated, and dropped at
the end unless ``--keep``), then:

1. builds the data set: one heavy account with about 40% of the events (5 keys, 12 models, 3
   providers) among ``--accounts`` small ones (one key each, a few models), events spread over
   the last ``--days`` days with a daily rhythm; written by COPY into the monthly partitions of
   ``billing_usageevent`` (made first, so nothing lands in the DEFAULT partition), then the
   hourly and daily rollups computed from them in SQL (``billing.rollups.rebuild``) and the
   tables vacuumed and analysed (as autovacuum would). No ledger entries are written for these
   events (they are not billed).
2. measures recording: ``--record`` fresh events (the same mix of accounts) through
   ``record_batch`` in batches of 200 as the relay sends them, on this one process: events
   per second with the raw insert, the ledger debits and both rollups (target 5,000/s). Each
   event names the price version it was charged at, as the relay's do, so the worker prices it
   again as in production (the models get a price version first where they have none).

Figures, not assertions. ``build_dataset()`` is importable for the pages' benchmark; it
returns the heavy account's id.

    .venv/bin/python tests/bench/usage_data.py [--events 10000000] [--days 90] \\
        [--database-url postgres://postgres@127.0.0.1:5432/tokenpapa_bench_usage] [--keep] \\
        [--runs 3]
    # recording again on a data set kept by --keep, without rebuilding it (minutes at 10M):
    .venv/bin/python tests/bench/usage_data.py --reuse --record 30000 --runs 3 \\
        --database-url postgres://postgres@127.0.0.1:5432/tokenpapa_bench_usage
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/tokenpapa_bench_usage"
HEAVY_SHARE = 0.4
RECORD_TARGET = 5000.0
BATCH = 200
NULL = "\\N"  # COPY's text format

HEAVY_MODELS = [
    ("mistral-large-2", "mistral"),
    ("mistral-small", "mistral"),
    ("codestral", "mistral"),
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("o3-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("claude-sonnet-4", "anthropic"),
    ("claude-haiku-3.5", "anthropic"),
    ("claude-opus-4", "anthropic"),
    ("text-embedding-3-small", "openai"),
    ("mistral-embed", "mistral"),
]
SMALL_MODELS = HEAVY_MODELS[:2] + HEAVY_MODELS[4:5] + HEAVY_MODELS[8:9]
COLUMNS = (
    "request_id",
    "account_id",
    "key_id",
    "model_id",
    "provider",
    "upstream_model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "estimated",
    "status",
    "http_status",
    "streamed",
    "started_at",
    "duration_ms",
    "ttfb_ms",
    "recorded_at",
    # Constant here (the columns have no database defaults).
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "images",
    "audio_ms",
    "unbilled",
)
ZEROS = "\t0\t0\t0\t0\t0\t0\t0"


def prepare_environment(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(ROOT))


def recreate_database(database_url: str, drop_only: bool = False) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name or name in {"postgres", "tokenpapa"} or not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing to drop database {name!r}: give a throwaway one")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def _accounts(small: int) -> tuple[int, list[int], list[tuple[int, int]]]:
    """(heavy account id, its keys, [(account, key)] of the small ones)."""
    from accounts.models import Account, User
    from keys.models import ApiKey

    heavy_user = User.objects.create_user(email="heavy@example.com", password="bench-password")
    heavy = Account.objects.get(user=heavy_user).pk
    users = User.objects.bulk_create(User(email=f"small-{i}@example.com") for i in range(small))
    accounts = Account.objects.bulk_create(Account(user=u) for u in users)
    rng = random.Random(5)

    def key(account: int, name: str) -> ApiKey:
        digest = f"{rng.getrandbits(256):064x}"
        return ApiKey(
            account_id=account, name=name, digest=digest, prefix="tp-sk-ben", last4="0000"
        )

    heavy_keys = ApiKey.objects.bulk_create(key(heavy, f"heavy-{i}") for i in range(5))
    small_keys = ApiKey.objects.bulk_create(key(a.pk, "default") for a in accounts)
    return heavy, [k.pk for k in heavy_keys], [(k.account_id, k.pk) for k in small_keys]


def _event(
    rng: random.Random,
    heavy: int,
    heavy_keys: list[int],
    small: list[tuple[int, int]],
    share: float = HEAVY_SHARE,
) -> tuple[int, int, str, str, int, int, int, int, Decimal, bool, str, bool, int, int | None]:
    if rng.random() < share:
        account, key = heavy, rng.choice(heavy_keys)
        model, provider = rng.choice(HEAVY_MODELS)
    else:
        account, key = rng.choice(small)
        model, provider = rng.choice(SMALL_MODELS)
    prompt = int(rng.expovariate(1 / 1500))
    completion = int(rng.expovariate(1 / 300))
    cached = prompt // 2 if rng.random() < 0.3 else 0
    reasoning = completion // 3 if model.startswith("o3") else 0
    cost = Decimal(prompt * rng.randrange(100, 3000) + completion * rng.randrange(300, 15000))
    cost = cost.scaleb(-9)
    status = "ok" if rng.random() < 0.97 else rng.choice(["error", "client_closed", "upstream_cut"])
    streamed = rng.random() < 0.6
    duration = int(rng.expovariate(1 / 2500))
    ttfb = min(duration, int(rng.expovariate(1 / 400))) if streamed else None
    return (
        account, key, model, provider, prompt, completion, cached, reasoning,
        cost if status == "ok" else Decimal(0), rng.random() < 0.01, status, streamed, duration,
        ttfb,
    )  # fmt: skip


def _moment(rng: random.Random, start: datetime, days: int) -> datetime:
    """A time in the window, busier in the (UTC) working day than at night."""
    day = rng.randrange(days)
    hour = int(rng.triangular(0, 24, 14)) % 24
    return start + timedelta(days=day, hours=hour, seconds=rng.random() * 3600)


def build_dataset(
    events: int, days: int = 90, *, accounts: int = 2000, seed: int = 1, chunk: int = 100_000
) -> int:
    """Fills the (migrated, empty) database; returns the heavy account's id."""
    from django.db import connection

    from billing import partitions, rollups

    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    heavy, heavy_keys, small = _accounts(accounts)
    month = partitions.month_start(start)
    while month <= partitions.month_start(now):
        partitions.ensure_partition(month)
        month = partitions.add_months(month, 1)
    t0 = time.perf_counter()
    written = 0
    recorded_at = now.isoformat()
    with connection.cursor() as cursor:
        while written < events:
            count = min(chunk, events - written)
            lines = []
            for i in range(written, written + count):
                (
                    account, key, model, provider, prompt, completion, cached, reasoning, cost,
                    estimated, status, streamed, duration, ttfb,
                ) = _event(rng, heavy, heavy_keys, small)  # fmt: skip
                when = _moment(rng, start, days)
                lines.append(
                    f"bench-{i:010d}\t{account}\t{key}\t{model}\t{provider}\t{model}\t{prompt}\t"
                    f"{completion}\t{cached}\t{reasoning}\t{cost}\t{'t' if estimated else 'f'}\t"
                    f"{status}\t{200 if status == 'ok' else 502}\t{'t' if streamed else 'f'}\t"
                    f"{when.isoformat()}\t{duration}\t{ttfb if ttfb is not None else NULL}\t"
                    f"{recorded_at}{ZEROS}\n"
                )
            with cursor.cursor.copy(
                f"COPY billing_usageevent ({', '.join(COLUMNS)}) FROM STDIN"
            ) as copy:
                copy.write("".join(lines))
            written += count
            rate = written / (time.perf_counter() - t0)
            print(f"  {written:>11,} events written ({rate:,.0f}/s)", end="\r", flush=True)
    copied = time.perf_counter() - t0
    print(f"  {written:,} events written by COPY in {copied:.1f} s ({written / copied:,.0f}/s)")
    t0 = time.perf_counter()
    rollups.rebuild()
    with connection.cursor() as cursor:
        # VACUUM as well: autovacuum, on in production, would have vacuumed tables written
        # once and then read (it sets the visibility map the pages' index-only scans rely on;
        # without it each rollup row read is also a heap fetch).
        cursor.execute(
            "VACUUM (ANALYZE) billing_usageevent, billing_hourlyusage, billing_dailyusage"
        )
    print(
        f"  rollups computed in SQL, tables vacuumed and analysed in"
        f" {time.perf_counter() - t0:.1f} s"
    )
    return heavy


def settle() -> None:
    """Where this PostgreSQL runs with autovacuum off (as a test machine may), VACUUM (ANALYZE)
    the rollups before measuring reads: a production database, autovacuum on, has them
    vacuumed after the writes of earlier recording runs."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        if cursor.fetchone()[0] == "on":
            return
        t0 = time.perf_counter()
        cursor.execute("VACUUM (ANALYZE) billing_hourlyusage, billing_dailyusage")
    print(
        f"autovacuum is off here: the rollups vacuumed and analysed first, as autovacuum would"
        f" have ({time.perf_counter() - t0:.1f} s)"
    )


def _price_versions() -> dict[str, int]:
    """Each model's newest price version, one made (at GPT-4o's list prices) where it has none
    (and the model and its provider, where the data set's database has no catalog)."""
    from catalog.models import Model, PriceVersion, Provider

    versions = {}
    for model, provider in HEAVY_MODELS:
        if not Model.objects.filter(pk=model).exists():
            upstream, _ = Provider.objects.get_or_create(
                slug=provider,
                defaults={
                    "name": provider.title(),
                    "base_url": f"https://api.{provider}.invalid/v1",
                },
            )
            Model.objects.create(id=model, name=model, provider=upstream, upstream_model=model)
        newest = PriceVersion.objects.filter(model_id=model).order_by("-version").first()
        if newest is None:
            newest = PriceVersion.objects.create(
                model_id=model,
                version=1,
                input=Decimal("2.5"),
                output=Decimal("10"),
                cached_input=Decimal("1.25"),
            )
        versions[model] = newest.version
    return versions


def measure_recording(
    count: int, *, seed: int = 2, share: float = HEAVY_SHARE, batch_size: int = BATCH
) -> float:
    """Events per second through ``record_batch`` (batches of ``batch_size``, one process);
    ``share`` of the events are the heavy account's, the others spread over the small
    accounts."""
    from accounts.models import Account
    from billing import ledger, usage
    from keys.models import ApiKey

    rng = random.Random(seed)
    heavy = Account.objects.get(user__email="heavy@example.com").pk
    heavy_keys = list(ApiKey.objects.filter(account_id=heavy).values_list("pk", flat=True))
    small = list(ApiKey.objects.exclude(account_id=heavy).values_list("account_id", "pk")[:2000])
    for account in Account.objects.filter(pk__in={heavy, *(a for a, _ in small)}):
        ledger.post_entry(account=account, amount=Decimal(1_000_000), kind="adjustment")
    # The relay's events name the price version they were charged at, and the worker prices
    # each one again from it (usage._priced): the models get a price where they have none.
    versions = _price_versions()
    now = time.time()
    batches = []
    for b in range(0, count, batch_size):
        batch = []
        for i in range(b, min(count, b + batch_size)):
            (
                account, key, model, provider, prompt, completion, cached, reasoning, cost,
                estimated, status, streamed, duration, ttfb,
            ) = _event(rng, heavy, heavy_keys, small, share)  # fmt: skip
            batch.append(
                {
                    "request_id": f"rec-{seed}-{i:09d}",
                    "account": account,
                    "key": key,
                    "model": model,
                    "provider": provider,
                    "upstream_model": model,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "cached_tokens": cached,
                    "reasoning_tokens": reasoning,
                    "cost": str(cost),
                    "hold": "1",
                    "price_version": versions[model],
                    "estimated": estimated,
                    "status": status,
                    "http_status": 200 if status == "ok" else 502,
                    "streamed": streamed,
                    "started_at": now - rng.random() * 5,
                    "duration_ms": duration,
                    "ttfb_ms": ttfb,
                    "client_net": "203.0.113.0/24",
                }
            )
        batches.append(batch)
    usage.record_batch(batches[0])  # warm-up: connections, prepared caches
    t0 = time.perf_counter()
    recorded = sum(usage.record_batch(batch) for batch in batches[1:])
    elapsed = time.perf_counter() - t0
    return recorded / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--accounts", type=int, default=2000, help="small accounts")
    parser.add_argument("--record", type=int, default=50_000, help="events recorded, timed")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="events a recorded batch (the relay's batch_size)"
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="recording measurements per mix (prints the median)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure recording on the data set a --keep run left (migrated, not rebuilt; kept)",
    )
    args = parser.parse_args()

    prepare_environment(args.database_url)
    if args.reuse:
        args.keep = True
    else:
        recreate_database(args.database_url)
    began = time.perf_counter()
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, connections

        from accounts.models import Account

        call_command("migrate", verbosity=0)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the start")
        t0 = time.perf_counter()
        if args.reuse:
            heavy = Account.objects.get(user__email="heavy@example.com").pk
            print("Reusing the data set in the database (not rebuilt)")
        else:
            print(
                f"Building {args.events:,} usage events over {args.days} days "
                f"(1 heavy account with ~{HEAVY_SHARE:.0%}, {args.accounts} small ones)"
            )
            heavy = build_dataset(args.events, args.days, accounts=args.accounts)
        built = time.perf_counter() - t0
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM billing_usageevent WHERE account_id = %s),"
                " (SELECT count(*) FROM billing_hourlyusage),"
                " (SELECT count(*) FROM billing_hourlyusage WHERE account_id = %s),"
                " (SELECT count(*) FROM billing_dailyusage),"
                " pg_size_pretty(pg_total_relation_size('billing_hourlyusage')),"
                " (SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid)))"
                "  FROM pg_inherits WHERE inhparent = 'billing_usageevent'::regclass)",
                [heavy, heavy],
            )
            heavy_events, hourly, heavy_hourly, daily, hourly_size, raw_size = cursor.fetchone()
        print(
            f"data set {'read' if args.reuse else 'built'} in {built:.1f} s: heavy account"
            f" {heavy} has {heavy_events:,} events"
        )
        print(
            f"  rollups: {hourly:,} hourly rows ({heavy_hourly:,} of the heavy account, "
            f"{hourly_size}), {daily:,} daily rows; raw events {raw_size}"
        )
        # A reused data set already holds the events of earlier runs' seeds (recorded again
        # they would be duplicates, skipped): this run's seeds start from the clock.
        first_seed = int(time.time()) * 1000 if args.reuse else 0
        for label, share, seed in (
            ("the data set's mix (~115 accounts a batch)", HEAVY_SHARE, first_seed + 2),
            ("the heavy account alone", 1.0, first_seed + 3),
        ):
            rates = []
            for run in range(max(1, args.runs)):
                # Each run records fresh events (its own seed), of the same mix.
                rates.append(
                    measure_recording(
                        args.record, seed=seed + 100 * run, share=share, batch_size=args.batch
                    )
                )
                if args.runs > 1:
                    print(f"  run {run + 1}/{args.runs}, {label}: {rates[-1]:,.0f} events/s")
            rate = statistics.median(rates)
            verdict = "PASS" if rate >= RECORD_TARGET else "MISS"
            print(
                f"recording, {label}: {rate:,.0f} events/s{' (median)' if len(rates) > 1 else ''}"
                f" through record_batch (batches of "
                f"{args.batch}, ledger and rollups included, one process) -> {verdict} "
                f"(target {RECORD_TARGET:,.0f}/s)"
            )
        print(f"total {time.perf_counter() - began:.1f} s")
        connections.close_all()
    finally:
        if not args.keep:
            recreate_database(args.database_url, drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
