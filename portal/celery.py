"""The Celery app of the worker and beat (Django loaded). The relay sends tasks by name with a
Celery app of its own, so it never imports this module."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("tokenpapa")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = {
    "release-stale-holds": {"task": "billing.release_stale_holds", "schedule": 60.0},
    "reconcile": {"task": "billing.reconcile", "schedule": 600.0},
    "billing-sweep-balances": {"task": "billing.sweep_balances", "schedule": 600.0},
    "billing-sync-open-payments": {"task": "billing.sync_open_payments", "schedule": 600.0},
    "keys-expire": {"task": "keys.expire_keys", "schedule": 300.0},
}
app.autodiscover_tasks(["billing", "keys"])
