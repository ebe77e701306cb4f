"""Which keys a role shows (issue 15): the owner and admins of an account see all its keys and
all its usage; an organization's member sees the keys they made and those keys' usage."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts import roles
from accounts.acting import Acting

from .models import ApiKey


def visible_keys(current: Acting, user: Any) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.filter(account=current.account)
    if current.can(roles.KEYS_ALL):
        return keys
    return keys.filter(created_by_id=user.pk)


def usage_keys(current: Acting, user: Any) -> tuple[int, ...] | None:
    """None: all the account's usage; otherwise only these keys' (the member's own)."""
    if current.can(roles.USAGE_ALL):
        return None
    return tuple(
        ApiKey.objects.filter(account=current.account, created_by_id=user.pk).values_list(
            "pk", flat=True
        )
    )
