"""The hourly rollups lose the index on ``key_id`` alone (issue 14).

Every upsert of an hourly row changes its figures, which the unique index carries (0008), so it
is never a HOT update: each one writes an entry in every index of the table. The index on
``key_id`` alone served no read: hourly rows are always read by account (the unique index
leads with it), the key caps read the daily rows, and keys are revoked, never deleted (the
admin refuses it). Measured on the ten-million-event data set of tests/bench/usage_data.py,
alternating with and without it three times: 4,947 -> 5,362, 4,508 -> 4,935 and 5,416 ->
5,506 events/s for the data set's mix of accounts.

The foreign key constraint stays. Django's own AlterField would drop it and add it again, which
validates every row under a lock that stops recording; here only the state changes that way
and the database drops the index alone, CONCURRENTLY on PostgreSQL (SQLite, in ``make run``,
drops it plainly).
"""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

INDEX = "billing_hourlyusage_key_id_2d686013"


def forwards(apps: Any, schema_editor: Any) -> None:
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {INDEX}")


def backwards(apps: Any, schema_editor: Any) -> None:
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f"CREATE INDEX{concurrently} IF NOT EXISTS {INDEX} ON billing_hourlyusage (key_id)"
    )


class Migration(migrations.Migration):
    # DROP/CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("billing", "0008_hourly_usage_one_index"),
        ("keys", "0004_provider_credentials"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="hourlyusage",
                    name="key",
                    field=models.ForeignKey(
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        to="keys.apikey",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
        )
    ]
