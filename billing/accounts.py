from __future__ import annotations

from django.conf import settings
from django.db import transaction

from portal.models import User

from . import ledger, sync
from .models import Account, BillingProfile, LedgerEntry

SIGNUP_REFERENCE = "signup"


def ensure_account(user: User) -> Account:
    account, created = Account.objects.get_or_create(user=user)
    if created:
        # An empty account is known to the relay at once (and answered 402, not 401).
        transaction.on_commit(lambda: sync.post(account.pk, seq=0, balance=None), robust=True)
        if settings.TP_SIGNUP_CREDIT > 0:
            # Once per account: it is made here, once, with the user.
            ledger.credit(
                account=account,
                amount=settings.TP_SIGNUP_CREDIT,
                kind=LedgerEntry.Kind.ADJUSTMENT,
                reference=SIGNUP_REFERENCE,
                note="Signup credit",
            )
    return account


def profile_of(account: Account) -> BillingProfile:
    """The account's billing details and balance settings (made on first use)."""
    profile, _ = BillingProfile.objects.get_or_create(account=account)
    return profile
