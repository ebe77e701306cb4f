"""Fixtures for the billing tests: the payment simulators (for real, over HTTP), the portal
settings pointing at them, and helpers to sign provider payloads with the test secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.core.cache import cache

from simulators.payments import RunningSimulator, start_in_thread

from .conftest import wait_until

STRIPE_SECRET = "whsec_tokenpapa_simulator"
BTCPAY_SECRET = "tokenpapa-simulator-webhook"


@pytest.fixture(scope="session")
def sim(live_server: Any) -> Iterator[RunningSimulator]:
    """The three payment simulators, sending their webhooks to the live test server."""
    server = start_in_thread(webhook_base=live_server.url, async_settle_seconds=None)
    yield server
    server.stop()


@pytest.fixture
def payments_on(sim: RunningSimulator, settings: Any, transactional_db: None) -> RunningSimulator:
    """Portal settings pointing at the simulators (as `make run` sets them)."""
    for name, value in sim.settings.items():
        setattr(settings, name, value)
    settings.TP_SITE_URL = "http://testserver"
    settings.TP_AUTO_TOPUP_RETRY_SECONDS = 0
    sim.simulator.config.auto_deliver = True
    sim.simulator.held.clear()
    # Events of earlier tests are not this test's.
    sim.simulator.mark = len(sim.simulator.deliveries)  # type: ignore[attr-defined]
    cache.clear()
    return sim


def sim_post(sim: RunningSimulator, path: str, **data: Any) -> dict[str, Any]:
    response = requests.post(f"{sim.base_url}{path}", json=data, timeout=10)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def sim_events(sim: RunningSimulator, **filters: str) -> list[dict[str, Any]]:
    """The events the simulator sent during this test."""
    response = requests.get(f"{sim.base_url}/_sim/events", params=filters, timeout=10)
    mark = getattr(sim.simulator, "mark", 0)
    return [e for e in response.json()["data"] if e["id"] > mark]


def sim_calls(sim: RunningSimulator) -> list[list[str]]:
    return requests.get(f"{sim.base_url}/_sim/calls", timeout=10).json()["data"]  # type: ignore[no-any-return]


def follow_pay_page(url: str, action: str, **fields: str) -> requests.Response:
    """Press a button on a simulator's hosted page, as a person would."""
    return requests.post(url, data={"action": action, **fields}, allow_redirects=False, timeout=10)


def delivered(sim: RunningSimulator, type_: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait until the simulator delivered ``count`` events of a type with a 2xx answer."""

    def done() -> list[dict[str, Any]] | None:
        events = [
            e for e in sim_events(sim, type=type_) if any(200 <= s < 300 for s in e["deliveries"])
        ]
        return events if len(events) >= count else None

    return wait_until(done, timeout=20)  # type: ignore[no-any-return]


def all_delivered(sim: RunningSimulator) -> None:
    """Wait until every event the simulator sent during this test had a 2xx answer."""

    def done() -> bool:
        return all(any(200 <= s < 300 for s in e["deliveries"]) for e in sim_events(sim))

    wait_until(done, timeout=20)


def stripe_sign(body: str, secret: str = STRIPE_SECRET, stamp: int | None = None) -> str:
    stamp = int(time.time()) if stamp is None else stamp
    mac = hmac.new(secret.encode(), f"{stamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def stripe_event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or f"evt_test_{time.time_ns()}",
            "object": "event",
            "api_version": "2025-06-30.basil",
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "type": type_,
        }
    )


def btcpay_sign(body: bytes, secret: str = BTCPAY_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def paypal_headers(sim: RunningSimulator, body: str) -> dict[str, str]:
    """Transmission headers the PayPal simulator's verification call accepts for ``body``."""
    tid = f"test-{time.time_ns()}"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = sim.simulator.config
    return {
        "PAYPAL-TRANSMISSION-ID": tid,
        "PAYPAL-TRANSMISSION-TIME": when,
        "PAYPAL-TRANSMISSION-SIG": sim.simulator.paypal_signature(
            tid, when, config.paypal_webhook_id, body
        ),
        "PAYPAL-CERT-URL": f"{config.public_base}/paypal/v1/notifications/certs/SIM",
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }


def usd(value: str) -> Decimal:
    return Decimal(value)
