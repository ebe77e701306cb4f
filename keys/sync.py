"""Key records in the relay's view. Written after commit; every change is announced so that
each relay drops its cached copy (a revoked key is refused everywhere within a second)."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
from django.db.models import Sum

from billing.models import DailyUsage
from billing.pricing import to_nanos
from portal.redis import client, evict
from relay import state

from .models import ApiKey


def record(key: ApiKey) -> dict[str, object]:
    """What the relay needs to authorise a request; no secret, no personal data."""
    return {
        "id": key.pk,
        "account": key.account_id,
        "models": list(key.allowed_models or []),
        "ips": list(key.allowed_ips or []),
        "expires": key.expires_at.timestamp() if key.expires_at else None,
        "rpm": key.rpm_limit,
        "tpm": key.tpm_limit,
        "cap": to_nanos(key.spend_cap) if key.spend_cap is not None else None,
        "cap_period": key.spend_cap_period,
    }


def spent_in_period(key: ApiKey, now: float) -> tuple[str, int, int]:
    """(period id, nanos spent by the key in its cap period so far, counter ttl), from the
    daily rollups: what the worker has recorded (requests not yet recorded are not in it)."""
    period, start, end = state.period_bounds(key.spend_cap_period, now)
    rows = DailyUsage.objects.filter(key=key)
    if start is not None:
        rows = rows.filter(day__gte=start.date())
    total = rows.aggregate(total=Sum("cost"))["total"] or Decimal(0)
    return period, to_nanos(total), state.period_ttl(end, now)


def _seed_cap(key: ApiKey, *, overwrite: bool) -> None:
    """The relay counts a key's spend against its cap in Redis; seed the counter from the
    database when it is missing (a new cap, a new period after a Redis loss) or on rebuild."""
    if key.spend_cap is None or not key.is_active:
        return
    period, spent, ttl = spent_in_period(key, time.time())
    name = state.key_cap(key.account_id, key.pk, period)
    r = client()
    if overwrite:
        r.hset(name, "spent", spent)
    elif not r.hsetnx(name, "spent", spent):
        return
    if ttl:
        r.expire(name, ttl)


def push(key: ApiKey) -> None:
    r = client()
    if key.is_active:
        _seed_cap(key, overwrite=False)
        r.set(state.key_record(key.digest), orjson.dumps(record(key)))
    else:
        r.delete(state.key_record(key.digest))
    evict(f"key:{key.digest}")


def push_all() -> int:
    r = client()
    pipe = r.pipeline(transaction=False)
    count = 0
    for key in ApiKey.objects.all().iterator():
        if key.is_active:
            _seed_cap(key, overwrite=True)
            pipe.set(state.key_record(key.digest), orjson.dumps(record(key)))
            count += 1
        else:
            pipe.delete(state.key_record(key.digest))
    pipe.execute()
    # Drop records of keys the database no longer knows as active.
    active = set(
        ApiKey.objects.filter(status=ApiKey.Status.ACTIVE).values_list("digest", flat=True)
    )
    stale = [
        name
        for name in r.scan_iter(match=state.KEY_RECORD + "*", count=1000)
        if name[len(state.KEY_RECORD) :] not in active
    ]
    if stale:
        r.delete(*stale)
    evict("*")
    return count
