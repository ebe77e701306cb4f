"""Crypto through a BTCPay Server (self-hosted, open source), Greenfield API.

A webhook only says that something happened to an invoice; what happened is read back from
the invoice itself (``GET /api/v1/stores/{store}/invoices/{id}``), so the amount credited is
the invoice's and the status is BTCPay's own. An invoice that expired partly paid, or was paid
after it expired, credits nothing automatically: it is flagged for an operator and shown to
the customer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import quote

from django.conf import settings
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
    origin,
    parse_json,
)

log = logging.getLogger(__name__)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


class BTCPay(PaymentProvider):
    identifier = "btcpay"
    verbose_name = _("Crypto")
    description = _("Bitcoin and Lightning, through our BTCPay Server")
    handlers = {
        "InvoiceReceivedPayment": "on_invoice",
        "InvoiceProcessing": "on_invoice",
        "InvoiceSettled": "on_invoice",
        "InvoiceExpired": "on_invoice",
        "InvoiceInvalid": "on_invoice",
        "InvoicePaymentSettled": "on_invoice",
    }

    @property
    def is_enabled(self) -> bool:
        return bool(
            settings.BTCPAY_URL
            and settings.BTCPAY_API_KEY
            and settings.BTCPAY_STORE_ID
            and settings.BTCPAY_WEBHOOK_SECRET
        )

    @property
    def is_simulated(self) -> bool:
        return is_loopback(settings.BTCPAY_URL)

    def checkout_origins(self) -> list[str]:
        return [origin(settings.BTCPAY_URL)]

    def api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        store = quote(settings.BTCPAY_STORE_ID, safe="")
        response = self.request(
            method,
            f"{settings.BTCPAY_URL}/api/v1/stores/{store}{path}",
            data=json.dumps(body) if body is not None else None,
            headers={
                "Authorization": f"token {settings.BTCPAY_API_KEY}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            data = response.json()
        except ValueError:
            raise ProviderError(f"btcpay: non-JSON answer to {method} {path}") from None
        if response.status_code >= 400:
            code = data.get("code", "") if isinstance(data, dict) else ""
            raise ProviderError(
                f"btcpay: {method} {path} → {response.status_code} {code}",
                retry=False,
                code=str(code),
            )
        if not isinstance(data, dict):
            raise Malformed(f"btcpay: an answer to {method} {path} that is not an object")
        return data

    def start(self, payment: Payment, *, return_url: str, cancel_url: str, email: str) -> None:
        invoice = self.api(
            "POST",
            "/invoices",
            {
                "amount": str(payment.total),
                "currency": "USD",
                "metadata": {
                    "orderId": payment.receipt_number,
                    "tpPayment": str(payment.uuid),
                    "buyerEmail": email,
                    "itemDesc": gettext("TokenPapa credit $%(amount)s")
                    % {"amount": payment.amount},
                },
                "checkout": {
                    "redirectURL": return_url,
                    "redirectAutomatically": True,
                    "expirationMinutes": 60,
                },
            },
        )
        payment.checkout_id = ident(invoice, "id", required=True)
        payment.checkout_url = field(invoice, "checkoutLink", str, required=True)

    def sync(self, payment: Payment) -> None:
        if payment.checkout_id:
            invoice = self.api("GET", f"/invoices/{quote(payment.checkout_id, safe='')}")
            self._apply_invoice(payment, invoice)

    def cancel(self, payment: Payment) -> None:
        # An invoice cannot be un-sent: coins may still arrive. Ask BTCPay instead.
        self.sync(payment)

    def _apply_invoice(self, payment: Payment, invoice: dict[str, Any]) -> None:
        if invoice.get("id") != payment.checkout_id:
            raise ProviderError("btcpay: answered about another invoice", retry=False)
        status = invoice.get("status")
        extra = invoice.get("additionalStatus") or "None"
        if status == "Settled":
            payments.confirm(
                payment,
                provider_payment_id=payment.checkout_id,  # the invoice's id, checked above
                amount_received=decimal_amount(invoice.get("amount")),
                currency=field(invoice, "currency", str, required=True),
                detail=gettext("Paid more than asked; the difference was not credited.")
                if extra == "PaidOver"
                else "",
            )
        elif status == "Processing":
            payments.mark(payment, "pending", gettext("Payment seen; waiting for confirmations."))
        elif status == "New" and extra == "PaidPartial":
            payments.mark(payment, "pending", gettext("Partly paid; waiting for the rest."))
        elif status == "Expired" and extra == "PaidPartial":
            payments.flag(payment, "invoice expired partly paid")
        elif status == "Expired" and extra == "PaidLate":
            payments.flag(payment, "invoice paid after it expired")
        elif status == "Expired":
            payments.mark(payment, "expired", gettext("The invoice expired unpaid."))
        elif status == "Invalid":
            if extra in {"PaidPartial", "PaidLate", "PaidOver", "Marked"}:
                payments.flag(payment, f"invoice invalid ({extra})")
            else:
                payments.mark(payment, "failed", gettext("The payment did not confirm in time."))

    def verify_webhook(self, request: HttpRequest) -> dict[str, Any]:
        secret = settings.BTCPAY_WEBHOOK_SECRET
        if not secret:
            raise InvalidWebhook("BTCPay webhooks are not configured")
        scheme, _, signature = header(request, "BTCPay-Sig").partition("=")
        if scheme != "sha256" or not signature:
            raise InvalidWebhook("no BTCPay-Sig header")
        expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
        # header() let only ASCII through: compare_digest raises on anything else.
        if not hmac.compare_digest(expected, signature.strip().lower()):
            raise InvalidWebhook("bad BTCPay-Sig")
        event = parse_json(request.body)
        if not (
            isinstance(event, dict)
            and _is_id(event.get("deliveryId"))
            and (
                event.get("originalDeliveryId") in (None, "") or _is_id(event["originalDeliveryId"])
            )
            and isinstance(event.get("type"), str)
            and 0 < len(event["type"]) <= 100
        ):
            raise InvalidWebhook("not a BTCPay event")
        return event

    def event_identity(self, event: dict[str, Any]) -> tuple[str, str]:
        # A redelivery carries the original delivery's id: one event, however often sent.
        return str(event.get("originalDeliveryId") or event["deliveryId"]), event["type"]

    def on_invoice(self, event: dict[str, Any]) -> None:
        if event.get("storeId") != settings.BTCPAY_STORE_ID:
            raise Ignore("another store's invoice")
        invoice_id = ident(event, "invoiceId")
        payment = payments.find(self.identifier, checkout_id=invoice_id) if invoice_id else None
        if payment is None:
            raise Ignore("no payment of ours for this invoice")
        self.sync(payment)
