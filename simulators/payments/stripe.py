"""Stripe, as far as the portal uses it (point the official SDK's ``api_base`` here:
``STRIPE_API_BASE=<this>/stripe``).

``POST/GET /v1/checkout/sessions``, ``GET|POST /v1/payment_intents`` (off-session, confirmed at
once), ``GET /v1/charges/{id}``, ``POST|GET /v1/customers``, ``GET /v1/payment_methods/{id}``.
Form-encoded bodies as the SDK sends them, ``Idempotency-Key`` honoured. Webhooks carry
``Stripe-Signature: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<body>")``. Pay page:
``/stripe/pay/{session}``.

Operator actions, as the dashboard would take them: ``POST /stripe/_sim/refund``
``{payment_intent, amount?}``, ``POST /stripe/_sim/dispute`` ``{payment_intent, amount?, fee?}``,
``POST /stripe/_sim/disputes/{id}/close`` ``{outcome}``, ``POST /stripe/_sim/customers/{id}/
decline`` ``{decline}``, ``POST /stripe/_sim/sessions/{id}/async`` ``{outcome}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from . import ids
from .common import JSON, Config, Delivery, Outbox, now, page


def _cents_str(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def parse_form(pairs: list[tuple[str, str]]) -> JSON:
    """Stripe's form encoding (``a[b][0][c]=v``) back to nested data."""
    root: JSON = {}
    for key, value in pairs:
        names = re.findall(r"[^\[\]]+", key)
        if not names:
            continue
        node: Any = root
        for name, following in itertools.zip_longest(names, names[1:]):
            last = following is None
            if isinstance(node, list):
                index = int(name)
                while len(node) <= index:
                    node.append(None)
                if last:
                    node[index] = value
                else:
                    if node[index] is None:
                        node[index] = [] if following.isdigit() else {}
                    node = node[index]
            else:
                if last:
                    node[name] = value
                else:
                    node = node.setdefault(name, [] if following.isdigit() else {})
    return root


class Stripe:
    """Stripe's objects (sessions, intents, charges, customers, cards, disputes) and handlers."""

    def __init__(self, config: Config, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.sessions: dict[str, JSON] = {}
        self.session_extra: dict[str, JSON] = {}
        self.intents: dict[str, JSON] = {}
        self.charges: dict[str, JSON] = {}
        self.customers: dict[str, JSON] = {}
        self.methods: dict[str, JSON] = {}
        self.disputes: dict[str, JSON] = {}
        self.declining: set[str] = set()
        self.idempotency: dict[str, tuple[int, JSON]] = {}

    def event(self, type_: str, obj: JSON) -> Delivery:
        event = {
            "id": ids.token("evt_"),
            "object": "event",
            "api_version": "2025-06-30.basil",
            "created": now(),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        body = json.dumps(event, indent=2)
        stamp = now()
        signature = hmac.new(
            self.config.stripe_webhook_secret.encode(),
            f"{stamp}.{body}".encode(),
            hashlib.sha256,
        ).hexdigest()
        return self.outbox.emit(
            "stripe", type_, body, {"Stripe-Signature": f"t={stamp},v1={signature}"}
        )

    @staticmethod
    def error(
        status: int, message: str, type_: str = "invalid_request_error", **extra: Any
    ) -> web.Response:
        return web.json_response(
            {"error": {"type": type_, "message": message, **extra}}, status=status
        )

    async def params(self, request: web.Request) -> JSON:
        pairs = list(request.query.items())
        if request.method == "POST":
            pairs += parse_qsl(await request.text(), keep_blank_values=True)
        return parse_form(pairs)

    def api(
        self, handler: Callable[[web.Request, JSON], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            if not hmac.compare_digest(auth, f"Bearer {self.config.stripe_secret_key}"):
                return self.error(401, "Invalid API Key provided.")
            params = await self.params(request)
            key = request.headers.get("Idempotency-Key")
            if request.method == "POST" and key:
                cached = self.idempotency.get(key)
                if cached is not None:
                    return web.json_response(cached[1], status=cached[0])
            response = await handler(request, params)
            if request.method == "POST" and key and response.status < 500:
                assert isinstance(response.body, bytes)  # noqa: S101 - narrows json_response for mypy
                self.idempotency[key] = (response.status, json.loads(response.body))
            return response

        return route

    def _expand(self, obj: JSON, params: JSON) -> JSON:
        expand = params.get("expand") or []
        out: JSON = json.loads(json.dumps(obj))
        if "payment_method" in expand and out.get("payment_method") in self.methods:
            out["payment_method"] = self.methods[out["payment_method"]]
        if "latest_charge" in expand and out.get("latest_charge") in self.charges:
            out["latest_charge"] = self.charges[out["latest_charge"]]
        return out

    # -- the API ------------------------------------------------------------------------------

    async def create_session(self, request: web.Request, p: JSON) -> web.Response:
        items = p.get("line_items") or []
        if p.get("mode") != "payment" or not items:
            return self.error(400, "Only mode=payment with line_items is simulated.")
        amount = 0
        currency = None
        for item in items:
            price = item.get("price_data") or {}
            amount += int(price.get("unit_amount", 0)) * int(item.get("quantity", 1))
            currency = price.get("currency")
        if amount <= 0 or currency != "usd":
            return self.error(400, "unit_amount and currency=usd are required.")
        customer = p.get("customer")
        if customer and customer not in self.customers:
            return self.error(400, f"No such customer: '{customer}'", param="customer")
        session_id = ids.token("cs_test_a1", 56)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": "usd",
            "client_reference_id": p.get("client_reference_id"),
            "customer": customer,
            "customer_email": p.get("customer_email"),
            "metadata": p.get("metadata") or {},
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": p.get("success_url"),
            "cancel_url": p.get("cancel_url"),
            "url": f"{self.config.public_base}/stripe/pay/{session_id}",
            "created": now(),
            "expires_at": now() + 86400,
            "livemode": False,
        }
        self.sessions[session_id] = session
        self.session_extra[session_id] = {
            "payment_intent_data": p.get("payment_intent_data") or {},
            "description": items[0].get("price_data", {}).get("product_data", {}).get("name"),
        }
        return web.json_response(session)

    async def get_session(self, request: web.Request, p: JSON) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return self.error(404, "No such checkout.session")
        return web.json_response(self._expand(session, p))

    async def get_intent(self, request: web.Request, p: JSON) -> web.Response:
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return self.error(404, "No such payment_intent")
        return web.json_response(self._expand(intent, p))

    async def get_charge(self, request: web.Request, p: JSON) -> web.Response:
        charge = self.charges.get(request.match_info["id"])
        if charge is None:
            return self.error(404, "No such charge")
        return web.json_response(charge)

    async def get_method(self, request: web.Request, p: JSON) -> web.Response:
        method = self.methods.get(request.match_info["id"])
        if method is None:
            return self.error(404, "No such payment_method")
        return web.json_response(method)

    async def create_customer(self, request: web.Request, p: JSON) -> web.Response:
        customer: JSON = {
            "id": ids.token("cus_", 14),
            "object": "customer",
            "email": p.get("email"),
            "metadata": p.get("metadata") or {},
            "created": now(),
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return web.json_response(customer)

    async def get_customer(self, request: web.Request, p: JSON) -> web.Response:
        customer = self.customers.get(request.match_info["id"])
        if customer is None:
            return self.error(404, "No such customer")
        return web.json_response(customer)

    def _new_method(self, customer: str | None) -> JSON:
        method: JSON = {
            "id": ids.token("pm_", 24),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
            "customer": customer,
            "created": now(),
        }
        self.methods[method["id"]] = method
        return method

    def _new_intent(self, amount: int, **fields: Any) -> JSON:
        intent: JSON = {
            "id": ids.token("pi_", 24),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": "usd",
            "status": "requires_payment_method",
            "customer": None,
            "payment_method": None,
            "latest_charge": None,
            "metadata": {},
            "description": None,
            "setup_future_usage": None,
            "last_payment_error": None,
            "created": now(),
            "livemode": False,
        }
        intent.update(fields)
        self.intents[intent["id"]] = intent
        return intent

    def _succeed(self, intent: JSON) -> JSON:
        charge = {
            "id": ids.token("ch_", 24),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "refunded": False,
            "captured": True,
            "paid": True,
            "status": "succeeded",
            "currency": "usd",
            "customer": intent["customer"],
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "metadata": dict(intent["metadata"]),
            "disputed": False,
            "created": now(),
            "livemode": False,
        }
        self.charges[charge["id"]] = charge
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"]
        )
        self.event("charge.succeeded", charge)
        self.event("payment_intent.succeeded", intent)
        return charge

    async def create_intent(self, request: web.Request, p: JSON) -> web.Response:
        """Off-session charges of a saved card (auto top-up): confirmed at once."""
        if p.get("confirm") != "true" or p.get("off_session") != "true":
            return self.error(400, "Only confirm=true, off_session=true is simulated.")
        customer, method = p.get("customer"), p.get("payment_method")
        if customer not in self.customers or method not in self.methods:
            return self.error(400, "No such customer or payment_method")
        if self.methods[method].get("customer") != customer:
            return self.error(400, "The payment method is not attached to this customer.")
        intent = self._new_intent(
            int(p.get("amount", 0)),
            customer=customer,
            payment_method=method,
            metadata=p.get("metadata") or {},
            description=p.get("description"),
        )
        if customer in self.declining:
            error = {
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "type": "card_error",
            }
            intent["last_payment_error"] = error
            self.event("payment_intent.payment_failed", intent)
            return self.error(
                402,
                error["message"],
                "card_error",
                code="card_declined",
                decline_code="insufficient_funds",
                payment_intent=intent,
            )
        self._succeed(intent)
        return web.json_response(intent)

    # -- the hosted Checkout page ---------------------------------------------------------------

    async def pay_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound()
        error = request.query.get("error")
        if session["status"] != "open":
            return page("Checkout", "<h1>This checkout is no longer open.</h1>")
        name = html.escape(self.session_extra[session["id"]].get("description") or "")
        body = f"""<h1>Pay TokenPapa</h1><p class="note">{name}</p>
<div class="amount" data-testid="amount">${_cents_str(session["amount_total"])}</div>
<p class="note">Card •••• 4242 (test card)</p>
{'<p class="error">Your card was declined.</p>' if error else ""}
<form method="post">
<button class="primary" name="action" value="pay">Pay</button>
<button name="action" value="delayed">Pay by bank debit (confirms later)</button>
<button name="action" value="fail">Fail (card declined)</button>
<button name="action" value="cancel">Cancel</button></form>"""
        return page("Stripe Checkout (simulator)", body)

    async def pay(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound()
        action = (await request.post()).get("action")
        if session["status"] != "open":
            raise web.HTTPSeeOther(f"/stripe/pay/{session['id']}")
        if action == "cancel":
            raise web.HTTPSeeOther(session["cancel_url"])
        extra = self.session_extra[session["id"]]
        pi_data = extra["payment_intent_data"]
        intent = self._new_intent(
            session["amount_total"],
            customer=session["customer"],
            metadata=pi_data.get("metadata") or {},
            description=pi_data.get("description"),
            setup_future_usage=pi_data.get("setup_future_usage"),
        )
        method = self._new_method(
            session["customer"] if pi_data.get("setup_future_usage") else None
        )
        intent["payment_method"] = method["id"]
        if action == "fail":
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "message": "Your card was declined.",
            }
            self.event("payment_intent.payment_failed", intent)
            raise web.HTTPSeeOther(f"/stripe/pay/{session['id']}?error=declined")
        session["payment_intent"] = intent["id"]
        session["status"] = "complete"
        if action == "delayed":
            intent["status"] = "processing"
            self.event("payment_intent.processing", intent)
            self.event("checkout.session.completed", session)
            if self.config.async_settle_seconds is not None:
                self.outbox.spawn(
                    self._settle_later(session["id"], self.config.async_settle_seconds)
                )
        else:
            self._succeed(intent)
            session["payment_status"] = "paid"
            self.event("checkout.session.completed", session)
        success = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
        raise web.HTTPSeeOther(success)

    async def _settle_later(self, session_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.settle_async(session_id, "succeeded")

    def settle_async(self, session_id: str, outcome: str) -> JSON:
        session = self.sessions[session_id]
        intent = self.intents[session["payment_intent"]]
        if intent["status"] != "processing":
            return session
        if outcome == "succeeded":
            self._succeed(intent)
            session["payment_status"] = "paid"
            self.event("checkout.session.async_payment_succeeded", session)
        else:
            intent.update(
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "code": "payment_failed",
                    "message": "The debit failed.",
                },
            )
            self.event("payment_intent.payment_failed", intent)
            self.event("checkout.session.async_payment_failed", session)
        return session

    # -- what the dashboard does ----------------------------------------------------------------

    async def settle(self, request: web.Request) -> web.Response:
        data = await request.json()
        session = self.settle_async(request.match_info["id"], data.get("outcome", "succeeded"))
        return web.json_response(session)

    def _intent_of(self, data: JSON) -> JSON:
        intent = self.intents.get(data.get("payment_intent", ""))
        if intent is None or not intent.get("latest_charge"):
            raise web.HTTPNotFound(text="no such succeeded payment_intent")
        return intent

    async def refund(self, request: web.Request) -> web.Response:
        data = await request.json()
        intent = self._intent_of(data)
        charge = self.charges[intent["latest_charge"]]
        amount = int(data.get("amount") or charge["amount"] - charge["amount_refunded"])
        if amount <= 0 or charge["amount_refunded"] + amount > charge["amount"]:
            return self.error(400, "Refund exceeds the charge.")
        refund = {
            "id": ids.token("re_", 24),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "currency": "usd",
            "created": now(),
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.event("charge.refunded", charge)
        self.event("refund.created", refund)
        return web.json_response(refund)

    async def dispute(self, request: web.Request) -> web.Response:
        data = await request.json()
        intent = self._intent_of(data)
        charge = self.charges[intent["latest_charge"]]
        amount = int(data.get("amount") or charge["amount"])
        fee = int(data.get("fee", 1500))
        dispute = {
            "id": ids.token("du_", 24),
            "object": "dispute",
            "amount": amount,
            "currency": "usd",
            "charge": charge["id"],
            "payment_intent": intent["id"],
            "reason": data.get("reason", "fraudulent"),
            "status": "needs_response",
            "balance_transactions": [],
            "created": now(),
            "livemode": False,
        }
        self.disputes[dispute["id"]] = dispute
        charge["disputed"] = True
        self.event("charge.dispute.created", dispute)
        dispute["balance_transactions"].append(
            {
                "id": ids.token("txn_", 24),
                "object": "balance_transaction",
                "amount": -amount,
                "fee": fee,
                "net": -amount - fee,
                "currency": "usd",
                "type": "adjustment",
                "reporting_category": "dispute",
            }
        )
        self.event("charge.dispute.funds_withdrawn", dispute)
        return web.json_response(dispute)

    async def close_dispute(self, request: web.Request) -> web.Response:
        dispute = self.disputes.get(request.match_info["id"])
        if dispute is None:
            raise web.HTTPNotFound()
        data = await request.json()
        if data.get("outcome") == "won":
            fee_back = int(data.get("fee_returned", 0))
            dispute["balance_transactions"].append(
                {
                    "id": ids.token("txn_", 24),
                    "object": "balance_transaction",
                    "amount": dispute["amount"],
                    "fee": -fee_back,
                    "net": dispute["amount"] + fee_back,
                    "currency": "usd",
                    "type": "adjustment",
                    "reporting_category": "dispute_reversal",
                }
            )
            dispute["status"] = "won"
            self.event("charge.dispute.funds_reinstated", dispute)
        else:
            dispute["status"] = "lost"
        self.event("charge.dispute.closed", dispute)
        return web.json_response(dispute)

    async def decline(self, request: web.Request) -> web.Response:
        customer = request.match_info["id"]
        data = await request.json()
        if data.get("decline", True):
            self.declining.add(customer)
        else:
            self.declining.discard(customer)
        return web.json_response({"customer": customer, "declining": customer in self.declining})

    def routes(self) -> list[web.RouteDef]:
        api = self.api
        return [
            web.post("/stripe/v1/checkout/sessions", api(self.create_session)),
            web.get("/stripe/v1/checkout/sessions/{id}", api(self.get_session)),
            web.post("/stripe/v1/payment_intents", api(self.create_intent)),
            web.get("/stripe/v1/payment_intents/{id}", api(self.get_intent)),
            web.get("/stripe/v1/charges/{id}", api(self.get_charge)),
            web.post("/stripe/v1/customers", api(self.create_customer)),
            web.get("/stripe/v1/customers/{id}", api(self.get_customer)),
            web.get("/stripe/v1/payment_methods/{id}", api(self.get_method)),
            web.get("/stripe/pay/{id}", self.pay_page),
            web.post("/stripe/pay/{id}", self.pay),
            web.post("/stripe/_sim/refund", self.refund),
            web.post("/stripe/_sim/dispute", self.dispute),
            web.post("/stripe/_sim/disputes/{id}/close", self.close_dispute),
            web.post("/stripe/_sim/customers/{id}/decline", self.decline),
            web.post("/stripe/_sim/sessions/{id}/async", self.settle),
        ]
