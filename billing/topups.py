"""Top-ups: the payment providers' registry, and every operation that calls a provider and the
payment state machine together: starting a top-up, the customer's return from the provider's
page, cancelling, asking a provider where a payment stands, and the off-session charge of an
auto top-up.

Nothing here credits: the providers hand what they read to :mod:`billing.payments`, whose
``confirm`` is the only code that credits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Account
from accounts.organizations import billing_email

from . import ledger, payments
from .accounts import profile_of
from .models import BillingProfile, Payment
from .providers.base import CENT, DuplicateReference, Malformed, PaymentProvider, ProviderError
from .providers.btcpay import BTCPay
from .providers.paypal import PayPal
from .providers.stripe import Stripe

log = logging.getLogger(__name__)

Status = Payment.Status

_PROVIDERS: dict[str, PaymentProvider] = {p.identifier: p for p in (Stripe(), PayPal(), BTCPay())}


# -- the registry ---------------------------------------------------------------------------


def get_provider(identifier: str) -> PaymentProvider:
    try:
        return _PROVIDERS[identifier]
    except KeyError:
        raise LookupError(f"no payment provider {identifier!r}") from None


def all_providers() -> list[PaymentProvider]:
    return list(_PROVIDERS.values())


def enabled_providers() -> list[PaymentProvider]:
    return [p for p in _PROVIDERS.values() if p.is_enabled]


# -- the customer's top-up ------------------------------------------------------------------


class TopupError(Exception):
    """A top-up that cannot start; the message is shown to the customer."""


def validate_amount(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise TopupError(_("Enter an amount in US dollars."))
    if amount != amount.quantize(CENT):
        raise TopupError(_("Use at most two decimals (whole cents)."))
    if amount < settings.TP_TOPUP_MINIMUM:
        raise TopupError(_("The minimum top-up is $%(min)s.") % {"min": settings.TP_TOPUP_MINIMUM})
    if amount > settings.TP_TOPUP_MAXIMUM:
        raise TopupError(_("The maximum top-up is $%(max)s.") % {"max": settings.TP_TOPUP_MAXIMUM})
    return amount.quantize(CENT)


def quote(provider_id: str, amount: Decimal) -> dict[str, Any]:
    """What the customer will be charged for a credit of ``amount``: shown before paying and
    recorded on the payment."""
    provider = get_provider(provider_id)
    amount = validate_amount(amount)
    fee = provider.fee(amount)
    return {"provider": provider, "amount": amount, "fee": fee, "total": amount + fee}


def start_topup(
    *,
    account: Account,
    provider_id: str,
    amount: Decimal,
    return_url: Callable[[Payment], str],
    cancel_url: Callable[[Payment], str],
    save_card: bool = False,
) -> Payment:
    """Record a payment and create it at the provider. ``return_url`` / ``cancel_url`` are
    callables taking the new payment and giving absolute URLs. Nothing is credited here."""
    provider = get_provider(provider_id)
    if not provider.is_enabled:
        raise TopupError(_("This payment method is not available."))
    figures = quote(provider_id, amount)
    payment = Payment.objects.create(
        account=account,
        provider=provider.identifier,
        amount=figures["amount"],
        fee=figures["fee"],
        total=figures["total"],
        save_card=save_card and provider.supports_off_session,
        billing_details=profile_of(account).details(),
    )
    try:
        provider.start(
            payment,
            return_url=return_url(payment),
            cancel_url=cancel_url(payment),
            email=billing_email(account),
        )
        _record_checkout(payment)
    except DuplicateReference as exc:
        log.warning("starting payment %s at %s: %s", payment.uuid, provider_id, exc)
        payments.mark(
            payment, Status.FAILED, _("The payment provider answered with another payment's id.")
        )
        raise TopupError(
            _(
                "The payment provider answered with the reference of another payment, so this "
                "top-up was stopped. Nothing was charged; try again in a moment."
            )
        ) from exc
    except ProviderError as exc:
        log.warning("starting payment %s at %s failed: %s", payment.uuid, provider_id, exc)
        payments.mark(payment, Status.FAILED, _("The payment provider could not be reached."))
        raise TopupError(
            _("The payment provider could not be reached. Nothing was charged; try again.")
        ) from exc
    return payment


def _record_checkout(payment: Payment) -> None:
    """Check what the provider's ``start`` answered before the state machine stores it: a
    checkout URL that is one, and ids no other payment holds."""
    url = payment.checkout_url
    if not (isinstance(url, str) and len(url) <= 2000 and url.startswith(("https://", "http://"))):
        raise Malformed(f"{payment.provider}: a checkout URL that is not one")
    if not payments.record_checkout(payment):
        raise DuplicateReference(f"{payment.provider}: {payment.checkout_id} is another payment's")


def returned(payment: Payment, params: dict[str, str]) -> None:
    """The customer came back from the provider's page: the provider looks at the payment
    (``params``, the redirect's query, may say which object to look at, never how much was
    paid)."""
    get_provider(payment.provider).on_return(payment, params)


def cancel(payment: Payment) -> Payment:
    """The customer gave up on a payment they have not paid: the provider's cancel hook
    records it (through ``payments.mark``, which moves only a payment still ``created``), or
    asks the provider where it stands when a payment cannot be withdrawn (a crypto invoice). A
    payment made after all is still credited when the provider confirms it. No row lock is
    held here: the hook may call the provider."""
    if payment.status == Status.CREATED:
        get_provider(payment.provider).cancel(payment)
    payment.refresh_from_db()
    return payment


# -- asking the providers -------------------------------------------------------------------


def sync(payment: Payment) -> Payment:
    """Ask the provider where an open payment stands (return from the provider's page, the
    periodic check, the admin's "check at provider")."""
    get_provider(payment.provider).sync(payment)
    payment.refresh_from_db()
    return payment


def sync_open_payments(max_age_hours: int = 48) -> int:
    """Catch webhooks that never came: ask about payments still open after a few minutes."""
    now = timezone.now()
    open_payments = Payment.objects.filter(
        status__in=[Status.CREATED, Status.PENDING],
        created_at__lt=now - timedelta(minutes=5),
        created_at__gt=now - timedelta(hours=max_age_hours),
    ).exclude(checkout_id="", auto=False)
    checked = 0
    for payment in open_payments.iterator():
        try:
            sync(payment)
        except ProviderError as exc:
            log.warning("checking payment %s at %s failed: %s", payment.uuid, payment.provider, exc)
        checked += 1
    return checked


# -- auto top-up ----------------------------------------------------------------------------


def maybe_auto_topup(profile: BillingProfile) -> Payment | None:
    """Charge the saved card when the available balance is below the user's threshold. One
    auto top-up at a time per account (decided under the profile's row lock), none within
    TP_AUTO_TOPUP_RETRY_SECONDS of a failed one."""
    if not (profile.auto_topup_enabled and profile.has_saved_card):
        return None
    provider = get_provider("stripe")
    if not (provider.is_enabled and isinstance(provider, Stripe)):
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
        if autos.filter(status__in=[Status.CREATED, Status.PENDING]).exists():
            return None
        retry_after = now - timedelta(seconds=settings.TP_AUTO_TOPUP_RETRY_SECONDS)
        if autos.filter(status=Status.FAILED, updated_at__gt=retry_after).exists():
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
        reason = provider.charge_off_session(payment, locked)
    except ProviderError as exc:
        # Stripe could not be reached: not the card's fault. The idempotency key makes the
        # periodic check's next attempt safe; until then the payment stays open.
        log.warning("auto top-up %s: %s", payment.uuid, exc)
        if not exc.retry:
            payments.auto_topup_failed(payment, str(exc))
        return payment
    if reason is not None:
        payments.auto_topup_failed(payment, reason)
    return payment
