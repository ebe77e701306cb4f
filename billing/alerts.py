"""Low-balance emails, and the balance checks that start auto top-ups.

``after_debit`` runs after usage was debited (usage recording announces it: ``signals.debited``):
a single indexed query and, only for accounts that asked for an alert or auto top-up, one
Celery task, queued by name. The task compares the available balance (ledger balance less what
is on hold or not yet posted) with the user's thresholds. ``after_credit`` runs after a payment
was credited (``signals.credited``, sent by ``payments.confirm``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q
from django.dispatch import receiver
from django.urls import reverse
from django.utils.translation import gettext as _

from accounts.language import in_language_of
from accounts.models import Account
from accounts.organizations import contacts
from lib import pgbatch
from lib.money import usd_text

from . import ledger, signals, topups
from .accounts import profile_of
from .models import BillingProfile

log = logging.getLogger(__name__)

WATCHED = Q(low_balance_threshold__isnull=False) | Q(auto_topup_enabled=True)

#: The task that checks balances (billing.tasks, which sits above this module).
CHECK_BALANCES = "billing.check_balances"


@receiver(signals.debited)
def _debited(sender: Any, account_ids: Iterable[int], **kwargs: Any) -> None:
    after_debit(account_ids)


@receiver(signals.credited)
def _credited(sender: Any, account_id: int, auto_topup: bool = False, **kwargs: Any) -> None:
    after_credit(account_id, auto_topup=auto_topup)


# ``WATCHED`` in SQL for the usage worker, whose batches name a hundred accounts and more: one
# prepared statement with an array (``lib.pgbatch``), where the ORM prepares each id apart.
_WATCHED = (
    "SELECT account_id FROM billing_billingprofile WHERE account_id = ANY(%s::bigint[])"
    " AND (low_balance_threshold IS NOT NULL OR auto_topup_enabled)"
)


def _watched(account_ids: list[int]) -> list[int]:
    if pgbatch.available():
        with pgbatch.cursor() as cur:
            return [a for (a,) in pgbatch.fetch(cur, _WATCHED, [pgbatch.array(account_ids)])]
    return list(
        BillingProfile.objects.filter(WATCHED, account_id__in=account_ids).values_list(
            "account_id", flat=True
        )
    )


def after_debit(account_ids: Iterable[int]) -> None:
    """Called after usage was debited. Never raises: usage recording must not fail for it."""
    try:
        watched = _watched(sorted(account_ids))
        if watched:
            current_app.send_task(CHECK_BALANCES, args=(watched,), retry=False)
    except Exception:
        log.exception("could not queue the balance check for %s", account_ids)


def after_credit(account_id: int, *, auto_topup: bool = False) -> None:
    """After a top-up was credited: a successful auto top-up clears the failure count, and a
    balance back above the alert threshold re-arms the low-balance email."""
    if auto_topup:
        BillingProfile.objects.filter(account_id=account_id).update(
            auto_topup_failures=0, auto_topup_last_error=""
        )
    account = Account.objects.select_related("user").get(pk=account_id)
    _low_balance(profile_of(account), ledger.summary(account)["available"])


def check_balance(account_id: int) -> None:
    account = Account.objects.select_related("user").filter(pk=account_id).first()
    if account is None:  # gone since it was debited: nothing left to watch (and no retry)
        log.info("balance check of account %s skipped: no such account", account_id)
        return
    profile = profile_of(account)
    available = ledger.summary(account)["available"]
    _low_balance(profile, available)
    topups.maybe_auto_topup(profile)


def sweep() -> int:
    """The periodic safety net: every watched account once."""
    ids = list(BillingProfile.objects.filter(WATCHED).values_list("account_id", flat=True))
    for account_id in ids:
        try:
            check_balance(account_id)
        except Exception:
            log.exception("balance check of account %s failed", account_id)
    return len(ids)


def _site() -> str:
    return str(settings.TP_SITE_URL)


def _send_low_balance(email: str, available: Decimal, threshold: Decimal) -> None:
    send_mail(
        _("[TokenPapa] Your balance is low"),
        _(
            "Your available TokenPapa balance is $%(available)s, below the $%(threshold)s "
            "you asked to be told about. Requests are refused once it reaches zero.\n\n"
            "Top up: %(url)s\n"
        )
        % {
            "available": usd_text(available.quantize(Decimal("0.01"))),
            "threshold": usd_text(threshold.quantize(Decimal("0.01"))),
            "url": _site() + reverse("billing"),
        },
        None,
        [email],
    )


def _low_balance(profile: BillingProfile, available: Decimal) -> None:
    """Once per crossing: the flag is set when the email goes and cleared only when the
    available balance is back at or above the threshold. The conditional UPDATE makes two
    workers racing on the same crossing send one email."""
    threshold = profile.low_balance_threshold
    if threshold is None:
        return
    rows = BillingProfile.objects.filter(pk=profile.pk)
    if available < threshold:
        if rows.filter(low_balance_notified=False).update(low_balance_notified=True):
            for user in contacts(profile.account):
                with in_language_of(user):
                    _send_low_balance(user.email, available, threshold)
    else:
        rows.filter(low_balance_notified=True).update(low_balance_notified=False)
