from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import Signal, receiver

from .models import Account, User

# Sent with ``user`` and ``active`` (bool) by accounts.services.set_active, inside its
# transaction: the apps above (which accounts cannot import) act on a user's deactivation or
# reactivation, e.g. keys suspends or restores the user's API keys on every relay.
active_changed = Signal()


@receiver(post_save, sender=User)
def create_account(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    """Every user has an account from the start (billing then gives it its place in the
    relay's view: an empty account is answered 402, not 401)."""
    if created:
        Account.objects.get_or_create(user=instance)
