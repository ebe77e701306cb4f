"""BTCPay Server's Greenfield API, as far as the portal uses it (``BTCPAY_URL=<this>/btcpay``).

``POST /api/v1/stores/{store}/invoices``, ``GET /api/v1/stores/{store}/invoices/{id}``; webhooks
signed ``BTCPay-Sig: sha256=<hex HMAC-SHA256(secret, body)>``. Checkout page:
``/btcpay/i/{invoice}`` with Pay / Partial / Expire.

Operator action: ``POST /btcpay/_sim/invoices/{id}/pay-late``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from . import ids
from .common import JSON, Config, Delivery, Outbox, now, page


def _btc(usd: Decimal) -> str:
    return f"{(usd / Decimal('65000')).quantize(Decimal('0.00000001'))}"


class BTCPay:
    """BTCPay Server's invoices and their handlers."""

    def __init__(self, config: Config, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.invoices: dict[str, JSON] = {}

    def event(self, type_: str, invoice: JSON, **extra: Any) -> Delivery:
        delivery_id = ids.token("", 22)
        event = {
            "deliveryId": delivery_id,
            "webhookId": "SimWebhook1",
            "originalDeliveryId": delivery_id,
            "isRedelivery": False,
            "type": type_,
            "timestamp": now(),
            "storeId": invoice["storeId"],
            "invoiceId": invoice["id"],
            "metadata": invoice.get("metadata", {}),
            **extra,
        }
        body = json.dumps(event)
        signature = hmac.new(
            self.config.btcpay_webhook_secret.encode(), body.encode(), hashlib.sha256
        ).hexdigest()
        return self.outbox.emit("btcpay", type_, body, {"BTCPay-Sig": f"sha256={signature}"})

    def api(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            if not hmac.compare_digest(
                request.headers.get("Authorization", ""), f"token {self.config.btcpay_api_key}"
            ):
                return web.json_response(
                    {"code": "unauthenticated", "message": "Authentication is required"}, status=401
                )
            if request.match_info["store"] != self.config.btcpay_store_id:
                return web.json_response(
                    {"code": "store-not-found", "message": "The store was not found"}, status=404
                )
            return await handler(request)

        return route

    async def create_invoice(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            amount = Decimal(str(data["amount"]))
        except (ValueError, KeyError, ArithmeticError):
            return web.json_response([{"path": "amount", "message": "Invalid amount"}], status=422)
        invoice_id = ids.token("", 22)
        created = time.time()
        checkout = data.get("checkout") or {}
        invoice = {
            "id": invoice_id,
            "storeId": self.config.btcpay_store_id,
            "amount": f"{amount:.2f}",
            "currency": data.get("currency", "USD"),
            "type": "Standard",
            "checkoutLink": f"{self.config.public_base}/btcpay/i/{invoice_id}",
            "createdTime": int(created),
            "expirationTime": int(created + 60 * int(checkout.get("expirationMinutes", 15))),
            "monitoringExpiration": int(created + 3600 * 24),
            "status": "New",
            "additionalStatus": "None",
            "archived": False,
            "metadata": data.get("metadata") or {},
            "checkout": {
                "redirectURL": checkout.get("redirectURL"),
                "redirectAutomatically": bool(checkout.get("redirectAutomatically")),
                "speedPolicy": "MediumSpeed",
                "expirationMinutes": int(checkout.get("expirationMinutes", 15)),
            },
            "availableStatusesForManualMarking": ["Settled", "Invalid"],
        }
        self.invoices[invoice_id] = invoice
        return web.json_response(invoice)

    async def get_invoice(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            return web.json_response(
                {"code": "invoice-not-found", "message": "The invoice was not found"}, status=404
            )
        return web.json_response({k: v for k, v in invoice.items() if not k.startswith("_")})

    # -- the checkout page ----------------------------------------------------------------------

    async def checkout_page(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise web.HTTPNotFound()
        amount = Decimal(invoice["amount"])
        if invoice["status"] != "New":
            return page("BTCPay", f"<h1>Invoice {html.escape(invoice['status'])}</h1>")
        body = f"""<h1>Pay with Bitcoin</h1>
<p class="note">{html.escape(str(invoice["metadata"].get("itemDesc", "")))}</p>
<div class="amount" data-testid="amount">${invoice["amount"]}</div>
<p class="note">{_btc(amount)} BTC to bc1qsimulator0000000000000000000000000000</p>
<form method="post">
<button class="primary" name="action" value="pay">Pay</button>
<button name="action" value="partial">Partial (pay half, then let it expire)</button>
<button name="action" value="expire">Let it expire unpaid</button></form>"""
        return page("BTCPay Server (simulator)", body)

    async def checkout(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise web.HTTPNotFound()
        action = (await request.post()).get("action")
        amount = Decimal(invoice["amount"])
        if invoice["status"] == "New":
            payment = {
                "id": ids.token("", 64).lower(),
                "receivedDate": now(),
                "value": _btc(amount if action == "pay" else amount / 2),
                "fee": "0.0",
                "status": "Settled",
                "destination": "bc1qsimulator",
            }
            if action == "pay":
                invoice.update(status="Processing")
                self.event(
                    "InvoiceReceivedPayment",
                    invoice,
                    afterExpiration=False,
                    paymentMethod="BTC-CHAIN",
                    payment=payment,
                )
                self.event("InvoiceProcessing", invoice, overPaid=False)
                invoice.update(status="Settled")
                self.event(
                    "InvoicePaymentSettled",
                    invoice,
                    afterExpiration=False,
                    paymentMethod="BTC-CHAIN",
                    payment=payment,
                )
                self.event("InvoiceSettled", invoice, manuallyMarked=False, overPaid=False)
            elif action == "partial":
                invoice.update(additionalStatus="PaidPartial")
                self.event(
                    "InvoiceReceivedPayment",
                    invoice,
                    afterExpiration=False,
                    paymentMethod="BTC-CHAIN",
                    payment=payment,
                )
                invoice.update(status="Expired")
                self.event(
                    "InvoiceExpired",
                    invoice,
                    partiallyPaid=True,
                    paymentMethodPaid=payment["value"],
                )
            else:
                invoice.update(status="Expired")
                self.event("InvoiceExpired", invoice, partiallyPaid=False)
        target = invoice["checkout"].get("redirectURL")
        raise web.HTTPSeeOther(target or f"/btcpay/i/{invoice['id']}")

    # -- what the chain does --------------------------------------------------------------------

    async def pay_late(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise web.HTTPNotFound()
        invoice.update(status="Expired", additionalStatus="PaidLate")
        self.event(
            "InvoiceReceivedPayment", invoice, afterExpiration=True, paymentMethod="BTC-CHAIN"
        )
        return web.json_response(invoice)

    def routes(self) -> list[web.RouteDef]:
        api = self.api
        return [
            web.post("/btcpay/api/v1/stores/{store}/invoices", api(self.create_invoice)),
            web.get("/btcpay/api/v1/stores/{store}/invoices/{id}", api(self.get_invoice)),
            web.get("/btcpay/i/{id}", self.checkout_page),
            web.post("/btcpay/i/{id}", self.checkout),
            web.post("/btcpay/_sim/invoices/{id}/pay-late", self.pay_late),
        ]
