# Drops two indexes that every usage insert paid for and no query used: the single-column
# index on account_id (usage_account_time starts with account_id) and the LIKE-pattern index
# that ``unique=True`` adds to a CharField on PostgreSQL. The unique constraint on request_id
# stays; it is renamed rather than rebuilt, and the foreign key is left in place (Django would
# drop and re-validate it), so on a large table this migration takes no long lock.

import django.db.models.deletion
from django.db import migrations, models

TABLE = "billing_usageevent"
ACCOUNT_INDEX = "billing_usageevent_account_id_2ec9b380"
LIKE_INDEX = "billing_usageevent_request_id_e35a9b65_like"
OLD_UNIQUE = "billing_usageevent_request_id_key"
NEW_UNIQUE = "usage_request_id"


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f'DROP INDEX IF EXISTS "{ACCOUNT_INDEX}"')
        schema_editor.execute(f'DROP INDEX IF EXISTS "{LIKE_INDEX}"')
        schema_editor.execute(
            f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{OLD_UNIQUE}" TO "{NEW_UNIQUE}"'
        )
    elif vendor == "sqlite":
        # Development databases: the uniqueness stays inline in the table's definition.
        schema_editor.execute(f'DROP INDEX IF EXISTS "{ACCOUNT_INDEX}"')


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{NEW_UNIQUE}" TO "{OLD_UNIQUE}"'
        )
        schema_editor.execute(
            f'CREATE INDEX "{LIKE_INDEX}" ON "{TABLE}" ("request_id" varchar_pattern_ops)'
        )
    if vendor in ("postgresql", "sqlite"):
        schema_editor.execute(f'CREATE INDEX "{ACCOUNT_INDEX}" ON "{TABLE}" ("account_id")')


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_payments"),
        ("keys", "0003_management_keys_rotation"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usageevent",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage",
                        to="billing.account",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="request_id",
                    field=models.CharField(max_length=64),
                ),
                migrations.AddConstraint(
                    model_name="usageevent",
                    constraint=models.UniqueConstraint(fields=("request_id",), name=NEW_UNIQUE),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
