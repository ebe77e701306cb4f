"""Low-balance emails and auto top-up.

``after_debit`` is the one call the usage recorder makes (after its transaction): a single
indexed query and, only for accounts that asked for an alert or auto top-up, one Celery task.
The task compares the available balance (ledger balance less what is on hold or not yet
posted) with the user's thresholds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Account

from . import ledger
from .accounts import profile_of
from .models import BillingProfile, Payment
from .providers import get_provider
from .providers.base import ProviderError

log = logging.getLogger(__name__)

WATCHED = Q(low_balance_threshold__isnull=False) | Q(auto_topup_enabled=True)


def after_debit(account_ids: Iterable[int]) -> None:
    """Called after usage was debited. Never raises: usage recording must not fail for it."""
    try:
        watched = list(
            BillingProfile.objects.filter(WATCHED, account_id__in=list(account_ids)).values_list(
                "account_id", flat=True
            )
        )
        if watched:
            from .tasks import check_balances

            check_balances.apply_async(args=(watched,), retry=False)
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
    account = Account.objects.select_related("user").get(pk=account_id)
    profile = profile_of(account)
    available = ledger.summary(account)["available"]
    _low_balance(profile, available)
    maybe_auto_topup(profile)


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
            send_mail(
                _("[TokenPapa] Your balance is low"),
                _(
                    "Your available TokenPapa balance is $%(available)s, below the $%(threshold)s "
                    "you asked to be told about. Requests are refused once it reaches zero.\n\n"
                    "Top up: %(url)s\n"
                )
                % {
                    "available": available.quantize(Decimal("0.01")),
                    "threshold": threshold.quantize(Decimal("0.01")),
                    "url": _site() + reverse("billing"),
                },
                None,
                [profile.account.user.email],
            )
    else:
        rows.filter(low_balance_notified=True).update(low_balance_notified=False)


def maybe_auto_topup(profile: BillingProfile) -> Payment | None:
    """Charge the saved card when the available balance is below the user's threshold. One
    auto top-up at a time per account (decided under the profile's row lock), none within
    TP_AUTO_TOPUP_RETRY_SECONDS of a failed one."""
    if not (profile.auto_topup_enabled and profile.has_saved_card):
        return None
    provider = get_provider("stripe")
    if not provider.is_enabled:
        return None
    now = timezone.now()
    with transaction.atomic():
        locked = BillingProfile.objects.select_for_update().get(pk=profile.pk)
        if not (
            locked.auto_topup_enabled
            and locked.has_saved_card
            and locked.auto_topup_threshold is not None
            and locked.auto_topup_amount
        ):
            return None
        autos = Payment.objects.filter(account_id=locked.account_id, auto=True)
        if autos.filter(status__in=[Payment.Status.CREATED, Payment.Status.PENDING]).exists():
            return None
        retry_after = now - timedelta(seconds=settings.TP_AUTO_TOPUP_RETRY_SECONDS)
        if autos.filter(status=Payment.Status.FAILED, updated_at__gt=retry_after).exists():
            return None
        available = ledger.summary(locked.account)["available"]
        if available >= locked.auto_topup_threshold:
            return None
        amount = locked.auto_topup_amount
        fee = provider.fee(amount)
        payment = Payment.objects.create(
            account_id=locked.account_id,
            provider=provider.identifier,
            amount=amount,
            fee=fee,
            total=amount + fee,
            auto=True,
            billing_details=locked.details(),
        )
    try:
        reason = provider.charge_off_session(payment, locked)  # type: ignore[attr-defined]
    except ProviderError as exc:
        # Stripe could not be reached: not the card's fault. The idempotency key makes the
        # periodic check's next attempt safe; until then the payment stays open.
        log.warning("auto top-up %s: %s", payment.uuid, exc)
        if not exc.retry:
            auto_topup_failed(payment, str(exc))
        return payment
    if reason is not None:
        auto_topup_failed(payment, reason)
    return payment


def auto_topup_failed(payment: Payment, reason: str) -> None:
    """Count one failure per payment; the third in a row switches auto top-up off and tells
    the user."""
    with transaction.atomic():
        p = Payment.objects.select_for_update().get(pk=payment.pk)
        if p.status in {Payment.Status.FAILED, Payment.Status.CONFIRMED}:
            return
        p.status = Payment.Status.FAILED
        p.status_detail = reason[:300]
        p.save(update_fields=["status", "status_detail", "updated_at"])
        profile = BillingProfile.objects.select_for_update().get(account_id=p.account_id)
        profile.auto_topup_failures += 1
        profile.auto_topup_last_error = reason[:300]
        switched_off = profile.auto_topup_failures >= settings.TP_AUTO_TOPUP_MAX_FAILURES
        if switched_off:
            profile.auto_topup_enabled = False
        profile.save(
            update_fields=[
                "auto_topup_failures",
                "auto_topup_last_error",
                "auto_topup_enabled",
                "updated_at",
            ]
        )
        email = p.account.user.email
        failures = profile.auto_topup_failures
    log.warning("auto top-up %s failed (%s in a row): %s", p.uuid, failures, reason)
    if switched_off:
        send_mail(
            _("[TokenPapa] Auto top-up is off"),
            _(
                "We could not charge your saved card for an automatic top-up %(n)s times in a "
                "row (last reason: %(reason)s), so auto top-up is now switched off.\n\n"
                "Check your card and switch it on again: %(url)s\n"
            )
            % {"n": failures, "reason": reason, "url": _site() + reverse("billing_settings")},
            None,
            [email],
        )
