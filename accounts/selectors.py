from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from .emails import normalize_email
from .models import Account, User


class NoSuchUser(LookupError):
    pass


def account_of(user: Any) -> Account:
    """The signed-in user's account (made with the user; made here if an older user predates
    that)."""
    try:
        return user.account  # type: ignore[no-any-return]
    except Account.DoesNotExist:
        account, _ = Account.objects.get_or_create(user=user)
        return account


def user_by_email(email: str) -> User:
    """The user an operator names by address: any spelling that folds to the stored form
    (user@bücher.de for user@xn--bcher-kva.de), or an address stored before normalisation as
    typed."""
    try:
        address = normalize_email(email)
    except ValidationError:
        address = email.strip()
    try:
        return User.objects.get(email__iexact=address)
    except User.DoesNotExist:
        raise NoSuchUser(email) from None


def account_by_email(email: str) -> Account:
    return account_of(user_by_email(email))
