"""Card payments through Stripe Checkout (payment mode), with the official ``stripe`` SDK.

Credits are keyed on the PaymentIntent: ``checkout.session.completed`` (when paid),
``checkout.session.async_payment_succeeded`` and ``payment_intent.succeeded`` all name the same
PaymentIntent, so whichever arrives first credits and the others find the payment confirmed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from decimal import Decimal
from functools import lru_cache
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import payments
from ..accounts import profile_of
from ..models import BillingProfile, Payment
from .base import (
    MAX_ID_LENGTH,
    DuplicateReference,
    Ignore,
    InvalidWebhook,
    Malformed,
    PaymentProvider,
    ProviderError,
    cents,
    field,
    from_cents,
    header,
    ident,
    is_loopback,
    objects,
    origin,
    parse_json,
)

log = logging.getLogger(__name__)

_STAMP = re.compile(r"[0-9]{1,12}")
#: What Stripe's object ids look like (pi_..., ch_...): nothing else goes into an API path.
_OBJECT_ID = re.compile(r"[A-Za-z0-9_]{1,200}")


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str, timeout: float) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=2,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain JSON data (what a webhook carries), so one code path reads
    both."""
    if isinstance(obj, dict) and not isinstance(obj, stripe.StripeObject):
        return obj
    return json.loads(json.dumps(obj.to_dict(recursive=True, for_json=True), default=str))


def _id(obj: Any, key: str) -> str | None:
    """An expandable field: an id or an object with one."""
    value = field(obj, key, object)
    if isinstance(value, dict):
        return ident(value, "id")
    return ident(obj, key)


def _timestamp(signature: str) -> int:
    """The one ``t`` of a Stripe-Signature header (``t=<unix>,v1=<hex>[,v1=...]``). The SDK
    takes the first ``t`` and would take a non-ASCII digit; anything but exactly one ASCII
    number is refused here, so that what it checks and what we check are the same figure."""
    stamps = []
    for element in signature.split(","):
        key, sep, value = element.strip().partition("=")
        if not sep or not key:
            raise InvalidWebhook("a Stripe-Signature element without a value")
        if key == "t":
            stamps.append(value)
    if len(stamps) != 1 or not _STAMP.fullmatch(stamps[0]):
        raise InvalidWebhook("Stripe-Signature needs exactly one numeric t")
    return int(stamps[0])


class Stripe(PaymentProvider):
    identifier = "stripe"
    verbose_name = _("Card")
    description = _("Visa, Mastercard, American Express and more, through Stripe")
    supports_off_session = True
    handlers = {
        "checkout.session.completed": "on_session_completed",
        "checkout.session.async_payment_succeeded": "on_session_completed",
        "checkout.session.async_payment_failed": "on_session_failed",
        "checkout.session.expired": "on_session_expired",
        "payment_intent.succeeded": "on_intent_succeeded",
        "payment_intent.payment_failed": "on_intent_failed",
        "charge.refunded": "on_charge_refunded",
        "charge.dispute.created": "on_dispute_updated",
        "charge.dispute.closed": "on_dispute_updated",
        "charge.dispute.funds_withdrawn": "on_dispute_funds_withdrawn",
        "charge.dispute.funds_reinstated": "on_dispute_funds_reinstated",
    }

    @property
    def is_enabled(self) -> bool:
        return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)

    @property
    def is_simulated(self) -> bool:
        return is_loopback(settings.STRIPE_API_BASE)

    def checkout_origins(self) -> list[str]:
        if self.is_simulated:
            return [origin(settings.STRIPE_API_BASE)]
        return ["https://checkout.stripe.com"]

    def client(self) -> stripe.StripeClient:
        return _client(
            settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, settings.TP_PAYMENT_HTTP_TIMEOUT
        )

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return _plain(fn(*args, **kwargs))
        except stripe.CardError:
            raise
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderError(f"stripe: {type(exc).__name__}", retry=True) from exc
        except stripe.APIError as exc:
            raise ProviderError(f"stripe: {exc.user_message or exc}", retry=True) from exc
        except stripe.StripeError as exc:
            # Stripe says resource_missing; its stand-in only answers 404.
            missing = "resource_missing" if exc.http_status == 404 else ""
            raise ProviderError(
                f"stripe: {exc.user_message or exc}", retry=False, code=exc.code or missing
            ) from exc

    def fetch(self, fn: Any, object_id: str) -> dict[str, Any]:
        """An object a verified event names. One Stripe does not know is not ours (another
        account's, or made up): nothing to do, and no retry will change that."""
        if not _OBJECT_ID.fullmatch(object_id):
            raise Ignore(f"not a Stripe id: {object_id[:40]!r}")
        try:
            return self.call(fn, object_id)
        except ProviderError as exc:
            if exc.code == "resource_missing":
                raise Ignore(f"Stripe knows no {object_id}") from None
            raise

    # -- the customer's side ----------------------------------------------------------------

    def start(self, payment: Payment, *, return_url: str, cancel_url: str, email: str) -> None:
        name = gettext("TokenPapa credit")
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": cents(payment.total),
                        "product_data": {
                            "name": f"{name} ${payment.amount}",
                            "description": gettext("Includes a card fee of $%(fee)s")
                            % {"fee": payment.fee},
                        },
                    },
                }
            ],
            "success_url": return_url + "?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": cancel_url,
            "client_reference_id": str(payment.uuid),
            "metadata": {"tp_payment": str(payment.uuid), "tp_account": str(payment.account_id)},
            "payment_intent_data": {
                "description": f"{name} {payment.receipt_number}",
                "metadata": {"tp_payment": str(payment.uuid)},
            },
        }
        if payment.save_card:
            params["customer"] = self.ensure_customer(profile_of(payment.account), email)
            params["payment_intent_data"]["setup_future_usage"] = "off_session"
        else:
            params["customer_email"] = email
        session = self.call(
            self.client().v1.checkout.sessions.create,
            params,
            {"idempotency_key": f"tp-checkout-{payment.uuid}"},
        )
        payment.checkout_id = ident(session, "id", required=True)
        payment.checkout_url = field(session, "url", str, required=True)

    def ensure_customer(self, profile: BillingProfile, email: str) -> str:
        if profile.stripe_customer_id:
            return profile.stripe_customer_id
        customer = self.call(
            self.client().v1.customers.create,
            {"email": email, "metadata": {"tp_account": str(profile.account_id)}},
            # One customer per account even when two checkouts start at once.
            {"idempotency_key": f"tp-customer-{profile.account_id}"},
        )
        customer_id = ident(customer, "id", required=True)
        try:
            with transaction.atomic():
                type(profile).objects.filter(pk=profile.pk, stripe_customer_id="").update(
                    stripe_customer_id=customer_id
                )
        except IntegrityError:
            raise DuplicateReference(
                f"stripe: customer {customer_id} already belongs to another account"
            ) from None
        profile.refresh_from_db()
        return profile.stripe_customer_id

    def sync(self, payment: Payment) -> None:
        if payment.checkout_id:
            session = self.call(self.client().v1.checkout.sessions.retrieve, payment.checkout_id)
            self._apply_session(payment, session)
        elif payment.provider_payment_id:
            intent = self.call(
                self.client().v1.payment_intents.retrieve, payment.provider_payment_id
            )
            self._apply_intent(payment, intent)
        elif payment.auto:
            # The charge call never answered: make it again under the same idempotency key,
            # which gives Stripe's first answer if the first call did reach it.
            reason = self.charge_off_session(payment, profile_of(payment.account))
            if reason is not None:
                payments.auto_topup_failed(payment, reason)
        else:
            payments.mark(payment, "failed", gettext("Never reached the card processor."))

    def _apply_session(self, payment: Payment, session: dict[str, Any]) -> None:
        intent = _id(session, "payment_intent")
        if session.get("payment_status") == "paid":
            if not intent:
                raise Malformed("stripe: a paid session without a PaymentIntent")
            confirmed = payments.confirm(
                payment,
                provider_payment_id=intent,
                amount_received=from_cents(session.get("amount_total")),
                currency=field(session, "currency", str, required=True),
            )
            if confirmed.save_card and confirmed.status == "confirmed":
                self.remember_card(confirmed, intent)
        elif session.get("status") == "complete":
            payments.mark(payment, "pending", gettext("Waiting for the bank to confirm."))
        elif session.get("status") == "expired":
            payments.mark(payment, "expired", gettext("The checkout page expired."))

    def _apply_intent(self, payment: Payment, intent: dict[str, Any]) -> None:
        if intent.get("status") == "succeeded":
            payments.confirm(
                payment,
                provider_payment_id=ident(intent, "id", required=True),
                amount_received=from_cents(intent.get("amount_received")),
                currency=field(intent, "currency", str, required=True),
            )
        elif intent.get("status") == "processing":
            payments.mark(payment, "pending", gettext("Waiting for the bank to confirm."))
        elif intent.get("status") == "canceled":
            payments.mark(payment, "failed", gettext("The payment was canceled."))

    def remember_card(self, payment: Payment, intent_id: str) -> None:
        """Keep the card the customer agreed to save, for auto top-ups (off-session)."""
        intent = self.call(
            self.client().v1.payment_intents.retrieve, intent_id, {"expand": ["payment_method"]}
        )
        method = field(intent, "payment_method", dict)
        customer = _id(intent, "customer")
        if method is None or not customer:
            return
        card = field(method, "card", dict) or {}
        profile = profile_of(payment.account)
        try:
            with transaction.atomic():
                type(profile).objects.filter(pk=profile.pk).update(
                    stripe_customer_id=customer,
                    stripe_payment_method_id=ident(method, "id", required=True),
                    card_brand=str(card.get("brand", ""))[:30],
                    card_last4=str(card.get("last4", ""))[:4],
                    auto_topup_failures=0,
                )
        except IntegrityError:
            # The credit stands; only the card is not kept for auto top-ups.
            log.warning("stripe customer %s already belongs to another account", customer)

    def charge_off_session(self, payment: Payment, profile: BillingProfile) -> str | None:
        """Charge the saved card for an auto top-up. Returns None when the charge went
        through (or is processing) and the reason when the card was declined."""
        params = {
            "amount": cents(payment.total),
            "currency": "usd",
            "customer": profile.stripe_customer_id,
            "payment_method": profile.stripe_payment_method_id,
            "off_session": True,
            "confirm": True,
            "description": f"{gettext('TokenPapa auto top-up')} {payment.receipt_number}",
            "metadata": {"tp_payment": str(payment.uuid), "tp_auto_topup": "1"},
        }
        try:
            intent = self.call(
                self.client().v1.payment_intents.create,
                params,
                {"idempotency_key": f"tp-auto-{payment.uuid}"},
            )
        except stripe.CardError as exc:
            body = exc.json_body if isinstance(exc.json_body, dict) else {}
            failed = field(field(body, "error", dict) or {}, "payment_intent", dict) or {}
            failed_id = ident(failed, "id")
            if failed_id:
                payments.attach(payment, provider_payment_id=failed_id)
            return str(exc.user_message or exc.code or "card declined")
        attached = payments.attach(payment, provider_payment_id=ident(intent, "id", required=True))
        if attached.status == "needs_review":
            return None  # the id belongs to another payment: an operator looks at both
        if intent.get("status") in {"succeeded", "processing"}:
            self._apply_intent(payment, intent)
            return None
        return str(intent.get("status"))

    # -- webhooks ---------------------------------------------------------------------------

    def verify_webhook(self, request: HttpRequest) -> dict[str, Any]:
        secret = settings.STRIPE_WEBHOOK_SECRET
        if not secret:
            raise InvalidWebhook("Stripe webhooks are not configured")
        signature = header(request, "Stripe-Signature")
        if not signature:
            raise InvalidWebhook("no Stripe-Signature header")
        stamp = _timestamp(signature)
        try:
            payload = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidWebhook("the body is not UTF-8") from None
        tolerance = settings.TP_WEBHOOK_TOLERANCE_SECONDS
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(str(exc).split(".")[0]) from None
        if stamp > time.time() + tolerance:
            raise InvalidWebhook("timestamp in the future")
        event = parse_json(request.body)
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and 0 < len(event["id"]) <= MAX_ID_LENGTH
            and isinstance(event.get("type"), str)
            and 0 < len(event["type"]) <= 100
            and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict)
        ):
            raise InvalidWebhook("not a Stripe event")
        return event

    def event_identity(self, event: dict[str, Any]) -> tuple[str, str]:
        return event["id"], event["type"]

    def _payment_for(self, obj: dict[str, Any]) -> Payment:
        obj_id = ident(obj, "id", required=True)
        metadata = field(obj, "metadata", dict) or {}
        payment = payments.find(
            self.identifier,
            checkout_id=obj_id if obj.get("object") == "checkout.session" else None,
            provider_payment_id=obj_id if obj.get("object") == "payment_intent" else None,
            uuid=field(metadata, "tp_payment", str) or field(obj, "client_reference_id", str),
        )
        if payment is None:
            raise Ignore(f"no payment of ours for {obj.get('object')} {obj.get('id')}")
        return payment

    def _confirmed_payment_of_intent(self, intent_id: str | None) -> Payment:
        """The payment a refund or dispute is about, credited first if its own success
        event has not arrived yet (events out of order)."""
        if not intent_id:
            raise Ignore("no PaymentIntent on this object")
        payment = payments.find(self.identifier, provider_payment_id=intent_id)
        if payment is not None and payment.status == "confirmed":
            return payment
        intent = self.fetch(self.client().v1.payment_intents.retrieve, intent_id)
        payment = payment or self._payment_for(intent)
        self._apply_intent(payment, intent)
        payment.refresh_from_db()
        return payment

    def on_session_completed(self, event: dict[str, Any]) -> None:
        session = event["data"]["object"]
        if session.get("mode") != "payment":
            raise Ignore("not a payment-mode session")
        self._apply_session(self._payment_for(session), session)

    def on_session_failed(self, event: dict[str, Any]) -> None:
        session = event["data"]["object"]
        payments.mark(
            self._payment_for(session), "failed", gettext("The bank declined the payment.")
        )

    def on_session_expired(self, event: dict[str, Any]) -> None:
        session = event["data"]["object"]
        payments.mark(self._payment_for(session), "expired", gettext("The checkout page expired."))

    def on_intent_succeeded(self, event: dict[str, Any]) -> None:
        intent = event["data"]["object"]
        self._apply_intent(self._payment_for(intent), intent)

    def on_intent_failed(self, event: dict[str, Any]) -> None:
        intent = event["data"]["object"]
        payment = self._payment_for(intent)
        if payment.auto:
            error = field(intent, "last_payment_error", dict) or {}
            payments.auto_topup_failed(payment, field(error, "message", str) or "card declined")
        # In Checkout the customer may try another card on the same page: nothing to do.

    def on_charge_refunded(self, event: dict[str, Any]) -> None:
        charge = event["data"]["object"]
        refunded = from_cents(charge.get("amount_refunded", 0))
        payment = self._confirmed_payment_of_intent(_id(charge, "payment_intent"))
        payments.refund(
            payment,
            gross=refunded,
            reference="",
            cumulative=True,
        )

    def _dispute_payment(self, dispute: dict[str, Any]) -> Payment:
        intent = _id(dispute, "payment_intent")
        charge_id = _id(dispute, "charge")
        if not intent and charge_id:
            charge = self.fetch(self.client().v1.charges.retrieve, charge_id)
            intent = _id(charge, "payment_intent")
        return self._confirmed_payment_of_intent(intent)

    def on_dispute_updated(self, event: dict[str, Any]) -> None:
        dispute = event["data"]["object"]
        payment = payments.find(self.identifier, provider_payment_id=_id(dispute, "payment_intent"))
        if payment is None:
            raise Ignore("no payment of ours for this dispute")
        payments.set_dispute_status(payment, field(dispute, "status", str) or "")

    @staticmethod
    def _fees(dispute: dict[str, Any]) -> tuple[Decimal, Decimal]:
        """(fee charged when the funds were withdrawn, fee returned when reinstated)."""
        withdrawn = returned = Decimal(0)
        for bt in objects(dispute, "balance_transactions"):
            amount = from_cents(bt.get("amount", 0), signed=True)
            fee = from_cents(bt.get("fee", 0), signed=True)
            if amount < 0:
                withdrawn += fee
            elif fee < 0:
                returned -= fee
        return withdrawn, returned

    def on_dispute_funds_withdrawn(self, event: dict[str, Any]) -> None:
        dispute = event["data"]["object"]
        dispute_id = ident(dispute, "id", required=True)
        gross = from_cents(dispute.get("amount"))
        fee, _ = self._fees(dispute)
        payments.chargeback(
            self._dispute_payment(dispute), dispute=dispute_id, gross=gross, fee=fee
        )

    def on_dispute_funds_reinstated(self, event: dict[str, Any]) -> None:
        dispute = event["data"]["object"]
        dispute_id = ident(dispute, "id", required=True)
        gross = from_cents(dispute.get("amount"))
        fee, returned = self._fees(dispute)
        payment = self._dispute_payment(dispute)
        # If the withdrawal's own event is late, apply it first (the dispute lists both).
        payments.chargeback(payment, dispute=dispute_id, gross=gross, fee=fee)
        payments.reinstate(payment, dispute=dispute_id, fee_returned=returned)
