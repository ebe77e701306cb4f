"""PayPal through the Orders v2 API: create an order with intent CAPTURE, send the customer to
PayPal to approve it, capture it when they come back (or when PayPal says it was approved).

Webhooks are verified by PayPal's own ``verify-webhook-signature`` call with the raw body
spliced in unchanged (a re-serialised body fails), after the headers, the transmission time
and the certificate host were checked here without any outbound call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import payments
from ..models import Payment
from .base import (
    MAX_ID_LENGTH,
    Ignore,
    InvalidWebhook,
    Malformed,
    PaymentProvider,
    ProviderError,
    decimal_amount,
    field,
    header,
    ident,
    is_loopback,
    objects,
    origin,
    parse_json,
)

log = logging.getLogger(__name__)

#: What PayPal's object ids look like: nothing else goes into an API path.
_OBJECT_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

HEADERS = {
    "auth_algo": "PayPal-Auth-Algo",
    "cert_url": "PayPal-Cert-Url",
    "transmission_id": "PayPal-Transmission-Id",
    "transmission_sig": "PayPal-Transmission-Sig",
    "transmission_time": "PayPal-Transmission-Time",
}


def _money(obj: dict[str, Any], key: str) -> tuple[Decimal, str]:
    """PayPal's ``{"value": "10.59", "currency_code": "USD"}``."""
    money = field(obj, key, dict, required=True)
    amount = decimal_amount(money.get("value"))
    return amount, str(field(money, "currency_code", str, required=True))


def _related_ids(capture: dict[str, Any]) -> dict[str, Any]:
    return field(field(capture, "supplementary_data", dict) or {}, "related_ids", dict) or {}


class PayPal(PaymentProvider):
    identifier = "paypal"
    verbose_name = _("PayPal")
    description = _("Your PayPal balance, bank or card, through PayPal")
    handlers = {
        "CHECKOUT.ORDER.APPROVED": "on_order_approved",
        "PAYMENT.CAPTURE.COMPLETED": "on_capture",
        "PAYMENT.CAPTURE.PENDING": "on_capture",
        "PAYMENT.CAPTURE.DENIED": "on_capture",
        "PAYMENT.CAPTURE.DECLINED": "on_capture",
        "PAYMENT.CAPTURE.REFUNDED": "on_refunded",
        "PAYMENT.CAPTURE.REVERSED": "on_reversed",
    }

    @property
    def is_enabled(self) -> bool:
        return bool(
            settings.PAYPAL_CLIENT_ID
            and settings.PAYPAL_CLIENT_SECRET
            and settings.PAYPAL_WEBHOOK_ID
        )

    @property
    def is_simulated(self) -> bool:
        return is_loopback(settings.PAYPAL_API_BASE)

    def checkout_origins(self) -> list[str]:
        if self.is_simulated:
            return [origin(settings.PAYPAL_API_BASE)]
        if "sandbox" in settings.PAYPAL_API_BASE:
            return ["https://www.sandbox.paypal.com"]
        return ["https://www.paypal.com"]

    # -- API --------------------------------------------------------------------------------

    def _token_key(self) -> str:
        ident = f"{settings.PAYPAL_API_BASE}|{settings.PAYPAL_CLIENT_ID}"
        return "paypal-token:" + hashlib.sha256(ident.encode()).hexdigest()[:32]

    def token(self, *, fresh: bool = False) -> str:
        key = self._token_key()
        token = None if fresh else cache.get(key)
        if token:
            return str(token)
        response = self.request(
            "POST",
            f"{settings.PAYPAL_API_BASE}/v1/oauth2/token",
            auth=(settings.PAYPAL_CLIENT_ID, settings.PAYPAL_CLIENT_SECRET),
            data={"grant_type": "client_credentials"},
            headers={"Accept": "application/json"},
        )
        if response.status_code != 200:
            raise ProviderError(f"paypal: token refused ({response.status_code})", retry=False)
        data = response.json()
        token = str(data["access_token"])
        cache.set(key, token, max(60, int(data.get("expires_in", 3600)) - 120))
        return token

    def api(
        self, method: str, path: str, *, body: Any = None, raw: str | None = None, **headers: str
    ) -> tuple[int, dict[str, Any]]:
        url = f"{settings.PAYPAL_API_BASE}{path}"
        for attempt in (0, 1):
            response = self.request(
                method,
                url,
                data=(raw if raw is not None else json.dumps(body)) if method != "GET" else None,
                headers={
                    "Authorization": f"Bearer {self.token(fresh=attempt == 1)}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    **headers,
                },
            )
            if response.status_code != 401:
                break
        try:
            data = response.json() if response.content else {}
        except ValueError:
            raise ProviderError(f"paypal: non-JSON answer to {method} {path}") from None
        if not isinstance(data, dict):
            raise Malformed(f"paypal: an answer to {method} {path} that is not an object")
        if response.status_code >= 400:
            details = objects(data, "details") or [{}]
            issue = field(details[0], "issue", str) or field(data, "name", str) or ""
            raise ProviderError(
                f"paypal: {method} {path} → {response.status_code} {issue}",
                retry=False,
                code=str(issue),
            )
        return response.status_code, data

    # -- the customer's side ----------------------------------------------------------------

    def start(self, payment: Payment, *, return_url: str, cancel_url: str, email: str) -> None:
        _, order = self.api(
            "POST",
            "/v2/checkout/orders",
            body={
                "intent": "CAPTURE",
                "purchase_units": [
                    {
                        "reference_id": str(payment.uuid),
                        "custom_id": str(payment.uuid),
                        "invoice_id": payment.receipt_number,
                        "description": gettext("TokenPapa credit $%(amount)s")
                        % {"amount": payment.amount},
                        "amount": {"currency_code": "USD", "value": str(payment.total)},
                    }
                ],
                "payment_source": {
                    "paypal": {
                        "experience_context": {
                            "brand_name": settings.TP_COMPANY_NAME[:127],
                            "shipping_preference": "NO_SHIPPING",
                            "user_action": "PAY_NOW",
                            "return_url": return_url,
                            "cancel_url": cancel_url,
                        }
                    }
                },
            },
            **{"PayPal-Request-Id": f"tp-order-{payment.uuid}", "Prefer": "return=minimal"},
        )
        links = {link.get("rel"): link.get("href") for link in objects(order, "links")}
        url = links.get("payer-action") or links.get("approve")
        if not isinstance(url, str):
            raise ProviderError("paypal: the order has no approval link", retry=False)
        payment.checkout_id = ident(order, "id", required=True)
        payment.checkout_url = url

    def on_return(self, payment: Payment, params: dict[str, str]) -> None:
        # PayPal adds ?token=<order id>&PayerID=...; we capture our own order whatever it says.
        self.capture(payment)

    def capture(self, payment: Payment) -> None:
        if payment.status == "confirmed" or not payment.checkout_id:
            return
        try:
            _, order = self.api(
                "POST",
                f"/v2/checkout/orders/{payment.checkout_id}/capture",
                body={},
                **{
                    "PayPal-Request-Id": f"tp-capture-{payment.uuid}",
                    "Prefer": "return=representation",
                },
            )
        except ProviderError as exc:
            if exc.code in {"ORDER_ALREADY_CAPTURED", "ORDER_NOT_APPROVED"}:
                self.sync(payment)
                return
            if exc.code in {"INSTRUMENT_DECLINED", "PAYER_ACTION_REQUIRED"}:
                payments.mark(payment, "failed", gettext("PayPal declined the payment."))
                return
            raise
        self._apply_order(payment, order)

    def sync(self, payment: Payment) -> None:
        if not payment.checkout_id:
            return
        _, order = self.api("GET", f"/v2/checkout/orders/{payment.checkout_id}")
        status = order.get("status")
        if status == "APPROVED":
            self.capture(payment)
        elif status == "COMPLETED":
            self._apply_order(payment, order)
        elif status == "VOIDED":
            payments.mark(payment, "canceled", gettext("The PayPal order was voided."))

    def _apply_order(self, payment: Payment, order: dict[str, Any]) -> None:
        for unit in objects(order, "purchase_units"):
            for capture in objects(field(unit, "payments", dict) or {}, "captures"):
                self._apply_capture(payment, capture)
                return

    def _apply_capture(self, payment: Payment, capture: dict[str, Any]) -> None:
        status = capture.get("status")
        if status in {"COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"}:
            # A refunded capture was completed first: credit it, the refund follows.
            amount, currency = _money(capture, "amount")
            payments.confirm(
                payment,
                provider_payment_id=ident(capture, "id", required=True),
                amount_received=amount,
                currency=currency,
            )
        elif status == "PENDING":
            reason = field(field(capture, "status_details", dict) or {}, "reason", str)
            payments.mark(
                payment,
                "pending",
                gettext("PayPal is holding the payment (%(reason)s).")
                % {"reason": reason or "pending"},
            )
        elif status in {"DECLINED", "DENIED", "FAILED"}:
            payments.mark(payment, "failed", gettext("PayPal declined the payment."))

    # -- webhooks ---------------------------------------------------------------------------

    def _allowed_cert_url(self, url: str) -> bool:
        """PayPal names in a header where its signing certificate is; PayPal itself reads it
        during ``verify-webhook-signature``, we never fetch it. Still only https on PayPal's
        own host (the simulator's own origin in development) goes any further, so a forged
        header cannot point anything elsewhere."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a bad port or a broken IPv6 literal
            return False
        host = (parts.hostname or "").lower()
        if parts.username is not None or parts.query or parts.fragment or not parts.path:
            return False
        if self.is_simulated:
            base = urlsplit(settings.PAYPAL_API_BASE)
            return (parts.scheme, host, port) == (base.scheme, base.hostname, base.port)
        return (
            parts.scheme == "https"
            and port in (None, 443)
            and (host == "paypal.com" or host.endswith(".paypal.com"))
        )

    def verify_webhook(self, request: HttpRequest) -> dict[str, Any]:
        if not settings.PAYPAL_WEBHOOK_ID:
            raise InvalidWebhook("PayPal webhooks are not configured")
        fields = {name: header(request, name_) for name, name_ in HEADERS.items()}
        missing = [HEADERS[k] for k, v in fields.items() if not v]
        if missing:
            raise InvalidWebhook(f"missing {', '.join(missing)}")
        try:
            sent = datetime.fromisoformat(fields["transmission_time"].replace("Z", "+00:00"))
            if sent.tzinfo is None:
                sent = sent.replace(tzinfo=UTC)
            age = abs((datetime.now(UTC) - sent).total_seconds())
        except (ValueError, OverflowError):
            raise InvalidWebhook("bad PayPal-Transmission-Time") from None
        if age > settings.TP_WEBHOOK_TOLERANCE_SECONDS:
            raise InvalidWebhook("stale PayPal-Transmission-Time")
        if not self._allowed_cert_url(fields["cert_url"]):
            raise InvalidWebhook("certificate URL outside PayPal")
        event = parse_json(request.body)
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and 0 < len(event["id"]) <= MAX_ID_LENGTH
            and isinstance(event.get("event_type"), str)
            and 0 < len(event["event_type"]) <= 100
            and isinstance(event.get("resource"), dict)
        ):
            raise InvalidWebhook("not a PayPal event")
        # The raw body goes in unchanged: PayPal checks the signature over the bytes it sent.
        raw = request.body.decode("utf-8")
        head = json.dumps({**fields, "webhook_id": settings.PAYPAL_WEBHOOK_ID})
        _, answer = self.api(
            "POST",
            "/v1/notifications/verify-webhook-signature",
            raw=head[:-1] + ', "webhook_event": ' + raw + "}",
        )
        if answer.get("verification_status") != "SUCCESS":
            raise InvalidWebhook("PayPal did not verify the signature")
        return event

    def event_identity(self, event: dict[str, Any]) -> tuple[str, str]:
        return event["id"], event["event_type"]

    def _payment(
        self, *, order_id: str | None = None, capture_id: str | None = None, uuid: str | None = None
    ) -> Payment:
        payment = payments.find(
            self.identifier, checkout_id=order_id, provider_payment_id=capture_id, uuid=uuid
        )
        if payment is None:
            raise Ignore("no payment of ours for this PayPal object")
        return payment

    def on_order_approved(self, event: dict[str, Any]) -> None:
        order = event["resource"]
        units = objects(order, "purchase_units") or [{}]
        payment = self._payment(order_id=ident(order, "id"), uuid=field(units[0], "custom_id", str))
        # The customer approved but may never come back: capture now (idempotent).
        self.capture(payment)

    def on_capture(self, event: dict[str, Any]) -> None:
        capture = event["resource"]
        related = _related_ids(capture)
        payment = self._payment(
            order_id=ident(related, "order_id"),
            capture_id=ident(capture, "id"),
            uuid=field(capture, "custom_id", str),
        )
        self._apply_capture(payment, capture)

    def _confirmed_payment_of_capture(self, refund: dict[str, Any]) -> Payment:
        """The payment a refund or reversal is about, credited first if the capture's own
        event has not arrived yet (events out of order)."""
        capture_id = None
        for link in objects(refund, "links"):
            href = field(link, "href", str) or ""
            if link.get("rel") == "up" and "/captures/" in href:
                capture_id = href.rstrip("/").rsplit("/", 1)[-1]
        if not capture_id or not _OBJECT_ID.fullmatch(capture_id):
            raise Ignore("a refund that names no capture")

        payment = payments.find(self.identifier, provider_payment_id=capture_id)
        if payment is not None and payment.status == "confirmed":
            return payment
        try:
            _, capture = self.api("GET", f"/v2/payments/captures/{capture_id}")
        except ProviderError as exc:
            if exc.code in {"INVALID_RESOURCE_ID", "RESOURCE_NOT_FOUND"}:  # not our account's
                raise Ignore(f"PayPal knows no capture {capture_id}") from None
            raise
        related = _related_ids(capture)
        payment = payment or self._payment(
            order_id=ident(related, "order_id"),
            capture_id=capture_id,
            uuid=field(capture, "custom_id", str),
        )
        self._apply_capture(payment, capture)
        payment.refresh_from_db()
        return payment

    def on_refunded(self, event: dict[str, Any]) -> None:
        refund = event["resource"]
        if refund.get("status", "COMPLETED") != "COMPLETED":
            raise Ignore(f"refund {str(refund.get('status'))[:40]}")
        refund_id = ident(refund, "id", required=True)
        amount, _ = _money(refund, "amount")
        payments.refund(
            self._confirmed_payment_of_capture(refund), gross=abs(amount), reference=refund_id
        )

    def on_reversed(self, event: dict[str, Any]) -> None:
        reversal = event["resource"]
        reversal_id = ident(reversal, "id", required=True)
        amount, _ = _money(reversal, "amount")
        payments.chargeback(
            self._confirmed_payment_of_capture(reversal), dispute=reversal_id, gross=abs(amount)
        )
