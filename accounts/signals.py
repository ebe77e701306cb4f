from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import Account, User


@receiver(post_save, sender=User)
def create_account(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    """Every user has an account from the start (billing then gives it its place in the
    relay's view: an empty account is answered 402, not 401)."""
    if created:
        Account.objects.get_or_create(user=instance)
