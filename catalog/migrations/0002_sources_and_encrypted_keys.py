# Where each catalog row's values came from (the catalog file or the admin), and provider API
# keys encrypted at rest (TP_SECRETS_KEYS). Written by hand around makemigrations' operations:
# the data steps encrypt any key stored in plain text before, and mark existing routes as the
# file's (the loader was the only writer until now).

import django.core.validators
import lib.money
import lib.secrets
from decimal import Decimal
from django.db import migrations, models

from core.secrets import looks_encrypted

SOURCE = dict(
    choices=[("file", "the catalog file"), ("admin", "the admin")],
    default="file",
    help_text="Values edited in the admin are kept when the catalog file is loaded.",
    max_length=10,
    verbose_name="values from",
)


def _keys(schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, api_key FROM catalog_provider WHERE api_key <> ''")
        return list(cursor.fetchall())


def _write(schema_editor, pk, value):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE catalog_provider SET api_key = %s WHERE id = %s", [value, pk])


def encrypt_plain_keys(apps, schema_editor):
    for pk, value in _keys(schema_editor):
        if not looks_encrypted(value):
            _write(schema_editor, pk, lib.secrets.encrypt(value))


def decrypt_keys(apps, schema_editor):
    for pk, value in _keys(schema_editor):
        if looks_encrypted(value):
            _write(schema_editor, pk, lib.secrets.box().decrypt(value))


def routes_from_the_file(apps, schema_editor):
    apps.get_model("catalog", "Route").objects.update(in_file=True)


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        migrations.AddField(model_name="model", name="source", field=models.CharField(**SOURCE)),
        migrations.AddField(
            model_name="priceversion", name="source", field=models.CharField(**SOURCE)
        ),
        migrations.AddField(model_name="provider", name="source", field=models.CharField(**SOURCE)),
        migrations.AddField(model_name="route", name="source", field=models.CharField(**SOURCE)),
        migrations.AddField(
            model_name="route",
            name="in_file",
            field=models.BooleanField(
                default=False, editable=False, verbose_name="in the catalog file"
            ),
        ),
        migrations.RunPython(routes_from_the_file, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="provider",
            name="api_key",
            field=lib.secrets.EncryptedField(blank=True, verbose_name="API key"),
        ),
        migrations.RunPython(encrypt_plain_keys, decrypt_keys),
        migrations.AlterField(
            model_name="priceversion",
            name="audio_second",
            field=models.DecimalField(
                decimal_places=9,
                default=Decimal("0"),
                help_text="USD per second of input audio (0: none).",
                max_digits=20,
                validators=[
                    django.core.validators.MinValueValidator(Decimal("0")),
                    lib.money.MaxPlaces(6),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="priceversion",
            name="cached_input",
            field=models.DecimalField(
                blank=True,
                decimal_places=9,
                help_text="USD per 1M cached input tokens (empty: the input price).",
                max_digits=20,
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(Decimal("0")),
                    lib.money.MaxPlaces(3),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="priceversion",
            name="image",
            field=models.DecimalField(
                decimal_places=9,
                default=Decimal("0"),
                help_text="USD per input image (0: none).",
                max_digits=20,
                validators=[django.core.validators.MinValueValidator(Decimal("0"))],
            ),
        ),
        migrations.AlterField(
            model_name="priceversion",
            name="input",
            field=models.DecimalField(
                decimal_places=9,
                help_text="USD per 1M input tokens.",
                max_digits=20,
                validators=[
                    django.core.validators.MinValueValidator(Decimal("0")),
                    lib.money.MaxPlaces(3),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="priceversion",
            name="output",
            field=models.DecimalField(
                decimal_places=9,
                help_text="USD per 1M output tokens.",
                max_digits=20,
                validators=[
                    django.core.validators.MinValueValidator(Decimal("0")),
                    lib.money.MaxPlaces(3),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="route",
            name="priority",
            field=models.PositiveSmallIntegerField(
                default=0, help_text="Lower first; the next priority is tried when these fail."
            ),
        ),
        migrations.AlterField(
            model_name="route",
            name="weight",
            field=models.PositiveSmallIntegerField(
                default=1, help_text="Share of the requests among routes of the same priority."
            ),
        ),
    ]
