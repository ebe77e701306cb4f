"""What the three provider simulators share: their configuration, the webhook outbox, times and
the hosted pages' layout.

:class:`Outbox` keeps every webhook event as sent (body, headers, the status of each delivery),
delivers it with retries, or holds it while a test orders deliveries itself; it also answers the
``/_sim/events`` and ``/_sim/config`` hooks. Each provider module signs its own events and hands
them to :meth:`Outbox.emit`.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
        values: dict[str, Any] = {key.lower(): value for key, value in env.items()}
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


def now() -> int:
    return int(time.time())


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def page(title: str, body: str) -> web.Response:
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


class Outbox:
    """Every webhook event the simulators sent, and their delivery to the portal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.deliveries: list[Delivery] = []
        self.held: list[Delivery] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.http: ClientSession | None = None

    def spawn(self, coro: Awaitable[Any]) -> None:
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
            self.spawn(self._deliver_with_retries(delivery))
        else:
            self.held.append(delivery)
        return delivery

    async def send(self, delivery: Delivery) -> int:
        assert self.http is not None  # noqa: S101 - narrows for mypy: start() opens the session
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

    async def client(self, app: web.Application) -> AsyncIterator[None]:
        """The HTTP client that delivers, for as long as the app runs (a cleanup context)."""
        self.http = ClientSession(timeout=ClientTimeout(total=30))
        yield
        for task in list(self.tasks):
            task.cancel()
        await self.http.close()

    # -- the /_sim hooks ----------------------------------------------------------------------

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
