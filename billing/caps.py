"""Keys' spend caps in the relay's view: the counter of what a key spent in its cap period,
seeded from the recorded usage (the daily rollups) whenever a key's record is published."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.dispatch import receiver

from core import state
from core.pricing import to_nanos
from keys.models import ApiKey
from keys.signals import publishing
from lib.redis import client

from .models import DailyUsage


def spent_in_period(key: ApiKey, now: float) -> tuple[str, int, int]:
    """(period id, nanos spent by the key in its cap period so far, counter ttl), from the
    daily rollups: what the worker has recorded (requests not yet recorded are not in it)."""
    period, start, end = state.period_bounds(key.spend_cap_period, now)
    rows = DailyUsage.objects.filter(key=key)
    if start is not None:
        rows = rows.filter(day__gte=start.date())
    total = rows.aggregate(total=Sum("cost"))["total"] or Decimal(0)
    return period, to_nanos(total), state.period_ttl(end, now)


def period_spend(key: ApiKey) -> Decimal | None:
    """Spend in the key's cap period (recorded usage), for keys that have a cap."""
    if key.spend_cap is None:
        return None
    return Decimal(spent_in_period(key, time.time())[1]) / 1_000_000_000


@receiver(publishing, sender=ApiKey)
def seed_cap(sender: type[ApiKey], key: ApiKey, rebuild: bool, **kwargs: Any) -> None:
    """The relay counts a key's spend against its cap in Redis; seed the counter from the
    database when it is missing (a new cap, a new period after a Redis loss) or on rebuild."""
    if key.spend_cap is None or not key.is_active:
        return
    period, spent, ttl = spent_in_period(key, time.time())
    name = state.key_cap(key.account_id, key.pk, period)
    r = client()
    if rebuild:
        r.hset(name, "spent", spent)
    elif not r.hsetnx(name, "spent", spent):
        return
    if ttl:
        r.expire(name, ttl)
