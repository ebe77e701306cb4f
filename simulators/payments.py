"""Local simulators of the three payment providers the portal uses: Stripe, PayPal and BTCPay
Server, in one process under ``/stripe``, ``/paypal`` and ``/btcpay``. For development and
tests only (production settings refuse loopback API bases).

Each accepts exactly the API calls the portal makes, shows a simple hosted page where a person
pays (or fails, or pays part), and sends webhooks signed the real way:

* **Stripe** (point the official SDK's ``api_base`` here: ``STRIPE_API_BASE=<this>/stripe``):
  ``POST/GET /v1/checkout/sessions``, ``GET|POST /v1/payment_intents`` (off-session, confirmed
  at once), ``GET /v1/charges/{id}``, ``POST|GET /v1/customers``, ``GET /v1/payment_methods/{id}``.
  Form-encoded bodies as the SDK sends them, ``Idempotency-Key`` honoured. Webhooks carry
  ``Stripe-Signature: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<body>")``. Pay page:
  ``/stripe/pay/{session}``.
* **PayPal** Orders v2: ``POST /v1/oauth2/token``, ``POST /v2/checkout/orders`` (intent
  CAPTURE, ``PayPal-Request-Id`` honoured), ``GET /v2/checkout/orders/{id}``,
  ``POST /v2/checkout/orders/{id}/capture``, ``GET /v2/payments/captures/{id}`` and
  ``POST /v1/notifications/verify-webhook-signature``, which checks the transmission signature
  over ``id|time|webhook_id|crc32(raw event)`` (so a re-serialised event fails, as at PayPal).
  Approval page: ``/paypal/checkoutnow?token={order}``.
* **BTCPay Server** Greenfield: ``POST /api/v1/stores/{store}/invoices``,
  ``GET /api/v1/stores/{store}/invoices/{id}``; webhooks signed ``BTCPay-Sig: sha256=<hex
  HMAC-SHA256(secret, body)>``. Checkout page: ``/btcpay/i/{invoice}`` with Pay / Partial /
  Expire.

Operator actions a test (or a person) can trigger, as the provider's dashboard would:
``POST /stripe/_sim/refund`` ``{payment_intent, amount?}``, ``POST /stripe/_sim/dispute``
``{payment_intent, amount?, fee?}``, ``POST /stripe/_sim/disputes/{id}/close`` ``{outcome}``,
``POST /stripe/_sim/customers/{id}/decline`` ``{decline}``,
``POST /stripe/_sim/sessions/{id}/async`` ``{outcome}``; ``POST /paypal/_sim/captures/{id}/
{refund,reverse,complete,deny}``; ``POST /btcpay/_sim/invoices/{id}/pay-late``. And for the
webhooks: ``GET /_sim/events`` (every event as sent: body, headers, deliveries),
``POST /_sim/events/{id}/deliver`` (send it again, unchanged), ``POST /_sim/config``
``{auto_deliver}`` (hold deliveries for a test that orders them itself).

Run: ``python -m simulators.payments --host 127.0.0.1 --port 8003 --webhook-base
http://127.0.0.1:8000``. Credentials are read from the same environment variables as the
portal's (``STRIPE_SECRET_KEY``, ...), with the defaults in :data:`DEFAULTS`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import html
import itertools
import json
import os
import re
import secrets
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import ClientSession, ClientTimeout, web

JSON = dict[str, Any]

#: What `make run` and the tests give both the portal and the simulators.
DEFAULTS = {
    "STRIPE_SECRET_KEY": "sk_test_tokenpapa_simulator",
    "STRIPE_WEBHOOK_SECRET": "whsec_tokenpapa_simulator",
    "PAYPAL_CLIENT_ID": "tokenpapa-simulator",
    "PAYPAL_CLIENT_SECRET": "tokenpapa-simulator-secret",
    "PAYPAL_WEBHOOK_ID": "SIMWEBHOOK0001",
    "BTCPAY_API_KEY": "tokenpapa-simulator-key",
    "BTCPAY_STORE_ID": "SimStore1",
    "BTCPAY_WEBHOOK_SECRET": "tokenpapa-simulator-webhook",
}

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Config:
    webhook_base: str = "http://127.0.0.1:8000"
    public_base: str = "http://127.0.0.1:8003"
    stripe_secret_key: str = DEFAULTS["STRIPE_SECRET_KEY"]
    stripe_webhook_secret: str = DEFAULTS["STRIPE_WEBHOOK_SECRET"]
    paypal_client_id: str = DEFAULTS["PAYPAL_CLIENT_ID"]
    paypal_client_secret: str = DEFAULTS["PAYPAL_CLIENT_SECRET"]
    paypal_webhook_id: str = DEFAULTS["PAYPAL_WEBHOOK_ID"]
    btcpay_api_key: str = DEFAULTS["BTCPAY_API_KEY"]
    btcpay_store_id: str = DEFAULTS["BTCPAY_STORE_ID"]
    btcpay_webhook_secret: str = DEFAULTS["BTCPAY_WEBHOOK_SECRET"]
    auto_deliver: bool = True
    #: Seconds before a "pay by bank debit" Stripe payment settles by itself (None: never).
    async_settle_seconds: float | None = 5.0

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        env = {k: os.environ.get(k) or v for k, v in DEFAULTS.items()}
        values = {key.lower(): value for key, value in env.items()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class Delivery:
    id: int
    provider: str
    type: str
    url: str
    body: str
    headers: dict[str, str]
    deliveries: list[int] = field(default_factory=list)

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "provider": self.provider,
            "type": self.type,
            "url": self.url,
            "body": self.body,
            "headers": self.headers,
            "deliveries": self.deliveries,
        }


def _now() -> int:
    return int(time.time())


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(prefix: str, n: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _upper_id(n: int = 17) -> str:
    return "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(n))


def _cents_str(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


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


def _page(title: str, body: str) -> web.Response:
    text = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;padding:3rem 1rem;
color:#1a1d24}}
main{{max-width:28rem;margin:auto;background:#fff;border-radius:12px;padding:2rem;
box-shadow:0 2px 12px rgba(0,0,0,.08)}}h1{{font-size:1.3rem;margin:0 0 .4rem}}
.amount{{font-size:2rem;font-weight:700;margin:.6rem 0 1.2rem}}
.note{{color:#5a6170;font-size:.9rem}}
form{{display:flex;flex-direction:column;gap:.6rem;margin-top:1.2rem}}
button{{font-size:1rem;padding:.7rem;border-radius:8px;border:1px solid #c8ccd4;background:#fff;
cursor:pointer}}button.primary{{background:#1f5eff;border-color:#1f5eff;color:#fff}}
.error{{color:#b3261e;font-weight:600}}.sim{{display:inline-block;font-size:.75rem;
background:#fde68a;padding:.1rem .5rem;border-radius:99px;margin-bottom:1rem}}
</style></head><body><main><span class="sim">SIMULATOR: no real money moves</span>
{body}</main></body></html>"""
    return web.Response(text=text, content_type="text/html")


class Simulator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.deliveries: list[Delivery] = []
        self.held: list[Delivery] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.http: ClientSession | None = None
        # Stripe
        self.sessions: dict[str, JSON] = {}
        self.session_extra: dict[str, JSON] = {}
        self.intents: dict[str, JSON] = {}
        self.charges: dict[str, JSON] = {}
        self.customers: dict[str, JSON] = {}
        self.methods: dict[str, JSON] = {}
        self.disputes: dict[str, JSON] = {}
        self.declining: set[str] = set()
        self.stripe_idempotency: dict[str, tuple[int, JSON]] = {}
        # PayPal
        self.paypal_tokens: set[str] = set()
        self.orders: dict[str, JSON] = {}
        self.order_extra: dict[str, JSON] = {}
        self.captures: dict[str, JSON] = {}
        self.paypal_idempotency: dict[str, tuple[int, JSON]] = {}
        # BTCPay
        self.invoices: dict[str, JSON] = {}
        #: Every API call received (method, path), for tests that check none was made.
        self.calls: list[tuple[str, str]] = []

    # -- webhooks ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def emit(self, provider: str, type_: str, body: str, headers: dict[str, str]) -> Delivery:
        path = {"stripe": "/webhooks/stripe/", "paypal": "/webhooks/paypal/"}.get(
            provider, "/webhooks/btcpay/"
        )
        delivery = Delivery(
            id=len(self.deliveries) + 1,
            provider=provider,
            type=type_,
            url=self.config.webhook_base.rstrip("/") + path,
            body=body,
            headers={"Content-Type": "application/json", **headers},
        )
        self.deliveries.append(delivery)
        if self.config.auto_deliver:
            self._spawn(self._deliver_with_retries(delivery))
        else:
            self.held.append(delivery)
        return delivery

    async def send(self, delivery: Delivery) -> int:
        assert self.http is not None
        try:
            async with self.http.post(
                delivery.url, data=delivery.body.encode(), headers=delivery.headers
            ) as response:
                await response.read()
                status = response.status
        except Exception:
            status = 0
        delivery.deliveries.append(status)
        return status

    async def _deliver_with_retries(self, delivery: Delivery) -> None:
        # One event at a time per provider in creation order, like a single delivery queue.
        for delay in (0.0, *RETRY_DELAYS):
            if delay:
                await asyncio.sleep(delay)
            if 200 <= await self.send(delivery) < 300:
                return

    def stripe_event(self, type_: str, obj: JSON) -> Delivery:
        event = {
            "id": _token("evt_"),
            "object": "event",
            "api_version": "2025-06-30.basil",
            "created": _now(),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        body = json.dumps(event, indent=2)
        stamp = _now()
        signature = hmac.new(
            self.config.stripe_webhook_secret.encode(),
            f"{stamp}.{body}".encode(),
            hashlib.sha256,
        ).hexdigest()
        return self.emit("stripe", type_, body, {"Stripe-Signature": f"t={stamp},v1={signature}"})

    def _paypal_key(self, webhook_id: str) -> bytes:
        return hashlib.sha256(
            f"paypal-sim|{webhook_id}|{self.config.paypal_client_secret}".encode()
        ).digest()

    def paypal_signature(self, tid: str, when: str, webhook_id: str, raw: str) -> str:
        message = f"{tid}|{when}|{webhook_id}|{zlib.crc32(raw.encode())}"
        digest = hmac.new(self._paypal_key(webhook_id), message.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def paypal_event(
        self, type_: str, resource_type: str, resource: JSON, summary: str
    ) -> Delivery:
        event = {
            "id": "WH-" + _upper_id(17) + "-" + _upper_id(17),
            "event_version": "1.0",
            "create_time": _iso(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": type_,
            "summary": summary,
            "resource": json.loads(json.dumps(resource)),
            "links": [],
        }
        body = json.dumps(event)
        tid = _token("", 8) + "-" + _token("", 4)
        when = _iso()
        return self.emit(
            "paypal",
            type_,
            body,
            {
                "PAYPAL-TRANSMISSION-ID": tid,
                "PAYPAL-TRANSMISSION-TIME": when,
                "PAYPAL-TRANSMISSION-SIG": self.paypal_signature(
                    tid, when, self.config.paypal_webhook_id, body
                ),
                "PAYPAL-CERT-URL": f"{self.config.public_base}/paypal/v1/notifications/certs/SIM",
                "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            },
        )

    def btcpay_event(self, type_: str, invoice: JSON, **extra: Any) -> Delivery:
        delivery_id = _token("", 22)
        event = {
            "deliveryId": delivery_id,
            "webhookId": "SimWebhook1",
            "originalDeliveryId": delivery_id,
            "isRedelivery": False,
            "type": type_,
            "timestamp": _now(),
            "storeId": invoice["storeId"],
            "invoiceId": invoice["id"],
            "metadata": invoice.get("metadata", {}),
            **extra,
        }
        body = json.dumps(event)
        signature = hmac.new(
            self.config.btcpay_webhook_secret.encode(), body.encode(), hashlib.sha256
        ).hexdigest()
        return self.emit("btcpay", type_, body, {"BTCPay-Sig": f"sha256={signature}"})

    # -- shared admin endpoints -------------------------------------------------------------

    async def list_events(self, request: web.Request) -> web.Response:
        provider = request.query.get("provider")
        type_ = request.query.get("type")
        items = [
            d.as_json()
            for d in self.deliveries
            if (not provider or d.provider == provider) and (not type_ or d.type == type_)
        ]
        return web.json_response({"data": items})

    async def redeliver(self, request: web.Request) -> web.Response:
        index = int(request.match_info["id"]) - 1
        if not 0 <= index < len(self.deliveries):
            raise web.HTTPNotFound()
        status = await self.send(self.deliveries[index])
        return web.json_response({"status": status})

    async def set_config(self, request: web.Request) -> web.Response:
        data = await request.json()
        if "auto_deliver" in data:
            self.config.auto_deliver = bool(data["auto_deliver"])
        if self.config.auto_deliver and self.held:
            held, self.held = self.held, []
            for delivery in held:
                await self._deliver_with_retries(delivery)
        return web.json_response({"auto_deliver": self.config.auto_deliver})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # == Stripe =============================================================================

    @staticmethod
    def stripe_error(
        status: int, message: str, type_: str = "invalid_request_error", **extra: Any
    ) -> web.Response:
        return web.json_response(
            {"error": {"type": type_, "message": message, **extra}}, status=status
        )

    async def stripe_params(self, request: web.Request) -> JSON:
        pairs = list(request.query.items())
        if request.method == "POST":
            pairs += parse_qsl(await request.text(), keep_blank_values=True)
        return parse_form(pairs)

    def stripe_route(
        self, handler: Callable[[web.Request, JSON], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            if not hmac.compare_digest(auth, f"Bearer {self.config.stripe_secret_key}"):
                return self.stripe_error(401, "Invalid API Key provided.")
            params = await self.stripe_params(request)
            key = request.headers.get("Idempotency-Key")
            if request.method == "POST" and key:
                cached = self.stripe_idempotency.get(key)
                if cached is not None:
                    return web.json_response(cached[1], status=cached[0])
            response = await handler(request, params)
            if request.method == "POST" and key and response.status < 500:
                assert isinstance(response.body, bytes)
                self.stripe_idempotency[key] = (response.status, json.loads(response.body))
            return response

        return route

    def _expand(self, obj: JSON, params: JSON) -> JSON:
        expand = params.get("expand") or []
        out = json.loads(json.dumps(obj))
        if "payment_method" in expand and out.get("payment_method") in self.methods:
            out["payment_method"] = self.methods[out["payment_method"]]
        if "latest_charge" in expand and out.get("latest_charge") in self.charges:
            out["latest_charge"] = self.charges[out["latest_charge"]]
        return out

    async def create_session(self, request: web.Request, p: JSON) -> web.Response:
        items = p.get("line_items") or []
        if p.get("mode") != "payment" or not items:
            return self.stripe_error(400, "Only mode=payment with line_items is simulated.")
        amount = 0
        currency = None
        for item in items:
            price = item.get("price_data") or {}
            amount += int(price.get("unit_amount", 0)) * int(item.get("quantity", 1))
            currency = price.get("currency")
        if amount <= 0 or currency != "usd":
            return self.stripe_error(400, "unit_amount and currency=usd are required.")
        customer = p.get("customer")
        if customer and customer not in self.customers:
            return self.stripe_error(400, f"No such customer: '{customer}'", param="customer")
        session_id = _token("cs_test_a1", 56)
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
            "created": _now(),
            "expires_at": _now() + 86400,
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
            return self.stripe_error(404, "No such checkout.session")
        return web.json_response(self._expand(session, p))

    async def get_intent(self, request: web.Request, p: JSON) -> web.Response:
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return self.stripe_error(404, "No such payment_intent")
        return web.json_response(self._expand(intent, p))

    async def get_charge(self, request: web.Request, p: JSON) -> web.Response:
        charge = self.charges.get(request.match_info["id"])
        if charge is None:
            return self.stripe_error(404, "No such charge")
        return web.json_response(charge)

    async def get_method(self, request: web.Request, p: JSON) -> web.Response:
        method = self.methods.get(request.match_info["id"])
        if method is None:
            return self.stripe_error(404, "No such payment_method")
        return web.json_response(method)

    async def create_customer(self, request: web.Request, p: JSON) -> web.Response:
        customer = {
            "id": _token("cus_", 14),
            "object": "customer",
            "email": p.get("email"),
            "metadata": p.get("metadata") or {},
            "created": _now(),
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return web.json_response(customer)

    async def get_customer(self, request: web.Request, p: JSON) -> web.Response:
        customer = self.customers.get(request.match_info["id"])
        if customer is None:
            return self.stripe_error(404, "No such customer")
        return web.json_response(customer)

    def _new_method(self, customer: str | None) -> JSON:
        method = {
            "id": _token("pm_", 24),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
            "customer": customer,
            "created": _now(),
        }
        self.methods[method["id"]] = method
        return method

    def _new_intent(self, amount: int, **fields: Any) -> JSON:
        intent = {
            "id": _token("pi_", 24),
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
            "created": _now(),
            "livemode": False,
        }
        intent.update(fields)
        self.intents[intent["id"]] = intent
        return intent

    def _succeed(self, intent: JSON) -> JSON:
        charge = {
            "id": _token("ch_", 24),
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
            "created": _now(),
            "livemode": False,
        }
        self.charges[charge["id"]] = charge
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"]
        )
        self.stripe_event("charge.succeeded", charge)
        self.stripe_event("payment_intent.succeeded", intent)
        return charge

    async def create_intent(self, request: web.Request, p: JSON) -> web.Response:
        """Off-session charges of a saved card (auto top-up): confirmed at once."""
        if p.get("confirm") != "true" or p.get("off_session") != "true":
            return self.stripe_error(400, "Only confirm=true, off_session=true is simulated.")
        customer, method = p.get("customer"), p.get("payment_method")
        if customer not in self.customers or method not in self.methods:
            return self.stripe_error(400, "No such customer or payment_method")
        if self.methods[method].get("customer") != customer:
            return self.stripe_error(400, "The payment method is not attached to this customer.")
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
            self.stripe_event("payment_intent.payment_failed", intent)
            return self.stripe_error(
                402,
                error["message"],
                "card_error",
                code="card_declined",
                decline_code="insufficient_funds",
                payment_intent=intent,
            )
        self._succeed(intent)
        return web.json_response(intent)

    async def stripe_pay_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            raise web.HTTPNotFound()
        error = request.query.get("error")
        if session["status"] != "open":
            return _page("Checkout", "<h1>This checkout is no longer open.</h1>")
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
        return _page("Stripe Checkout (simulator)", body)

    async def stripe_pay(self, request: web.Request) -> web.Response:
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
            self.stripe_event("payment_intent.payment_failed", intent)
            raise web.HTTPSeeOther(f"/stripe/pay/{session['id']}?error=declined")
        session["payment_intent"] = intent["id"]
        session["status"] = "complete"
        if action == "delayed":
            intent["status"] = "processing"
            self.stripe_event("payment_intent.processing", intent)
            self.stripe_event("checkout.session.completed", session)
            if self.config.async_settle_seconds is not None:
                self._spawn(self._settle_later(session["id"], self.config.async_settle_seconds))
        else:
            self._succeed(intent)
            session["payment_status"] = "paid"
            self.stripe_event("checkout.session.completed", session)
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
            self.stripe_event("checkout.session.async_payment_succeeded", session)
        else:
            intent.update(
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "code": "payment_failed",
                    "message": "The debit failed.",
                },
            )
            self.stripe_event("payment_intent.payment_failed", intent)
            self.stripe_event("checkout.session.async_payment_failed", session)
        return session

    async def stripe_async(self, request: web.Request) -> web.Response:
        data = await request.json()
        session = self.settle_async(request.match_info["id"], data.get("outcome", "succeeded"))
        return web.json_response(session)

    def _intent_of(self, data: JSON) -> JSON:
        intent = self.intents.get(data.get("payment_intent", ""))
        if intent is None or not intent.get("latest_charge"):
            raise web.HTTPNotFound(text="no such succeeded payment_intent")
        return intent

    async def stripe_refund(self, request: web.Request) -> web.Response:
        data = await request.json()
        intent = self._intent_of(data)
        charge = self.charges[intent["latest_charge"]]
        amount = int(data.get("amount") or charge["amount"] - charge["amount_refunded"])
        if amount <= 0 or charge["amount_refunded"] + amount > charge["amount"]:
            return self.stripe_error(400, "Refund exceeds the charge.")
        refund = {
            "id": _token("re_", 24),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "currency": "usd",
            "created": _now(),
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.stripe_event("charge.refunded", charge)
        self.stripe_event("refund.created", refund)
        return web.json_response(refund)

    async def stripe_dispute(self, request: web.Request) -> web.Response:
        data = await request.json()
        intent = self._intent_of(data)
        charge = self.charges[intent["latest_charge"]]
        amount = int(data.get("amount") or charge["amount"])
        fee = int(data.get("fee", 1500))
        dispute = {
            "id": _token("du_", 24),
            "object": "dispute",
            "amount": amount,
            "currency": "usd",
            "charge": charge["id"],
            "payment_intent": intent["id"],
            "reason": data.get("reason", "fraudulent"),
            "status": "needs_response",
            "balance_transactions": [],
            "created": _now(),
            "livemode": False,
        }
        self.disputes[dispute["id"]] = dispute
        charge["disputed"] = True
        self.stripe_event("charge.dispute.created", dispute)
        dispute["balance_transactions"].append(
            {
                "id": _token("txn_", 24),
                "object": "balance_transaction",
                "amount": -amount,
                "fee": fee,
                "net": -amount - fee,
                "currency": "usd",
                "type": "adjustment",
                "reporting_category": "dispute",
            }
        )
        self.stripe_event("charge.dispute.funds_withdrawn", dispute)
        return web.json_response(dispute)

    async def stripe_close_dispute(self, request: web.Request) -> web.Response:
        dispute = self.disputes.get(request.match_info["id"])
        if dispute is None:
            raise web.HTTPNotFound()
        data = await request.json()
        if data.get("outcome") == "won":
            fee_back = int(data.get("fee_returned", 0))
            dispute["balance_transactions"].append(
                {
                    "id": _token("txn_", 24),
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
            self.stripe_event("charge.dispute.funds_reinstated", dispute)
        else:
            dispute["status"] = "lost"
        self.stripe_event("charge.dispute.closed", dispute)
        return web.json_response(dispute)

    async def stripe_decline(self, request: web.Request) -> web.Response:
        customer = request.match_info["id"]
        data = await request.json()
        if data.get("decline", True):
            self.declining.add(customer)
        else:
            self.declining.discard(customer)
        return web.json_response({"customer": customer, "declining": customer in self.declining})

    # == PayPal =============================================================================

    @staticmethod
    def paypal_error(status: int, name: str, issue: str, message: str) -> web.Response:
        return web.json_response(
            {
                "name": name,
                "message": message,
                "debug_id": _token("", 13).lower(),
                "details": [{"issue": issue, "description": message}],
            },
            status=status,
        )

    async def paypal_token(self, request: web.Request) -> web.Response:
        expected = (
            "Basic "
            + base64.b64encode(
                f"{self.config.paypal_client_id}:{self.config.paypal_client_secret}".encode()
            ).decode()
        )
        form = await request.post()
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status=401,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = _token("A21AA", 80)
        self.paypal_tokens.add(token)
        return web.json_response(
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-SIMULATOR",
                "expires_in": 32400,
                "nonce": _iso() + _token("", 20),
            }
        )

    def paypal_route(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.paypal_tokens:
                return web.json_response(
                    {
                        "error": "invalid_token",
                        "error_description": "Token signature verification failed",
                    },
                    status=401,
                )
            key = request.headers.get("PayPal-Request-Id")
            scope = f"{request.path}|{key}"
            if request.method == "POST" and key and scope in self.paypal_idempotency:
                status, data = self.paypal_idempotency[scope]
                return web.json_response(data, status=200 if status == 201 else status)
            response = await handler(request)
            if request.method == "POST" and key and response.status < 500:
                assert isinstance(response.body, bytes)
                self.paypal_idempotency[scope] = (response.status, json.loads(response.body))
            return response

        return route

    def _order_links(self, order_id: str) -> list[JSON]:
        base = f"{self.config.public_base}/paypal/v2/checkout/orders/{order_id}"
        return [
            {"href": base, "rel": "self", "method": "GET"},
            {
                "href": f"{self.config.public_base}/paypal/checkoutnow?token={order_id}",
                "rel": "payer-action",
                "method": "GET",
            },
            {"href": f"{base}/capture", "rel": "capture", "method": "POST"},
        ]

    async def create_order(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            unit = data["purchase_units"][0]
            value = Decimal(unit["amount"]["value"])
            currency = unit["amount"]["currency_code"]
        except (ValueError, KeyError, IndexError, TypeError, ArithmeticError):
            return self.paypal_error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "Bad order.")
        if data.get("intent") != "CAPTURE":
            return self.paypal_error(
                422, "UNPROCESSABLE_ENTITY", "INTENT_NOT_SUPPORTED", "CAPTURE only."
            )
        context = (
            ((data.get("payment_source") or {}).get("paypal") or {}).get("experience_context")
            or data.get("application_context")
            or {}
        )
        if not context.get("return_url"):
            return self.paypal_error(
                422, "UNPROCESSABLE_ENTITY", "MISSING_REQUIRED_PARAMETER", "return_url"
            )
        order_id = _upper_id(17)
        order = {
            "id": order_id,
            "intent": "CAPTURE",
            "status": "PAYER_ACTION_REQUIRED",
            "payment_source": {"paypal": {}},
            "purchase_units": [
                {
                    "reference_id": unit.get("reference_id", "default"),
                    "custom_id": unit.get("custom_id"),
                    "invoice_id": unit.get("invoice_id"),
                    "description": unit.get("description"),
                    "amount": {"currency_code": currency, "value": f"{value:.2f}"},
                    "payee": {"merchant_id": "SIMMERCHANT01"},
                }
            ],
            "create_time": _iso(),
            "links": self._order_links(order_id),
        }
        self.orders[order_id] = order
        self.order_extra[order_id] = {
            "return_url": context["return_url"],
            "cancel_url": context.get("cancel_url") or context["return_url"],
            "outcome": "COMPLETED",
        }
        if "return=minimal" in request.headers.get("Prefer", "return=minimal"):
            return web.json_response(
                {"id": order_id, "status": order["status"], "links": order["links"]}, status=201
            )
        return web.json_response(order, status=201)

    async def get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self.paypal_error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No order.")
        return web.json_response(order)

    async def capture_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self.paypal_error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No order.")
        if order["status"] == "COMPLETED":
            return self.paypal_error(
                422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED", "Order already captured."
            )
        if order["status"] != "APPROVED":
            return self.paypal_error(
                422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED", "Payer has not approved."
            )
        extra = self.order_extra[order["id"]]
        if extra["outcome"] == "DECLINED":
            return self.paypal_error(
                422, "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED", "The instrument was declined."
            )
        unit = order["purchase_units"][0]
        capture_id = _upper_id(17)
        amount = unit["amount"]
        fee = (Decimal(amount["value"]) * Decimal("0.0349") + Decimal("0.49")).quantize(
            Decimal("0.01")
        )
        capture = {
            "id": capture_id,
            "status": extra["outcome"],
            "amount": dict(amount),
            "final_capture": True,
            "custom_id": unit.get("custom_id"),
            "invoice_id": unit.get("invoice_id"),
            "seller_protection": {"status": "ELIGIBLE"},
            "seller_receivable_breakdown": {
                "gross_amount": dict(amount),
                "paypal_fee": {"currency_code": amount["currency_code"], "value": f"{fee}"},
                "net_amount": {
                    "currency_code": amount["currency_code"],
                    "value": f"{Decimal(amount['value']) - fee}",
                },
            },
            "supplementary_data": {"related_ids": {"order_id": order["id"]}},
            "links": [
                {"href": self._capture_url(capture_id), "rel": "self", "method": "GET"},
                {
                    "href": f"{self._capture_url(capture_id)}/refund",
                    "rel": "refund",
                    "method": "POST",
                },
                {"href": order["links"][0]["href"], "rel": "up", "method": "GET"},
            ],
            "create_time": _iso(),
            "update_time": _iso(),
        }
        if extra["outcome"] == "PENDING":
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        self.captures[capture_id] = capture
        unit["payments"] = {"captures": [capture]}
        order["status"] = "COMPLETED"
        order["payer"] = {"payer_id": "SIMPAYER01", "email_address": "buyer@example.com"}
        event = {"COMPLETED": "PAYMENT.CAPTURE.COMPLETED", "PENDING": "PAYMENT.CAPTURE.PENDING"}
        self.paypal_event(event[extra["outcome"]], "capture", capture, "Payment captured")
        return web.json_response(order, status=201)

    def _capture_url(self, capture_id: str) -> str:
        return f"{self.config.public_base}/paypal/v2/payments/captures/{capture_id}"

    async def get_capture(self, request: web.Request) -> web.Response:
        capture = self.captures.get(request.match_info["id"])
        if capture is None:
            return self.paypal_error(
                404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No capture."
            )
        return web.json_response(capture)

    async def verify_signature(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            data = json.loads(text)
            # The event exactly as the caller sent it: PayPal signs the bytes it delivered.
            start = text.rindex('"webhook_event"')
            start = text.index(":", start) + 1
            while text[start] in " \t\r\n":
                start += 1
            _, end = json.JSONDecoder().raw_decode(text, start)
            raw_event = text[start:end]
            fields = {
                k: str(data[k])
                for k in (
                    "auth_algo",
                    "cert_url",
                    "transmission_id",
                    "transmission_sig",
                    "transmission_time",
                    "webhook_id",
                )
            }
        except (ValueError, KeyError, IndexError):
            return self.paypal_error(
                400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "Bad request."
            )
        ok = fields["webhook_id"] == self.config.paypal_webhook_id and hmac.compare_digest(
            self.paypal_signature(
                fields["transmission_id"],
                fields["transmission_time"],
                fields["webhook_id"],
                raw_event,
            ),
            fields["transmission_sig"],
        )
        return web.json_response({"verification_status": "SUCCESS" if ok else "FAILURE"})

    async def paypal_approve_page(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.query.get("token", ""))
        if order is None:
            raise web.HTTPNotFound()
        if order["status"] != "PAYER_ACTION_REQUIRED":
            return _page("PayPal", "<h1>This order was already approved.</h1>")
        unit = order["purchase_units"][0]
        description = html.escape(unit.get("description") or "")
        body = f"""<h1>Pay with PayPal</h1><p class="note">{description}</p>
<div class="amount" data-testid="amount">${html.escape(unit["amount"]["value"])}</div>
<p class="note">Signed in as buyer@example.com (test buyer)</p>
<form method="post"><input type="hidden" name="token" value="{html.escape(order["id"])}">
<button class="primary" name="action" value="pay">Pay</button>
<button name="action" value="pending">Pay (held for review)</button>
<button name="action" value="fail">Fail (payment declined)</button>
<button name="action" value="cancel">Cancel and return</button></form>"""
        return _page("PayPal (simulator)", body)

    async def paypal_approve(self, request: web.Request) -> web.Response:
        form = await request.post()
        order = self.orders.get(str(form.get("token", "")))
        if order is None:
            raise web.HTTPNotFound()
        extra = self.order_extra[order["id"]]
        action = form.get("action")
        if action == "cancel":
            raise web.HTTPSeeOther(_with_query(extra["cancel_url"], token=order["id"]))
        if order["status"] == "PAYER_ACTION_REQUIRED":
            extra["outcome"] = {"pending": "PENDING", "fail": "DECLINED"}.get(
                str(action), "COMPLETED"
            )
            order["status"] = "APPROVED"
            order["payer"] = {"payer_id": "SIMPAYER01", "email_address": "buyer@example.com"}
            self.paypal_event("CHECKOUT.ORDER.APPROVED", "checkout-order", order, "Order approved")
        raise web.HTTPSeeOther(
            _with_query(extra["return_url"], token=order["id"], PayerID="SIMPAYER01")
        )

    def _refund_like(self, capture: JSON, value: Decimal) -> JSON:
        return {
            "id": _upper_id(17),
            "amount": {
                "currency_code": capture["amount"]["currency_code"],
                "value": f"{value:.2f}",
            },
            "status": "COMPLETED",
            "custom_id": capture.get("custom_id"),
            "invoice_id": capture.get("invoice_id"),
            "create_time": _iso(),
            "update_time": _iso(),
            "links": [
                {
                    "href": f"{self.config.public_base}/paypal/v2/payments/refunds/x",
                    "rel": "self",
                    "method": "GET",
                },
                {"href": self._capture_url(capture["id"]), "rel": "up", "method": "GET"},
            ],
        }

    async def paypal_capture_action(self, request: web.Request) -> web.Response:
        capture = self.captures.get(request.match_info["id"])
        if capture is None:
            raise web.HTTPNotFound()
        action = request.match_info["action"]
        data = await request.json() if request.can_read_body else {}
        total = Decimal(capture["amount"]["value"])
        if action == "refund":
            value = Decimal(str(data.get("amount") or total))
            refunded = capture.setdefault("_refunded", "0")
            capture["_refunded"] = str(Decimal(refunded) + value)
            capture["status"] = (
                "REFUNDED" if Decimal(capture["_refunded"]) >= total else "PARTIALLY_REFUNDED"
            )
            refund = self._refund_like(capture, value)
            self.paypal_event(
                "PAYMENT.CAPTURE.REFUNDED", "refund", refund, "A capture was refunded"
            )
            return web.json_response(refund)
        if action == "reverse":
            capture["status"] = "REVERSED"
            reversal = self._refund_like(capture, total)
            self.paypal_event(
                "PAYMENT.CAPTURE.REVERSED", "refund", reversal, "A capture was reversed"
            )
            return web.json_response(reversal)
        if action in {"complete", "deny"} and capture["status"] == "PENDING":
            capture["status"] = "COMPLETED" if action == "complete" else "DECLINED"
            capture.pop("status_details", None)
            event = (
                "PAYMENT.CAPTURE.COMPLETED" if action == "complete" else "PAYMENT.CAPTURE.DENIED"
            )
            self.paypal_event(event, "capture", capture, "Capture updated")
            return web.json_response(capture)
        return web.json_response({"error": "nothing to do"}, status=400)

    # == BTCPay =============================================================================

    def btcpay_route(
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
        invoice_id = _token("", 22)
        now = time.time()
        checkout = data.get("checkout") or {}
        invoice = {
            "id": invoice_id,
            "storeId": self.config.btcpay_store_id,
            "amount": f"{amount:.2f}",
            "currency": data.get("currency", "USD"),
            "type": "Standard",
            "checkoutLink": f"{self.config.public_base}/btcpay/i/{invoice_id}",
            "createdTime": int(now),
            "expirationTime": int(now + 60 * int(checkout.get("expirationMinutes", 15))),
            "monitoringExpiration": int(now + 3600 * 24),
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

    def _btc(self, usd: Decimal) -> str:
        return f"{(usd / Decimal('65000')).quantize(Decimal('0.00000001'))}"

    async def btcpay_checkout_page(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise web.HTTPNotFound()
        amount = Decimal(invoice["amount"])
        if invoice["status"] != "New":
            return _page("BTCPay", f"<h1>Invoice {html.escape(invoice['status'])}</h1>")
        body = f"""<h1>Pay with Bitcoin</h1>
<p class="note">{html.escape(str(invoice["metadata"].get("itemDesc", "")))}</p>
<div class="amount" data-testid="amount">${invoice["amount"]}</div>
<p class="note">{self._btc(amount)} BTC to bc1qsimulator0000000000000000000000000000</p>
<form method="post">
<button class="primary" name="action" value="pay">Pay</button>
<button name="action" value="partial">Partial (pay half, then let it expire)</button>
<button name="action" value="expire">Let it expire unpaid</button></form>"""
        return _page("BTCPay Server (simulator)", body)

    async def btcpay_checkout(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise web.HTTPNotFound()
        action = (await request.post()).get("action")
        amount = Decimal(invoice["amount"])
        if invoice["status"] == "New":
            payment = {
                "id": _token("", 64).lower(),
                "receivedDate": _now(),
                "value": self._btc(amount if action == "pay" else amount / 2),
                "fee": "0.0",
                "status": "Settled",
                "destination": "bc1qsimulator",
            }
            if action == "pay":
                invoice.update(status="Processing")
                self.btcpay_event(
                    "InvoiceReceivedPayment",
                    invoice,
                    afterExpiration=False,
                    paymentMethod="BTC-CHAIN",
                    payment=payment,
                )
                self.btcpay_event("InvoiceProcessing", invoice, overPaid=False)
                invoice.update(status="Settled")
                self.btcpay_event(
                    "InvoicePaymentSettled",
                    invoice,
                    afterExpiration=False,
                    paymentMethod="BTC-CHAIN",
                    payment=payment,
                )
                self.btcpay_event("InvoiceSettled", invoice, manuallyMarked=False, overPaid=False)
            elif action == "partial":
                invoice.update(additionalStatus="PaidPartial")
                self.btcpay_event(
                    "InvoiceReceivedPayment",
                    invoice,
                    afterExpiration=False,
                    paymentMethod="BTC-CHAIN",
                    payment=payment,
                )
                invoice.update(status="Expired")
                self.btcpay_event(
                    "InvoiceExpired",
                    invoice,
                    partiallyPaid=True,
                    paymentMethodPaid=payment["value"],
                )
            else:
                invoice.update(status="Expired")
                self.btcpay_event("InvoiceExpired", invoice, partiallyPaid=False)
        target = invoice["checkout"].get("redirectURL")
        raise web.HTTPSeeOther(target or f"/btcpay/i/{invoice['id']}")

    async def btcpay_pay_late(self, request: web.Request) -> web.Response:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise web.HTTPNotFound()
        invoice.update(status="Expired", additionalStatus="PaidLate")
        self.btcpay_event(
            "InvoiceReceivedPayment", invoice, afterExpiration=True, paymentMethod="BTC-CHAIN"
        )
        return web.json_response(invoice)

    # -- the app ----------------------------------------------------------------------------

    async def list_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [list(call) for call in self.calls]})

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if not request.path.startswith("/_sim/") and "/_sim/" not in request.path:
                self.calls.append((request.method, request.path))
            return await handler(request)

        app = web.Application(middlewares=[record])
        s, p, b = self.stripe_route, self.paypal_route, self.btcpay_route
        app.add_routes(
            [
                web.get("/_sim/health", self.health),
                web.get("/_sim/events", self.list_events),
                web.get("/_sim/calls", self.list_calls),
                web.post("/_sim/events/{id}/deliver", self.redeliver),
                web.post("/_sim/config", self.set_config),
                # Stripe API
                web.post("/stripe/v1/checkout/sessions", s(self.create_session)),
                web.get("/stripe/v1/checkout/sessions/{id}", s(self.get_session)),
                web.post("/stripe/v1/payment_intents", s(self.create_intent)),
                web.get("/stripe/v1/payment_intents/{id}", s(self.get_intent)),
                web.get("/stripe/v1/charges/{id}", s(self.get_charge)),
                web.post("/stripe/v1/customers", s(self.create_customer)),
                web.get("/stripe/v1/customers/{id}", s(self.get_customer)),
                web.get("/stripe/v1/payment_methods/{id}", s(self.get_method)),
                web.get("/stripe/pay/{id}", self.stripe_pay_page),
                web.post("/stripe/pay/{id}", self.stripe_pay),
                web.post("/stripe/_sim/refund", self.stripe_refund),
                web.post("/stripe/_sim/dispute", self.stripe_dispute),
                web.post("/stripe/_sim/disputes/{id}/close", self.stripe_close_dispute),
                web.post("/stripe/_sim/customers/{id}/decline", self.stripe_decline),
                web.post("/stripe/_sim/sessions/{id}/async", self.stripe_async),
                # PayPal API
                web.post("/paypal/v1/oauth2/token", self.paypal_token),
                web.post("/paypal/v2/checkout/orders", p(self.create_order)),
                web.get("/paypal/v2/checkout/orders/{id}", p(self.get_order)),
                web.post("/paypal/v2/checkout/orders/{id}/capture", p(self.capture_order)),
                web.get("/paypal/v2/payments/captures/{id}", p(self.get_capture)),
                web.post(
                    "/paypal/v1/notifications/verify-webhook-signature", p(self.verify_signature)
                ),
                web.get("/paypal/checkoutnow", self.paypal_approve_page),
                web.post("/paypal/checkoutnow", self.paypal_approve),
                web.post("/paypal/_sim/captures/{id}/{action}", self.paypal_capture_action),
                # BTCPay Greenfield API
                web.post("/btcpay/api/v1/stores/{store}/invoices", b(self.create_invoice)),
                web.get("/btcpay/api/v1/stores/{store}/invoices/{id}", b(self.get_invoice)),
                web.get("/btcpay/i/{id}", self.btcpay_checkout_page),
                web.post("/btcpay/i/{id}", self.btcpay_checkout),
                web.post("/btcpay/_sim/invoices/{id}/pay-late", self.btcpay_pay_late),
            ]
        )

        async def client(app: web.Application) -> Any:
            self.http = ClientSession(timeout=ClientTimeout(total=30))
            yield
            for task in list(self.tasks):
                task.cancel()
            await self.http.close()

        app.cleanup_ctx.append(client)
        return app


class RunningSimulator(NamedTuple):
    base_url: str
    simulator: Simulator
    stop: Callable[[], None]

    @property
    def settings(self) -> dict[str, str]:
        """The portal settings that point at this simulator."""
        c = self.simulator.config
        return {
            "STRIPE_SECRET_KEY": c.stripe_secret_key,
            "STRIPE_WEBHOOK_SECRET": c.stripe_webhook_secret,
            "STRIPE_API_BASE": f"{self.base_url}/stripe",
            "PAYPAL_CLIENT_ID": c.paypal_client_id,
            "PAYPAL_CLIENT_SECRET": c.paypal_client_secret,
            "PAYPAL_WEBHOOK_ID": c.paypal_webhook_id,
            "PAYPAL_API_BASE": f"{self.base_url}/paypal",
            "BTCPAY_URL": f"{self.base_url}/btcpay",
            "BTCPAY_API_KEY": c.btcpay_api_key,
            "BTCPAY_STORE_ID": c.btcpay_store_id,
            "BTCPAY_WEBHOOK_SECRET": c.btcpay_webhook_secret,
        }


def start_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    webhook_base: str = "http://127.0.0.1:8000",
    **config: Any,
) -> RunningSimulator:
    """Serve the simulators from a daemon thread; ``port=0`` picks a free port."""
    simulator = Simulator(Config(webhook_base=webhook_base, **config))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    async def start() -> web.AppRunner:
        runner = web.AppRunner(simulator.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(start())
        except BaseException as exc:
            outcome["error"] = exc
            ready.set()
            return
        outcome["port"] = runner.addresses[0][1]
        simulator.config.public_base = f"http://{host}:{outcome['port']}"
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    thread = threading.Thread(target=run, name="payment-simulators", daemon=True)
    thread.start()
    if not ready.wait(10) or "error" in outcome:
        raise RuntimeError("payment simulators did not start") from outcome.get("error")
    lock = threading.Lock()

    def stop() -> None:
        with lock:
            if not loop.is_closed() and loop.is_running():
                loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return RunningSimulator(simulator.config.public_base, simulator, stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.payments",
        description="Local Stripe, PayPal and BTCPay Server simulators (development only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument(
        "--webhook-base", default="http://127.0.0.1:8000", help="where the portal listens"
    )
    parser.add_argument(
        "--public-base", help="the URL people reach this at (default http://HOST:PORT)"
    )
    parser.add_argument(
        "--async-settle-seconds",
        type=float,
        default=5.0,
        help="when a 'bank debit' card payment settles by itself",
    )
    args = parser.parse_args(argv)
    config = Config.from_env(
        webhook_base=args.webhook_base,
        public_base=args.public_base or f"http://{args.host}:{args.port}",
        async_settle_seconds=args.async_settle_seconds,
    )
    print(
        f"Payment simulators on {config.public_base} (/stripe, /paypal, /btcpay); "
        f"webhooks to {config.webhook_base}",
        flush=True,
    )
    web.run_app(Simulator(config).app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
