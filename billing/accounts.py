from __future__ import annotations

from django.db import transaction

from portal.models import User

from . import sync
from .models import Account


def ensure_account(user: User) -> Account:
    account, created = Account.objects.get_or_create(user=user)
    if created:
        # An empty account is known to the relay at once (and answered 402, not 401).
        transaction.on_commit(lambda: sync.post(account.pk, seq=0, balance=None), robust=True)
    return account
