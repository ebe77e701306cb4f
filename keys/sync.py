"""Key records in the relay's view. Written after commit; every change is announced so that
each relay drops its cached copy (a revoked key is refused everywhere within a second)."""

from __future__ import annotations

import orjson
from django.db.models import Q

from accounts.models import Membership
from core import state
from core.pricing import to_nanos
from lib.redis import client, evict

from . import signals
from .models import ApiKey


def member_cap(key: ApiKey) -> Membership | None:
    """The membership whose spend cap a key of an organization counts against (its maker's),
    if that member has a cap."""
    if key.account.organization_id is None or key.created_by_id is None:
        return None
    return (
        Membership.objects.filter(
            organization_id=key.account.organization_id,
            user_id=key.created_by_id,
            spend_cap__isnull=False,
        )
        .only("organization_id", "user_id", "spend_cap", "spend_cap_period")
        .first()
    )


def record(key: ApiKey) -> dict[str, object]:
    """What the relay needs to authorise a request; no secret, no personal data. A key of an
    organization's member with a spend cap carries the member's cap too (``mcap``), counted
    over all that member's keys (``member``)."""
    member = member_cap(key)
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
        # Only when set: a key without defaults keeps the relay on its plain path.
        **({"routing": key.routing} if key.routing else {}),
        **(
            {
                "member": member.user_id,
                "mcap": to_nanos(member.spend_cap),
                "mcap_period": member.spend_cap_period,
            }
            if member is not None and member.spend_cap is not None
            else {}
        ),
    }


def serves(key: ApiKey) -> bool:
    """Whether the relays accept the key: not revoked, and its maker not deactivated (a
    deactivated user's keys are suspended, and come back if the user is reactivated). A key
    the operator made for an organization has no maker."""
    maker = key.created_by
    return key.is_active and (maker is None or maker.is_active)


def push(key: ApiKey) -> None:
    r = client()
    if serves(key):
        signals.publishing.send(sender=ApiKey, key=key, rebuild=False)
        r.set(state.key_record(key.digest), orjson.dumps(record(key)))
    else:
        r.delete(state.key_record(key.digest))
    evict(f"key:{key.digest}")


def push_all() -> int:
    r = client()
    pipe = r.pipeline(transaction=False)
    count = 0
    for key in ApiKey.objects.select_related("account", "created_by").iterator():
        if serves(key):
            signals.publishing.send(sender=ApiKey, key=key, rebuild=True)
            pipe.set(state.key_record(key.digest), orjson.dumps(record(key)))
            count += 1
        else:
            pipe.delete(state.key_record(key.digest))
    pipe.execute()
    # Drop records of keys the database no longer knows as active.
    active = set(
        ApiKey.objects.filter(status=ApiKey.Status.ACTIVE)
        .filter(Q(created_by__isnull=True) | Q(created_by__is_active=True))
        .values_list("digest", flat=True)
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
