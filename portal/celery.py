"""The Celery app of the worker and beat (Django loaded). The relay sends tasks by name with a
Celery app of its own, so it never imports this module."""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
from celery import Celery, signals
from django.conf import settings
from django.db import close_old_connections
from kombu import serialization
from kombu.utils import json as kombu_json

from core.jsonlog import JsonFormatter

# Task counts, failures and durations, and the queue's depth (TP_WORKER_METRICS_PORT): the
# module connects its handlers to Celery's signals.
from . import worker_metrics  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


# Digits as "0", everything else as it was: a run of 19 zeros is a run of 19 digits.
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def _long_integer(raw: bytes) -> bool:
    """Whether the body may hold an integer of 19 digits or more, which orjson turns into a
    float (beyond 64 bits) where the standard library keeps an int. A JSON number's integer
    part follows ``:``, ``,`` or ``[`` (then blanks, then an optional ``-``) or starts the
    document; a long run of digits anywhere else is inside a string, or a fraction or an
    exponent, which both libraries read alike."""
    digits = raw.translate(_DIGITS_AS_ZEROS)
    at = digits.find(_LONG_RUN)
    while at != -1:
        i = at - 1
        if i >= 0 and raw[i] == 0x2D:  # "-"
            i -= 1
        while i >= 0 and raw[i] in b" \t\r\n":
            i -= 1
        if i < 0 or raw[i] in b":,[":
            return True
        end = at + len(_LONG_RUN)
        while end < len(digits) and digits[end] == 0x30:
            end += 1
        at = digits.find(_LONG_RUN, end)
    return False


def decode_json(data: bytes | bytearray | memoryview | str) -> Any:
    """Task bodies (application/json) as kombu decodes them, faster where nothing differs.

    kombu decodes with the standard library and an object hook that Python calls for every
    object in the body, to turn ``{"__type__": ..., "__value__": ...}`` markers back into
    datetimes, decimals and UUIDs: on a batch of 1,000 usage events 9 ms, against orjson's
    2.7 ms here (and the checks below, 1.3 ms). A key ``__type__`` can only be written as those
    letters or behind a ``\\u`` escape, so a body holding neither has no marker, and orjson
    gives the values kombu would (the same strings, lists, dicts and numbers) unless it holds an
    integer too long for 64 bits, which orjson reads as a float. Any such body, and anything
    orjson refuses (NaN, a float beyond the double's range, bytes that are not UTF-8), is
    kombu's to decode, with kombu's errors. What is sent is unchanged: only this decoder is
    registered.
    """
    raw = bytes(data) if isinstance(data, bytearray | memoryview) else data
    text = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if b"__type__" not in text and b"\\u" not in text and not _long_integer(text):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return kombu_json.loads(raw)


serialization.register(
    "json", kombu_json.dumps, decode_json, content_type="application/json", content_encoding="utf-8"
)

app = Celery("tokenpapa")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = {
    "release-stale-holds": {"task": "billing.release_stale_holds", "schedule": 60.0},
    "reconcile": {"task": "billing.reconcile", "schedule": 600.0},
    "billing-sweep-balances": {"task": "billing.sweep_balances", "schedule": 600.0},
    "billing-sync-open-payments": {"task": "billing.sync_open_payments", "schedule": 600.0},
    # Partitions of the raw usage events ahead, and their retention (billing.partitions).
    "billing-usage-partitions": {"task": "billing.usage_partitions", "schedule": 86400.0},
    "keys-expire": {"task": "keys.expire_keys", "schedule": 300.0},
    "catalog-route-figures": {"task": "catalog.publish_route_figures", "schedule": 60.0},
}
app.autodiscover_tasks(["billing", "keys", "catalog"])

# Celery (5.7) closes the worker's database connection before and after every task (it does
# not trust Django to tell a broken connection from a good one). The usage task runs several
# times a second under load, and opening a PostgreSQL connection for each batch was half of the
# database's CPU per recorded request (0.19 ms, 0.09 ms without it, in a `make bench` CPU phase).
# So a connection is kept for up to this many tasks (Celery's own setting), and before each task
# it is checked the way Django checks one before each request (below): closed after an error or
# once CONN_MAX_AGE has passed, and pinged first when CONN_HEALTH_CHECKS is on. A task that still
# meets a dead connection fails and is retried; recording is idempotent.
app.conf.CELERY_DB_REUSE_MAX = int(os.environ.get("TP_WORKER_DB_REUSE_MAX", "500"))


@signals.task_prerun.connect
def _check_database_connections(**kwargs: Any) -> None:
    close_old_connections()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def json_log_lines(logger: logging.Logger, **_: Any) -> None:
    """The worker and beat log as the servers do (``serving``): JSON lines unless
    ``TP_LOG_FORMAT`` is ``text`` (the default with DEBUG on). Celery sets up its own handlers,
    so their formatter is swapped once they exist."""
    chosen = os.environ.get("TP_LOG_FORMAT", "").strip().lower()
    if (chosen or ("text" if settings.DEBUG else "json")) != "json":
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
