from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from django.conf import settings

from . import alerts, partitions, sync, topups, usage, webhooks
from . import reconcile as reconciliation

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


# Every task sets both time limits. One left out comes from CELERY_TASK_(SOFT_)TIME_LIMIT, and a
# soft limit above the hard one makes Celery refuse to send the task at all (beat logged
# "Couldn't apply scheduled task release-stale-holds" every minute and no hold was released).
# Hard limits stay below the broker's visibility timeout (600 s), after which an unacknowledged
# task is handed to another worker. tests/test_beat.py checks both for every task.
@shared_task(name="billing.release_stale_holds", time_limit=60, soft_time_limit=50)
def release_stale_holds() -> int:
    return sync.release_stale_holds(settings.TP_HOLD_MAX_AGE_SECONDS, time.time())


@shared_task(name="billing.reconcile", time_limit=300, soft_time_limit=270)
def reconcile() -> int:
    problems = reconciliation.check()
    for problem in problems:
        log.error("reconcile: %s", problem)
    return len(problems)


@shared_task(name="billing.usage_partitions", time_limit=540, soft_time_limit=480)
def usage_partitions() -> dict[str, int]:
    """The raw usage events' partitions made ahead and their retention applied."""
    report = partitions.upkeep()
    return {
        "created": len(report.created),
        "dropped": len(report.dropped),
        "deleted_rows": report.deleted_rows,
    }


@shared_task(
    name=alerts.CHECK_BALANCES,
    bind=True,
    acks_late=True,
    max_retries=5,
    time_limit=120,
    soft_time_limit=100,
)
def check_balances(self: Any, account_ids: list[int]) -> int:
    """Low-balance emails and auto top-ups for accounts just debited."""
    failed = []
    for account_id in account_ids:
        try:
            alerts.check_balance(int(account_id))
        except Exception:
            log.exception("balance check of account %s failed", account_id)
            failed.append(account_id)
    if failed:
        raise self.retry(args=[failed], countdown=min(300, 10 * 2**self.request.retries))
    return len(account_ids)


@shared_task(name="billing.sweep_balances", time_limit=540, soft_time_limit=480)
def sweep_balances() -> int:
    return alerts.sweep()


@shared_task(name="billing.sync_open_payments", time_limit=540, soft_time_limit=480)
def sync_open_payments() -> int:
    """Payments still open after a few minutes: ask their provider (missed webhooks)."""
    return topups.sync_open_payments()


@shared_task(name="billing.replay_failed_events", time_limit=540, soft_time_limit=480)
def replay_failed_events() -> int:
    return len(webhooks.replay())
