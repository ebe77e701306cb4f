"""The payment simulators' HTTP server: the three providers in one app, the ``/_sim`` hooks, and
running it in a thread for the tests.

:class:`Simulator` owns the configuration, the webhook :class:`~.common.Outbox` and one object per
provider, and assembles their routes; every API call it receives is recorded (``/_sim/calls``)
for tests that check none was made.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler

from .btcpay import BTCPay
from .common import JSON, Config, Delivery, Outbox
from .paypal import PayPal
from .stripe import Stripe


class Simulator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.outbox = Outbox(config)
        self.stripe = Stripe(config, self.outbox)
        self.paypal = PayPal(config, self.outbox)
        self.btcpay = BTCPay(config, self.outbox)
        #: Every API call received (method, path), for tests that check none was made.
        self.calls: list[tuple[str, str]] = []

    # What the tests read of the simulators' state, under the names they have always used.

    @property
    def deliveries(self) -> list[Delivery]:
        return self.outbox.deliveries

    @property
    def held(self) -> list[Delivery]:
        return self.outbox.held

    @property
    def sessions(self) -> dict[str, JSON]:
        return self.stripe.sessions

    @property
    def orders(self) -> dict[str, JSON]:
        return self.paypal.orders

    def paypal_signature(self, tid: str, when: str, webhook_id: str, raw: str) -> str:
        return self.paypal.signature(tid, when, webhook_id, raw)

    # -- the /_sim hooks of its own -----------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [list(call) for call in self.calls]})

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.path.startswith("/_sim/") and "/_sim/" not in request.path:
                self.calls.append((request.method, request.path))
            return await handler(request)

        app = web.Application(middlewares=[record])
        app.add_routes(
            [
                web.get("/_sim/health", self.health),
                web.get("/_sim/events", self.outbox.list_events),
                web.get("/_sim/calls", self.list_calls),
                web.post("/_sim/events/{id}/deliver", self.outbox.redeliver),
                web.post("/_sim/config", self.outbox.set_config),
                *self.stripe.routes(),
                *self.paypal.routes(),
                *self.btcpay.routes(),
            ]
        )
        app.cleanup_ctx.append(self.outbox.client)
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
