from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import User


@receiver(post_save, sender=User)
def create_account(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    if created:
        from billing.accounts import ensure_account

        ensure_account(instance)
