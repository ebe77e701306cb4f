"""The hourly rollups' covering columns move into their unique index (issue 14).

0006 gave the activity page an index of its own, (account, hour) INCLUDE (the figures it
reads), beside the unique index (account, hour, key, model, provider) that every upsert
probes. An upsert that changes a figure changes an indexed column, so it is not a HOT update
and writes an entry in every index of the table: four of them (the primary key, the key's
foreign key, the unique index and the covering one). The unique index starts with
(account, hour) too, so it can carry the figures itself: the page's reads stay index-only
scans (tests/test_activity.py), and each upsert writes one index entry fewer. Measured on the
ten-million-event data set of tests/bench/usage_data.py: the hourly upsert of a batch of 200
events went from 10.3 ms to 6.6 ms.

The unique constraint is the model's (``hourly_usage_unique``, the upserts' arbiter); only its
index gains INCLUDE columns, which PostgreSQL ignores when it infers the arbiter. PostgreSQL
only: SQLite (``make run``) keeps the plain unique index and never had the covering one. The
new index is built CONCURRENTLY and only then are the old ones dropped, so recording keeps an
arbiter index and is not blocked while a large table is indexed.
"""

from typing import Any

from django.db import migrations

UNIQUE = "hourly_usage_unique"
COVERING = "hourly_usage_covering"
KEY = "account_id, hour, COALESCE(key_id, 0), model_id, provider"
# Every column the activity page reads from an hourly row that is not a key column above
# (tests/test_activity.py holds the list to activity.FIGURES and DIMENSIONS).
INCLUDED = (
    "key_id",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "byok",
    "cost",
)
# 0007's covering index, for the way back.
COVERED = (
    "key_id",
    "model_id",
    "provider",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "byok",
    "cost",
)


def _swap_unique(schema_editor: Any, include: tuple[str, ...]) -> None:
    with_include = f" INCLUDE ({', '.join(include)})" if include else ""
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {UNIQUE}_next")
    schema_editor.execute(
        f"CREATE UNIQUE INDEX CONCURRENTLY {UNIQUE}_next ON billing_hourlyusage ({KEY})"
        f"{with_include}"
    )
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {UNIQUE}")
    schema_editor.execute(f"ALTER INDEX {UNIQUE}_next RENAME TO {UNIQUE}")


def forwards(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    _swap_unique(schema_editor, INCLUDED)
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {COVERING}")


def backwards(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {COVERING} ON billing_hourlyusage"
        f" (account_id, hour) INCLUDE ({', '.join(COVERED)})"
    )
    _swap_unique(schema_editor, ())


class Migration(migrations.Migration):
    # CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("billing", "0007_usage_byok")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
