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
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .base import Ignore, InvalidWebhook, PaymentProvider, ProviderError, is_loopback, origin

if TYPE_CHECKING:
    from billing.models import Payment

log = logging.getLogger(__name__)

HEADERS = {
    "auth_algo": "PayPal-Auth-Algo",
    "cert_url": "PayPal-Cert-Url",
    "transmission_id": "PayPal-Transmission-Id",
    "transmission_sig": "PayPal-Transmission-Sig",
    "transmission_time": "PayPal-Transmission-Time",
}


def _money(value: dict[str, Any] | None) -> tuple[Decimal, str]:
    try:
        return Decimal(str((value or {})["value"])), str(value["currency_code"])  # type: ignore[index]
    except (KeyError, TypeError, InvalidOperation):
        raise ProviderError("paypal: an amount without value or currency", retry=False) from None


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
        if response.status_code >= 400:
            issue = ((data.get("details") or [{}])[0] or {}).get("issue") or data.get("name", "")
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
        links = {link.get("rel"): link.get("href") for link in order.get("links", [])}
        url = links.get("payer-action") or links.get("approve")
        if not url:
            raise ProviderError("paypal: the order has no approval link", retry=False)
        payment.checkout_id = order["id"]
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
                from billing import payments

                payments.mark(payment, "failed", gettext("PayPal declined the payment."))
                return
            raise
        self._apply_order(payment, order)

    def sync(self, payment: Payment) -> None:
        from billing import payments

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
        for unit in order.get("purchase_units") or []:
            for capture in (unit.get("payments") or {}).get("captures") or []:
                self._apply_capture(payment, capture)
                return

    def _apply_capture(self, payment: Payment, capture: dict[str, Any]) -> None:
        from billing import payments

        status = capture.get("status")
        if status in {"COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"}:
            # A refunded capture was completed first: credit it, the refund follows.
            amount, currency = _money(capture.get("amount"))
            payments.confirm(
                payment,
                provider_payment_id=capture["id"],
                amount_received=amount,
                currency=currency,
            )
        elif status == "PENDING":
            reason = (capture.get("status_details") or {}).get("reason", "")
            payments.mark(
                payment,
                "pending",
                gettext("PayPal is holding the payment (%(reason)s).")
                % {"reason": reason or "pending"},
            )
        elif status in {"DECLINED", "DENIED", "FAILED"}:
            payments.mark(payment, "failed", gettext("PayPal declined the payment."))

    # -- webhooks ---------------------------------------------------------------------------

    def _allowed_cert_host(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self.is_simulated:
            return host == (urlsplit(settings.PAYPAL_API_BASE).hostname or "").lower()
        return parts.scheme == "https" and (host == "paypal.com" or host.endswith(".paypal.com"))

    def verify_webhook(self, request: HttpRequest) -> dict[str, Any]:
        if not settings.PAYPAL_WEBHOOK_ID:
            raise InvalidWebhook("PayPal webhooks are not configured")
        fields = {name: request.headers.get(header, "") for name, header in HEADERS.items()}
        missing = [HEADERS[k] for k, v in fields.items() if not v]
        if missing:
            raise InvalidWebhook(f"missing {', '.join(missing)}")
        try:
            sent = datetime.fromisoformat(fields["transmission_time"].replace("Z", "+00:00"))
            if sent.tzinfo is None:
                sent = sent.replace(tzinfo=UTC)
        except ValueError:
            raise InvalidWebhook("bad PayPal-Transmission-Time") from None
        age = abs((datetime.now(UTC) - sent).total_seconds())
        if age > settings.TP_WEBHOOK_TOLERANCE_SECONDS:
            raise InvalidWebhook("stale PayPal-Transmission-Time")
        if not self._allowed_cert_host(fields["cert_url"]):
            raise InvalidWebhook("certificate URL outside PayPal")
        try:
            raw = request.body.decode("utf-8")
            event = json.loads(raw)
        except ValueError:
            raise InvalidWebhook("the body is not JSON") from None
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and isinstance(event.get("event_type"), str)
            and isinstance(event.get("resource"), dict)
        ):
            raise InvalidWebhook("not a PayPal event")
        # The raw body goes in unchanged: PayPal checks the signature over the bytes it sent.
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
        from billing import payments

        payment = payments.find(
            self.identifier, checkout_id=order_id, provider_payment_id=capture_id, uuid=uuid
        )
        if payment is None:
            raise Ignore("no payment of ours for this PayPal object")
        return payment

    def on_order_approved(self, event: dict[str, Any]) -> None:
        order = event["resource"]
        units = order.get("purchase_units") or [{}]
        payment = self._payment(order_id=order.get("id"), uuid=units[0].get("custom_id"))
        # The customer approved but may never come back: capture now (idempotent).
        self.capture(payment)

    def on_capture(self, event: dict[str, Any]) -> None:
        capture = event["resource"]
        related = (capture.get("supplementary_data") or {}).get("related_ids") or {}
        payment = self._payment(
            order_id=related.get("order_id"),
            capture_id=capture.get("id"),
            uuid=capture.get("custom_id"),
        )
        self._apply_capture(payment, capture)

    def _confirmed_payment_of_capture(self, refund: dict[str, Any]) -> Payment:
        """The payment a refund or reversal is about, credited first if the capture's own
        event has not arrived yet (events out of order)."""
        capture_id = None
        for link in refund.get("links") or []:
            if link.get("rel") == "up" and "/captures/" in str(link.get("href")):
                capture_id = str(link["href"]).rstrip("/").rsplit("/", 1)[-1]
        if not capture_id:
            raise Ignore("a refund that names no capture")
        from billing import payments

        payment = payments.find(self.identifier, provider_payment_id=capture_id)
        if payment is not None and payment.status == "confirmed":
            return payment
        _, capture = self.api("GET", f"/v2/payments/captures/{capture_id}")
        related = (capture.get("supplementary_data") or {}).get("related_ids") or {}
        payment = payment or self._payment(
            order_id=related.get("order_id"), capture_id=capture_id, uuid=capture.get("custom_id")
        )
        self._apply_capture(payment, capture)
        payment.refresh_from_db()
        return payment

    def on_refunded(self, event: dict[str, Any]) -> None:
        from billing import payments

        refund = event["resource"]
        if refund.get("status", "COMPLETED") != "COMPLETED":
            raise Ignore(f"refund {refund.get('status')}")
        amount, _ = _money(refund.get("amount"))
        payments.refund(
            self._confirmed_payment_of_capture(refund), gross=abs(amount), reference=refund["id"]
        )

    def on_reversed(self, event: dict[str, Any]) -> None:
        from billing import payments

        reversal = event["resource"]
        amount, _ = _money(reversal.get("amount"))
        payments.chargeback(
            self._confirmed_payment_of_capture(reversal), dispute=reversal["id"], gross=abs(amount)
        )
