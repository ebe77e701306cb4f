"""Billing's side of an account: its place in the relay's view and its signup credit from the
moment it exists, and its billing details."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import Account

from . import ledger, sync
from .models import BillingProfile, LedgerEntry

SIGNUP_REFERENCE = "signup"


@receiver(post_save, sender=Account)
def open_account(sender: type[Account], instance: Account, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    account = instance
    # An empty account is known to the relay at once (and answered 402, not 401).
    transaction.on_commit(lambda: sync.post(account.pk, seq=0, balance=None), robust=True)
    if settings.TP_SIGNUP_CREDIT > 0 and account.user_id is not None:
        # Once per user's account, made here, once, in the transaction that made the account.
        # Never for an organization's: a user could otherwise mint credit by making teams.
        ledger.credit(
            account=account,
            amount=settings.TP_SIGNUP_CREDIT,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            reference=SIGNUP_REFERENCE,
            note="Signup credit",
        )


def profile_of(account: Account) -> BillingProfile:
    """The account's billing details and balance settings (made on first use)."""
    profile, _ = BillingProfile.objects.get_or_create(account=account)
    return profile
