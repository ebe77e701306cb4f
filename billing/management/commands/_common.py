from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from billing.accounts import ensure_account
from billing.models import Account


def account_by_email(email: str) -> Account:
    User = get_user_model()
    try:
        user = User.objects.get(email__iexact=email.strip())
    except User.DoesNotExist:
        raise CommandError(f"no user {email}") from None
    return ensure_account(user)
