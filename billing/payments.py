"""The payment state machine: record what a provider answered about a payment, confirm it (the
only place that credits), move it along, and apply what a provider takes back (refunds,
chargebacks, dispute fees) or gives back (a dispute won).

Every function locks the payment row (``select_for_update``) and applies each change once, so
any number of webhook deliveries, redirects and periodic checks, in any order and at the same
time, leave the ledger as if each had happened once. Nothing here calls a provider: the
providers call these (and :mod:`billing.topups` calls both).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.mail import mail_admins, send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts import audit
from accounts.language import in_language_of
from accounts.organizations import billing_email, contacts

from . import ledger, signals
from .accounts import profile_of
from .models import BillingProfile, LedgerEntry, Payment, PaymentAdjustment

log = logging.getLogger(__name__)

Status = Payment.Status


def record_checkout(payment: Payment) -> bool:
    """Store where the provider sends the customer and the provider's ids for the payment (set
    on ``payment`` by the provider's ``start``). An id that another payment holds (unique per
    provider) is refused, storing nothing, rather than crashing on the constraint: a stand-in
    that restarted, or a replayed answer, must not tie two payments to one provider object.
    Returns whether it was stored."""
    if _held_by_another(payment, checkout_id=payment.checkout_id):
        return False
    try:
        with transaction.atomic():
            Payment.objects.filter(pk=payment.pk).update(
                checkout_id=payment.checkout_id,
                checkout_url=payment.checkout_url,
                provider_payment_id=payment.provider_payment_id,
            )
    except IntegrityError:  # the same id stored by another request at the same moment
        return False
    return True


def _held_by_another(payment: Payment, **ids: str) -> bool:
    ids = {name: value for name, value in ids.items() if value}
    return bool(ids) and (
        Payment.objects.filter(provider=payment.provider, **ids).exclude(pk=payment.pk).exists()
    )


def find(
    provider_id: str,
    *,
    uuid: str | UUID | None = None,
    checkout_id: str | None = None,
    provider_payment_id: str | None = None,
) -> Payment | None:
    """Our payment for a provider's object, by whichever of its ids the object carries."""
    payments = Payment.objects.filter(provider=provider_id)
    # Ids come from the provider's objects: anything but a string names nothing of ours.
    uuid = uuid if isinstance(uuid, str | UUID) else None
    checkout_id = checkout_id if isinstance(checkout_id, str) else None
    if not isinstance(provider_payment_id, str):
        provider_payment_id = None
    if provider_payment_id:
        found = payments.filter(provider_payment_id=provider_payment_id).first()
        if found:
            return found
    if checkout_id:
        found = payments.filter(checkout_id=checkout_id).first()
        if found:
            return found
    if uuid:
        try:
            return payments.filter(uuid=UUID(str(uuid))).first()
        except ValueError:
            return None
    return None


def _locked(payment: Payment | int) -> Payment:
    pk = payment.pk if isinstance(payment, Payment) else payment
    return Payment.objects.select_for_update(of=("self",)).select_related("account").get(pk=pk)


@transaction.atomic
def confirm(
    payment: Payment | int,
    *,
    provider_payment_id: str,
    amount_received: Decimal,
    currency: str,
    detail: str = "",
) -> Payment:
    """Credit the payment once. The only place that credits a payment.

    ``amount_received`` and ``currency`` come from the provider's confirmed object. The credit
    is what was received less the fee quoted when the payment started; receiving less than
    was charged, or another currency, credits nothing and flags the payment for an operator.
    The ledger entry is keyed on the provider's payment id (unique per provider).
    """
    p = _locked(payment)
    if p.status == Status.CONFIRMED:
        return p
    if p.status == Status.NEEDS_REVIEW:
        # An operator looks at it; money must not arrive on the balance behind their back.
        return p
    if _held_by_another(p, provider_payment_id=provider_payment_id):
        # The provider names an object that already credited another payment: crediting
        # again would count one payment twice; an operator looks at both.
        return _flag_locked(p, f"provider payment {provider_payment_id} belongs to another payment")
    if currency.upper() != p.currency:
        return _flag_locked(p, f"paid in {currency.upper()}, expected {p.currency}")
    if amount_received < p.total:
        return _flag_locked(p, f"received {amount_received} {p.currency}, expected {p.total}")
    credit = amount_received - p.fee
    entry = ledger.credit(
        account=p.account,
        amount=credit,
        kind=LedgerEntry.Kind.TOPUP,
        reference=f"payment:{p.uuid}",
        note=_("%(method)s top-up %(number)s")
        % {"method": p.get_provider_display(), "number": p.receipt_number},
    )
    p.provider_payment_id = provider_payment_id
    p.amount_received = amount_received
    p.credited = credit
    p.credit_entry = entry
    p.status = Status.CONFIRMED
    p.confirmed_at = timezone.now()
    p.status_detail = detail[:300]
    if not any(p.billing_details.values() if p.billing_details else ()):
        p.billing_details = profile_of(p.account).details()
    p.save()
    audit.record(
        account=p.account,
        action=audit.Action.TOPUP_CREDITED,
        target=p.receipt_number or f"payment:{p.uuid}",
        details={"amount": credit, "method": p.provider, "auto_topup": p.auto},
        by_system=True,
    )
    account_id, auto = p.account_id, p.auto
    log.info("payment %s credited %s USD", p.uuid, credit)
    transaction.on_commit(
        lambda: signals.credited.send(sender=Payment, account_id=account_id, auto_topup=auto),
        robust=True,
    )
    return p


_MOVES = {
    Status.PENDING: {Status.CREATED, Status.CANCELED, Status.EXPIRED, Status.FAILED},
    Status.FAILED: {Status.CREATED, Status.PENDING, Status.CANCELED},
    Status.EXPIRED: {Status.CREATED, Status.PENDING, Status.CANCELED},
    Status.CANCELED: {Status.CREATED},
}


@transaction.atomic
def mark(payment: Payment | int, status: str, detail: Any = "") -> Payment:
    """Move a payment that is not credited to pending, failed, expired or canceled. A
    confirmed payment or one under review never moves here."""
    p = _locked(payment)
    if p.status in _MOVES.get(Status(status), set()):
        p.status = status
        p.status_detail = str(detail)[:300]
        p.save(update_fields=["status", "status_detail", "updated_at"])
    return p


@transaction.atomic
def attach(payment: Payment | int, *, provider_payment_id: str) -> Payment:
    """Record the provider's id for a payment not yet credited (an off-session charge's
    PaymentIntent), so the periodic check can ask about it. An id that another payment holds
    is not taken: the payment is flagged for an operator instead."""
    p = _locked(payment)
    if p.status in {Status.CONFIRMED, Status.NEEDS_REVIEW}:
        return p
    if _held_by_another(p, provider_payment_id=provider_payment_id):
        return _flag_locked(p, f"provider payment {provider_payment_id} belongs to another payment")
    p.provider_payment_id = provider_payment_id
    p.save(update_fields=["provider_payment_id", "updated_at"])
    return p


@transaction.atomic
def flag(payment: Payment | int, reason: str) -> Payment:
    """Something an automatic rule must not decide (partly paid, paid late, paid in another
    currency): no credit, shown to the customer, and the operators are told."""
    return _flag_locked(_locked(payment), reason)


def _flag_locked(p: Payment, reason: str) -> Payment:
    if p.status != Status.CONFIRMED:
        p.status = Status.NEEDS_REVIEW
    p.status_detail = reason[:300]
    p.save(update_fields=["status", "status_detail", "updated_at"])
    log.warning("payment %s flagged for review: %s", p.uuid, reason)
    subject = f"Payment {p.receipt_number} needs review"
    body = (
        f"{p.get_provider_display()} payment {p.receipt_number} ({p.uuid}) of {p.total} "
        f"{p.currency} for {billing_email(p.account)} (account {p.account_id}): {reason}.\n"
        f"Provider ids: checkout {p.checkout_id or '-'}, payment {p.provider_payment_id or '-'}."
        "\nNothing was credited automatically; see Payments in the admin."
    )
    transaction.on_commit(lambda: _tell_operators(subject, body), robust=True)
    return p


def _tell_operators(subject: str, body: str) -> None:
    recipients = settings.TP_BILLING_OPERATOR_EMAILS
    if recipients:
        send_mail(f"[TokenPapa] {subject}", body, None, recipients)
    else:
        mail_admins(subject, body)


def _adjust(
    p: Payment, *, kind: str, reference: str, gross: Decimal, amount: Decimal, note: str
) -> PaymentAdjustment:
    entry = None
    if amount != 0:
        ledger_kind = (
            LedgerEntry.Kind.REFUND
            if kind == PaymentAdjustment.Kind.REFUND
            else LedgerEntry.Kind.CHARGEBACK
        )
        entry = ledger.post_entry(
            account=p.account,
            amount=amount,
            kind=ledger_kind,
            reference=f"payment:{p.uuid}",
            note=note,
        )
    return PaymentAdjustment.objects.create(
        payment=p,
        kind=kind,
        reference=reference[:200],
        gross=gross,
        amount=amount,
        ledger_entry=entry,
    )


def _room(p: Payment) -> Decimal:
    """What can still be taken back: credited and not yet reversed."""
    return max(Decimal(0), (p.credited or Decimal(0)) - p.reversed)


@transaction.atomic
def refund(
    payment: Payment | int, *, gross: Decimal, reference: str, cumulative: bool = False
) -> PaymentAdjustment | None:
    """The provider refunded ``gross`` of what was charged (or, with ``cumulative``, has now
    refunded ``gross`` in all: Stripe's ``amount_refunded``). The balance loses as much, at
    most what the payment credited; the processing fee is the first part not taken back."""
    p = _locked(payment)
    if cumulative:
        delta = gross - p.refunded_gross
        if delta <= 0:
            return None  # an older or repeated figure
        reference = f"refunded-to:{gross}"
    else:
        delta = gross
    if PaymentAdjustment.objects.filter(payment=p, kind="refund", reference=reference).exists():
        return None
    amount = min(delta, _room(p))
    adjustment = _adjust(
        p,
        kind=PaymentAdjustment.Kind.REFUND,
        reference=reference,
        gross=delta,
        amount=-amount,
        note=_("Refund of %(number)s") % {"number": p.receipt_number},
    )
    p.refunded_gross += delta
    p.reversed += amount
    p.save(update_fields=["refunded_gross", "reversed", "updated_at"])
    return adjustment


@transaction.atomic
def chargeback(
    payment: Payment | int, *, dispute: str, gross: Decimal, fee: Decimal = Decimal(0)
) -> PaymentAdjustment | None:
    """The provider took ``gross`` back for a dispute (and charged ``fee`` for it). The
    balance loses the disputed part of the credit and the fee, once per dispute."""
    p = _locked(payment)
    if PaymentAdjustment.objects.filter(
        payment=p, kind=PaymentAdjustment.Kind.CHARGEBACK, reference=dispute
    ).exists():
        return None
    amount = min(gross, _room(p))
    adjustment = _adjust(
        p,
        kind=PaymentAdjustment.Kind.CHARGEBACK,
        reference=dispute,
        gross=gross,
        amount=-amount,
        note=_("Chargeback on %(number)s") % {"number": p.receipt_number},
    )
    if fee > 0:
        _adjust(
            p,
            kind=PaymentAdjustment.Kind.DISPUTE_FEE,
            reference=dispute,
            gross=fee,
            amount=-fee,
            note=_("Dispute fee on %(number)s") % {"number": p.receipt_number},
        )
    p.reversed += amount
    p.dispute_status = "lost_funds_withdrawn"
    p.save(update_fields=["reversed", "dispute_status", "updated_at"])
    return adjustment


@transaction.atomic
def reinstate(
    payment: Payment | int, *, dispute: str, fee_returned: Decimal = Decimal(0)
) -> PaymentAdjustment | None:
    """A dispute was decided for us and the provider gave the money back: the balance gets
    back what the chargeback took (and the fee, where the provider returned it), once."""
    p = _locked(payment)
    adjustments = PaymentAdjustment.objects.filter(payment=p, reference=dispute)
    if adjustments.filter(kind=PaymentAdjustment.Kind.REINSTATED).exists():
        return None
    taken = adjustments.filter(kind=PaymentAdjustment.Kind.CHARGEBACK).first()
    if taken is None:
        return None  # nothing was withdrawn for this dispute (yet)
    fee_taken = adjustments.filter(kind=PaymentAdjustment.Kind.DISPUTE_FEE).first()
    back = -taken.amount
    if fee_taken is not None and fee_returned > 0:
        back += min(fee_returned, -fee_taken.amount)
    adjustment = _adjust(
        p,
        kind=PaymentAdjustment.Kind.REINSTATED,
        reference=dispute,
        gross=back,
        amount=back,
        note=_("Dispute won on %(number)s: funds reinstated") % {"number": p.receipt_number},
    )
    p.reversed -= -taken.amount
    p.dispute_status = "won_funds_reinstated"
    p.save(update_fields=["reversed", "dispute_status", "updated_at"])
    return adjustment


def set_dispute_status(payment: Payment, status: str) -> None:
    Payment.objects.filter(pk=payment.pk).update(dispute_status=status[:40])


def auto_topup_failed(payment: Payment, reason: str) -> None:
    """An auto top-up's charge failed (the card was declined, or the provider refused it for
    good). The payment fails, and one failure is counted per payment; the third in a row
    switches auto top-up off and tells the user."""
    with transaction.atomic():
        p = Payment.objects.select_for_update().get(pk=payment.pk)
        if p.status in {Status.FAILED, Status.CONFIRMED}:
            return
        p.status = Status.FAILED
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
        users = contacts(p.account)
        failures = profile.auto_topup_failures
    log.warning("auto top-up %s failed (%s in a row): %s", p.uuid, failures, reason)
    if switched_off:
        for user in users:
            with in_language_of(user):
                _send_auto_topup_off(user.email, failures, reason)


def _send_auto_topup_off(email: str, failures: int, reason: str) -> None:
    send_mail(
        _("[TokenPapa] Auto top-up is off"),
        _(
            "We could not charge your saved card for an automatic top-up %(n)s times in a "
            "row (last reason: %(reason)s), so auto top-up is now switched off.\n\n"
            "Check your card and switch it on again: %(url)s\n"
        )
        % {
            "n": failures,
            "reason": reason,
            "url": str(settings.TP_SITE_URL) + reverse("billing_settings"),
        },
        None,
        [email],
    )
