from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from billing.accounts import ensure_account
from billing.models import Account
from portal.emails import normalize_email


def account_by_email(email: str) -> Account:
    User = get_user_model()
    try:
        # Any spelling that folds to the stored form (user@bücher.de for user@xn--bcher-kva.de).
        address = normalize_email(email)
    except ValidationError:
        address = email.strip()  # an address stored before normalisation is still found as typed
    try:
        user = User.objects.get(email__iexact=address)
    except User.DoesNotExist:
        raise CommandError(f"no user {email}") from None
    return ensure_account(user)
