"""Keys' spend caps in the relay's view: the counter of what a key spent in its cap period,
seeded from the recorded usage (the daily rollups) whenever a key's record is published."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.dispatch import receiver

from accounts.models import Membership
from core import state
from core.pricing import to_nanos
from keys.models import ApiKey
from keys.signals import publishing
from keys.sync import member_cap
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


def member_spent_in_period(membership: Membership, now: float) -> tuple[str, int, int]:
    """The same for an organization member's cap: what all the keys they made in the
    organization spent in the cap period (revoked keys included: their spend was real)."""
    period, start, end = state.period_bounds(membership.spend_cap_period, now)
    rows = DailyUsage.objects.filter(
        account__organization_id=membership.organization_id,
        key__created_by_id=membership.user_id,
    )
    if start is not None:
        rows = rows.filter(day__gte=start.date())
    total = rows.aggregate(total=Sum("cost"))["total"] or Decimal(0)
    return period, to_nanos(total), state.period_ttl(end, now)


def member_period_spend(membership: Membership) -> Decimal:
    return Decimal(member_spent_in_period(membership, time.time())[1]) / 1_000_000_000


def _seed(name: str, spent: int, ttl: int, rebuild: bool) -> None:
    r = client()
    if rebuild:
        r.hset(name, "spent", spent)
    elif not r.hsetnx(name, "spent", spent):
        return
    if ttl:
        r.expire(name, ttl)


@receiver(publishing, sender=ApiKey)
def seed_cap(sender: type[ApiKey], key: ApiKey, rebuild: bool, **kwargs: Any) -> None:
    """The relay counts a key's spend against its cap (and its maker's member cap) in Redis;
    seed the counters from the database when missing (a new cap, a new period after a Redis
    loss) or on rebuild."""
    if not key.is_active:
        return
    now = time.time()
    if key.spend_cap is not None:
        period, spent, ttl = spent_in_period(key, now)
        _seed(state.key_cap(key.account_id, key.pk, period), spent, ttl, rebuild)
    membership = member_cap(key)
    if membership is not None:
        period, spent, ttl = member_spent_in_period(membership, now)
        name = state.member_cap(key.account_id, membership.user_id, period)
        _seed(name, spent, ttl, rebuild)
