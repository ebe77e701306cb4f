"""What keys does when the apps below it announce something (they cannot import keys)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import receiver

from accounts.models import User
from accounts.signals import active_changed

from . import sync
from .models import ApiKey


@receiver(active_changed)
def suspend_or_restore_keys(sender: type[User], user: User, active: bool, **kwargs: Any) -> None:
    """A deactivated user's API keys leave every relay (within a second, like a revocation);
    a reactivated user's come back. Their status stays: a suspension is not a revocation.
    (Management keys are refused by keys.services.management_key_for while the user is
    inactive.)"""
    keys = list(
        ApiKey.objects.filter(account__user=user, status=ApiKey.Status.ACTIVE).select_related(
            "account__user"
        )
    )

    def push_all() -> None:
        for key in keys:
            sync.push(key)

    transaction.on_commit(push_all)
