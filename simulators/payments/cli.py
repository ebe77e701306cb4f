"""The command line: ``python -m simulators.payments --host 127.0.0.1 --port 8003
--webhook-base http://127.0.0.1:8000`` (see ``--help``).

Credentials are read from the same environment variables as the portal's
(``STRIPE_SECRET_KEY``, ...), with the defaults in :data:`~.common.DEFAULTS`.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from .common import Config
from .server import Simulator


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
