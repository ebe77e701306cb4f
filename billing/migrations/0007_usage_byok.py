"""BYOK (issue 15): the usage event says whether the account's own provider key served it, and
the rollups count those requests.

``usageevent`` is partitioned by month (0003): PostgreSQL adds the column to every partition
with the parent, and with a constant default that is a catalogue change, not a rewrite. The
activity page reads the new figure from the hourly rows, so the covering index of 0006 is made
again with it (PostgreSQL only, as there)."""

from typing import Any

from django.db import migrations, models

NAME = "hourly_usage_covering"
BEFORE = (
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
AFTER = (*BEFORE[:-1], "byok", "cost")


def _covering(schema_editor: Any, columns: tuple[str, ...]) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")
    schema_editor.execute(
        f"CREATE INDEX {NAME} ON billing_hourlyusage (account_id, hour)"
        f" INCLUDE ({', '.join(columns)})"
    )


def include_byok(apps: Any, schema_editor: Any) -> None:
    _covering(schema_editor, AFTER)


def exclude_byok(apps: Any, schema_editor: Any) -> None:
    _covering(schema_editor, BEFORE)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_hourly_usage_covering_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="dailyusage",
            name="byok",
            field=models.PositiveBigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="hourlyusage",
            name="byok",
            field=models.PositiveBigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="usageevent",
            name="byok",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RunPython(include_byok, exclude_byok, elidable=False),
    ]
