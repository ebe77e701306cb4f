"""A covering index on the hourly rollups for the activity page (issue 14).

A local day far from UTC (Tokyo, +9) is read as the daily rows between the UTC midnights
nearest its edges plus or minus up to 12 hours of hourly rows at each edge (billing.activity).
Over 90 days that is about 800 hours; for an account with thousands of key × model × provider
rows a day, some 50,000 hourly rows, which lie one or two to a heap page among every other
account's rows of the same hours: reading them from the heap was most of the page's time at ten
million events. This index holds, in (account, hour) order, every column those reads use, so
PostgreSQL answers them from the index alone (an index-only scan: a few thousand adjacent index
pages instead of tens of thousands of heap pages).

Its price: an upsert that changes a rolled-up figure changes an indexed column, so it is no
longer a HOT update (it writes an index entry in each of the two indexes). The recording
benchmark (tests/bench/usage_data.py) measures it. PostgreSQL only (SQLite in ``make run`` has
no INCLUDE); the model does not declare it, as Django cannot declare an INCLUDE index portably.
"""

from typing import Any

from django.db import migrations

NAME = "hourly_usage_covering"
INCLUDED = (
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
    "cost",
)


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {NAME} ON billing_hourlyusage (account_id, hour)"
        f" INCLUDE ({', '.join(INCLUDED)})"
    )


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_usage_finish_reason")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
