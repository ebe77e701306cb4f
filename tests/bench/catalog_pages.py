"""Server time of the catalog pages at 500 listed models (``make bench-catalog``).

Creates a throwaway PostgreSQL database (``tokenpapa_bench_catalog``, dropped at the end),
migrates it, fills it with 500 listed models from 12 providers and 20 authors (each with one
to three price versions and one or two routes), then requests each page through Django's test
client in this process: 5 warm-up runs, then N timed runs (median and p95 in milliseconds,
middleware, view, queries and template included; no network) and the number of queries of
one run. The target is a list page in at most 50 ms. Figures, not assertions: nothing fails.

    .venv/bin/python tests/bench/catalog_pages.py [--runs 50] [--models 500] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
DB = "tokenpapa_bench_catalog"
TARGET_MS = 50.0
WARMUP = 5

PROVIDERS = [
    ("mistral", "Mistral AI", "EU", False, 30),
    ("openai", "OpenAI", "US", False, 30),
    ("anthropic", "Anthropic", "US", False, 30),
    ("google", "Google", "US", False, 55),
    ("deepseek", "DeepSeek", "CN", True, None),
    ("alibaba", "Alibaba Cloud", "CN", None, None),
    ("zhipu", "Zhipu AI", "CN", None, None),
    ("xai", "xAI", "US", False, 30),
    ("together", "Together AI", "US", False, 0),
    ("fireworks", "Fireworks AI", "US", False, 0),
    ("groq", "Groq", "US", False, 0),
    ("scaleway", "Scaleway", "EU", False, 0),
]
AUTHORS = [
    "mistral", "openai", "anthropic", "google", "deepseek", "qwen", "zhipu", "xai", "meta",
    "microsoft", "nvidia", "cohere", "ai21", "amazon", "ibm", "moonshot", "minimax", "baidu",
    "tencent", "allenai",
]  # fmt: skip
FAMILIES = ["chat", "coder", "vision", "reasoner", "instruct", "flash", "pro", "mini", "embed"]
PARAMETERS = [
    "temperature", "top_p", "max_tokens", "stop", "seed", "tools", "tool_choice",
    "response_format", "frequency_penalty", "presence_penalty", "logprobs",
]  # fmt: skip


def prepare_environment() -> None:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(ROOT))


def recreate_database(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{DB}"')


def fill(count: int) -> None:
    """``count`` listed models with prices and routes, drawn from a fixed seed."""
    from django.utils import timezone

    from catalog.models import Model, PriceVersion, Provider, Route

    rng = random.Random(11)
    providers = Provider.objects.bulk_create(
        Provider(
            slug=slug,
            name=name,
            base_url=f"https://api.{slug}.example/v1",
            region=region,
            trains_on_prompts=trains,
            prompt_retention_days=days,
        )
        for slug, name, region, trains, days in PROVIDERS
    )
    models, prices, routes = [], [], []
    for i in range(count):
        author = AUTHORS[i % len(AUTHORS)]
        family = rng.choice(FAMILIES)
        provider = providers[i % len(providers)]
        embeddings = family == "embed"
        vision = family == "vision" or rng.random() < 0.3
        model = Model(
            id=f"{author}/{family}-{i}",
            name=f"{author.title()} {family.title()} {i}",
            provider=provider,
            upstream_model=f"{family}-{i}",
            description=f"A {family} model by {author}, number {i}, for benchmarks of the "
            "catalog list: long enough to look like a real description of a real model.",
            context_window=rng.choice([8192, 32_000, 128_000, 200_000, 1_000_000]),
            max_output_tokens=rng.choice([4096, 8192, 16_384, 65_536]),
            function_calling=not embeddings and rng.random() < 0.7,
            json_mode=not embeddings and rng.random() < 0.6,
            structured_outputs=not embeddings and rng.random() < 0.4,
            reasoning=family == "reasoner" or rng.random() < 0.2,
            vision=vision,
            embeddings=embeddings,
            open_weights=rng.random() < 0.4,
            author=author,
            family=family,
            release_date=date(2023, 1, 1) + timedelta(days=rng.randrange(1000)),
            input_modalities=["text", "image"] if vision else ["text"],
            output_modalities=["embeddings"] if embeddings else ["text"],
            supported_parameters=rng.sample(PARAMETERS, 6),
        )
        models.append(model)
        base = Decimal(rng.randrange(5, 20_000)) / 1000
        for version in range(1, rng.randrange(2, 5)):
            prices.append(
                PriceVersion(
                    model=model,
                    version=version,
                    input=base * version,
                    output=base * version * 3,
                    cached_input=base * version / 10 if rng.random() < 0.5 else None,
                )
            )
        routes.append(Route(model=model, provider=provider, upstream_model=model.upstream_model))
        if rng.random() < 0.3:
            other = providers[(i + 5) % len(providers)]
            routes.append(Route(model=model, provider=other, upstream_model=model.upstream_model))
    Model.objects.bulk_create(models)
    PriceVersion.objects.bulk_create(prices)
    Route.objects.bulk_create(routes)
    # Older versions a month apart, so that the price history has steps.
    now = timezone.now()
    for version in (1, 2):
        PriceVersion.objects.filter(version=version).update(
            created_at=now - timedelta(days=30 * (4 - version))
        )


def measure(get: Callable[[], Any], runs: int) -> tuple[float, float, int, int]:
    """(median ms, p95 ms, queries of one run, status)."""
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
        get()
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
    return statistics.median(times), p95, len(queries), response.status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--models", type=int, default=500)
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

        from catalog.models import Model

        call_command("migrate", verbosity=0)
        fill(args.models)
        # As in production: no query log, no debug pages.
        settings.DEBUG = False
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]

        client = Client()
        fragment = {"HX-Request": "true", "HX-Target": "catalog-results"}
        cost = {"HX-Request": "true", "HX-Target": "cost-result"}
        a_model = Model.objects.order_by("id").values_list("id", flat=True)[7]
        calculator = {"input_tokens": "1000", "output_tokens": "500"}
        four = list(Model.objects.order_by("id").values_list("id", flat=True)[:4])
        filtered = {"provider": "mistral", "capability": "tools"}
        cases: list[tuple[str, str, dict[str, Any], dict[str, str], bool]] = [
            ("list, default", "/models/", {}, {}, True),
            ("list, filtered", "/models/", filtered, {}, True),
            ("list, search", "/models/", {"q": "coder"}, {}, True),
            ("list, sorted by price", "/models/", {"sort": "price"}, {}, True),
            ("list, newest, htmx fragment", "/models/", {"sort": "newest"}, fragment, True),
            ("model page", f"/models/{a_model}/", {}, {}, False),
            ("model page, calculator fragment", f"/models/{a_model}/", calculator, cost, False),
            ("comparison of 4", "/models/compare/", {"ids": four}, {}, False),
        ]
        print(
            f"Catalog pages at {args.models} listed models, {len(PROVIDERS)} providers, "
            f"{len(AUTHORS)} authors; {args.runs} runs each after {WARMUP} warm-up runs "
            f"(Django test client, in process, DEBUG off, PostgreSQL database {DB})"
        )
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the start")
        print(f"{'page':<34} {'median ms':>10} {'p95 ms':>9} {'queries':>8} {'status':>7}")
        worst = 0.0
        for name, path, params, headers, is_list in cases:

            def get(path: str = path, params: Any = params, headers: Any = headers) -> Any:
                return client.get(path, params, headers=headers)

            median, p95, queries, status = measure(get, args.runs)
            if is_list:
                worst = max(worst, median)
            print(f"{name:<34} {median:>10.1f} {p95:>9.1f} {queries:>8} {status:>7}")
        verdict = "PASS" if worst <= TARGET_MS else "MISS"
        print(f"list target: median at most {TARGET_MS:.0f} ms -> {verdict} (worst {worst:.1f} ms)")
        connections.close_all()
    finally:
        if not args.keep:
            recreate_database(drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
