from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from django.conf import settings

from . import reconcile as reconciliation
from . import sync, usage

log = logging.getLogger(__name__)


@shared_task(
    name="billing.record_usage",
    bind=True,
    acks_late=True,
    max_retries=None,
    time_limit=120,
    soft_time_limit=100,
)
def record_usage(self: Any, events: list[dict[str, Any]]) -> int:
    """A batch of usage events from a relay. Idempotent: safe to redeliver or replay."""
    try:
        return usage.record_batch(events)
    except Exception as exc:
        log.exception("recording a usage batch failed; will retry")
        raise self.retry(exc=exc, countdown=min(60, 2 ** min(self.request.retries, 6))) from exc


@shared_task(name="billing.release_stale_holds", time_limit=60)
def release_stale_holds() -> int:
    return sync.release_stale_holds(settings.TP_HOLD_MAX_AGE_SECONDS, time.time())


@shared_task(name="billing.reconcile", time_limit=300)
def reconcile() -> int:
    problems = reconciliation.check()
    for problem in problems:
        log.error("reconcile: %s", problem)
    return len(problems)
