from __future__ import annotations

from typing import Any

from .accounts import ensure_account
from .models import Account


def account_of(user: Any) -> Account:
    """The signed-in user's account (created with the user; made here if an older user
    predates that)."""
    try:
        return user.account  # type: ignore[no-any-return]
    except Account.DoesNotExist:
        return ensure_account(user)
