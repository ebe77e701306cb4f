"""Key records in the relay's view. Written after commit; every change is announced so that
each relay drops its cached copy (a revoked key is refused everywhere within a second)."""

from __future__ import annotations

import orjson

from portal.redis import client, evict
from relay import state

from .models import ApiKey


def record(key: ApiKey) -> dict[str, object]:
    """What the relay needs to authorise a request; no secret, no personal data."""
    return {"id": key.pk, "account": key.account_id, "name": key.name}


def push(key: ApiKey) -> None:
    r = client()
    if key.is_active:
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
