"""PayPal's Orders v2, as far as the portal uses it (``PAYPAL_API_BASE=<this>/paypal``).

``POST /v1/oauth2/token``, ``POST /v2/checkout/orders`` (intent CAPTURE, ``PayPal-Request-Id``
honoured), ``GET /v2/checkout/orders/{id}``, ``POST /v2/checkout/orders/{id}/capture``,
``GET /v2/payments/captures/{id}`` and ``POST /v1/notifications/verify-webhook-signature``,
which checks the transmission signature over ``id|time|webhook_id|crc32(raw event)`` (so a
re-serialised event fails, as at PayPal). Approval page: ``/paypal/checkoutnow?token={order}``.

Operator actions: ``POST /paypal/_sim/captures/{id}/{refund,reverse,complete,deny}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import zlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from . import ids
from .common import JSON, Config, Delivery, Outbox, iso, page


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class PayPal:
    """PayPal's access tokens, orders and captures, and their handlers."""

    def __init__(self, config: Config, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.tokens: set[str] = set()
        self.orders: dict[str, JSON] = {}
        self.order_extra: dict[str, JSON] = {}
        self.captures: dict[str, JSON] = {}
        self.idempotency: dict[str, tuple[int, JSON]] = {}

    def _key(self, webhook_id: str) -> bytes:
        return hashlib.sha256(
            f"paypal-sim|{webhook_id}|{self.config.paypal_client_secret}".encode()
        ).digest()

    def signature(self, tid: str, when: str, webhook_id: str, raw: str) -> str:
        message = f"{tid}|{when}|{webhook_id}|{zlib.crc32(raw.encode())}"
        digest = hmac.new(self._key(webhook_id), message.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def event(self, type_: str, resource_type: str, resource: JSON, summary: str) -> Delivery:
        event = {
            "id": "WH-" + ids.upper_id(17) + "-" + ids.upper_id(17),
            "event_version": "1.0",
            "create_time": iso(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": type_,
            "summary": summary,
            "resource": json.loads(json.dumps(resource)),
            "links": [],
        }
        body = json.dumps(event)
        tid = ids.token("", 8) + "-" + ids.token("", 4)
        when = iso()
        return self.outbox.emit(
            "paypal",
            type_,
            body,
            {
                "PAYPAL-TRANSMISSION-ID": tid,
                "PAYPAL-TRANSMISSION-TIME": when,
                "PAYPAL-TRANSMISSION-SIG": self.signature(
                    tid, when, self.config.paypal_webhook_id, body
                ),
                "PAYPAL-CERT-URL": f"{self.config.public_base}/paypal/v1/notifications/certs/SIM",
                "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            },
        )

    @staticmethod
    def error(status: int, name: str, issue: str, message: str) -> web.Response:
        return web.json_response(
            {
                "name": name,
                "message": message,
                "debug_id": ids.token("", 13).lower(),
                "details": [{"issue": issue, "description": message}],
            },
            status=status,
        )

    async def oauth_token(self, request: web.Request) -> web.Response:
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
        token = ids.token("A21AA", 80)
        self.tokens.add(token)
        return web.json_response(
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-SIMULATOR",
                "expires_in": 32400,
                "nonce": iso() + ids.token("", 20),
            }
        )

    def api(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return web.json_response(
                    {
                        "error": "invalid_token",
                        "error_description": "Token signature verification failed",
                    },
                    status=401,
                )
            key = request.headers.get("PayPal-Request-Id")
            scope = f"{request.path}|{key}"
            if request.method == "POST" and key and scope in self.idempotency:
                status, data = self.idempotency[scope]
                return web.json_response(data, status=200 if status == 201 else status)
            response = await handler(request)
            if request.method == "POST" and key and response.status < 500:
                assert isinstance(response.body, bytes)  # noqa: S101 - narrows json_response for mypy
                self.idempotency[scope] = (response.status, json.loads(response.body))
            return response

        return route

    # -- orders and captures ------------------------------------------------------------------

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
            return self.error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "Bad order.")
        if data.get("intent") != "CAPTURE":
            return self.error(422, "UNPROCESSABLE_ENTITY", "INTENT_NOT_SUPPORTED", "CAPTURE only.")
        context = (
            ((data.get("payment_source") or {}).get("paypal") or {}).get("experience_context")
            or data.get("application_context")
            or {}
        )
        if not context.get("return_url"):
            return self.error(
                422, "UNPROCESSABLE_ENTITY", "MISSING_REQUIRED_PARAMETER", "return_url"
            )
        order_id = ids.upper_id(17)
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
            "create_time": iso(),
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
            return self.error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No order.")
        return web.json_response(order)

    async def capture_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self.error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No order.")
        if order["status"] == "COMPLETED":
            return self.error(
                422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED", "Order already captured."
            )
        if order["status"] != "APPROVED":
            return self.error(
                422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED", "Payer has not approved."
            )
        extra = self.order_extra[order["id"]]
        if extra["outcome"] == "DECLINED":
            return self.error(
                422, "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED", "The instrument was declined."
            )
        unit = order["purchase_units"][0]
        capture_id = ids.upper_id(17)
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
            "create_time": iso(),
            "update_time": iso(),
        }
        if extra["outcome"] == "PENDING":
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        self.captures[capture_id] = capture
        unit["payments"] = {"captures": [capture]}
        order["status"] = "COMPLETED"
        order["payer"] = {"payer_id": "SIMPAYER01", "email_address": "buyer@example.com"}
        event = {"COMPLETED": "PAYMENT.CAPTURE.COMPLETED", "PENDING": "PAYMENT.CAPTURE.PENDING"}
        self.event(event[extra["outcome"]], "capture", capture, "Payment captured")
        return web.json_response(order, status=201)

    def _capture_url(self, capture_id: str) -> str:
        return f"{self.config.public_base}/paypal/v2/payments/captures/{capture_id}"

    async def get_capture(self, request: web.Request) -> web.Response:
        capture = self.captures.get(request.match_info["id"])
        if capture is None:
            return self.error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No capture.")
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
            return self.error(400, "INVALID_REQUEST", "MALFORMED_REQUEST_JSON", "Bad request.")
        ok = fields["webhook_id"] == self.config.paypal_webhook_id and hmac.compare_digest(
            self.signature(
                fields["transmission_id"],
                fields["transmission_time"],
                fields["webhook_id"],
                raw_event,
            ),
            fields["transmission_sig"],
        )
        return web.json_response({"verification_status": "SUCCESS" if ok else "FAILURE"})

    # -- the approval page --------------------------------------------------------------------

    async def approve_page(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.query.get("token", ""))
        if order is None:
            raise web.HTTPNotFound()
        if order["status"] != "PAYER_ACTION_REQUIRED":
            return page("PayPal", "<h1>This order was already approved.</h1>")
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
        return page("PayPal (simulator)", body)

    async def approve(self, request: web.Request) -> web.Response:
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
            self.event("CHECKOUT.ORDER.APPROVED", "checkout-order", order, "Order approved")
        raise web.HTTPSeeOther(
            _with_query(extra["return_url"], token=order["id"], PayerID="SIMPAYER01")
        )

    # -- what the dashboard (or the bank) does --------------------------------------------------

    def _refund_like(self, capture: JSON, value: Decimal) -> JSON:
        return {
            "id": ids.upper_id(17),
            "amount": {
                "currency_code": capture["amount"]["currency_code"],
                "value": f"{value:.2f}",
            },
            "status": "COMPLETED",
            "custom_id": capture.get("custom_id"),
            "invoice_id": capture.get("invoice_id"),
            "create_time": iso(),
            "update_time": iso(),
            "links": [
                {
                    "href": f"{self.config.public_base}/paypal/v2/payments/refunds/x",
                    "rel": "self",
                    "method": "GET",
                },
                {"href": self._capture_url(capture["id"]), "rel": "up", "method": "GET"},
            ],
        }

    async def capture_action(self, request: web.Request) -> web.Response:
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
            self.event("PAYMENT.CAPTURE.REFUNDED", "refund", refund, "A capture was refunded")
            return web.json_response(refund)
        if action == "reverse":
            capture["status"] = "REVERSED"
            reversal = self._refund_like(capture, total)
            self.event("PAYMENT.CAPTURE.REVERSED", "refund", reversal, "A capture was reversed")
            return web.json_response(reversal)
        if action in {"complete", "deny"} and capture["status"] == "PENDING":
            capture["status"] = "COMPLETED" if action == "complete" else "DECLINED"
            capture.pop("status_details", None)
            event = (
                "PAYMENT.CAPTURE.COMPLETED" if action == "complete" else "PAYMENT.CAPTURE.DENIED"
            )
            self.event(event, "capture", capture, "Capture updated")
            return web.json_response(capture)
        return web.json_response({"error": "nothing to do"}, status=400)

    def routes(self) -> list[web.RouteDef]:
        api = self.api
        return [
            web.post("/paypal/v1/oauth2/token", self.oauth_token),
            web.post("/paypal/v2/checkout/orders", api(self.create_order)),
            web.get("/paypal/v2/checkout/orders/{id}", api(self.get_order)),
            web.post("/paypal/v2/checkout/orders/{id}/capture", api(self.capture_order)),
            web.get("/paypal/v2/payments/captures/{id}", api(self.get_capture)),
            web.post(
                "/paypal/v1/notifications/verify-webhook-signature", api(self.verify_signature)
            ),
            web.get("/paypal/checkoutnow", self.approve_page),
            web.post("/paypal/checkoutnow", self.approve),
            web.post("/paypal/_sim/captures/{id}/{action}", self.capture_action),
        ]
