from __future__ import annotations

from django.core.management.base import CommandError

from accounts.models import Account
from accounts.selectors import NoSuchUser, account_by_email


def account_named(email: str) -> Account:
    """For operator commands: the account of the user ``email`` names, or a CommandError."""
    try:
        return account_by_email(email)
    except NoSuchUser:
        raise CommandError(f"no user {email}") from None
