"""Writes about users that other apps must hear of (the admin and commands call these)."""

from __future__ import annotations

from allauth.usersessions.models import UserSession
from django.db import transaction

from . import signals
from .models import User


@transaction.atomic
def set_active(*, user: User, active: bool) -> User:
    """Deactivates or reactivates a user. Deactivating ends every session of theirs at once (so
    a reactivated user signs in afresh; Django's backend already refuses an inactive user's
    session) and is announced (``signals.active_changed``): keys takes the user's API keys off
    every relay and refuses their management keys, until reactivation restores the API keys.
    Repeating it is harmless."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active != active:
        user.is_active = active
        user.save(update_fields=["is_active"])
    if not active:
        for session in UserSession.objects.filter(user=user):
            session.end()
    signals.active_changed.send(sender=User, user=user, active=active)
    return user
