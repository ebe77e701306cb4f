"""The Celery app of the worker and beat (Django loaded). The relay sends tasks by name with a
Celery app of its own, so it never imports this module."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals
from django.conf import settings
from django.db import close_old_connections

from core.jsonlog import JsonFormatter

# Task counts, failures and durations, and the queue's depth (TP_WORKER_METRICS_PORT): the
# module connects its handlers to Celery's signals.
from . import worker_metrics  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

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
