"""Webhooks: bad input changes nothing and calls nobody; one event delivered twenty times at
once credits once; events out of order end at the right balance; failed events replay."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from billing import ledger, webhooks
from billing.models import LedgerEntry, Payment, WebhookEvent

from .billing_fixtures import (
    all_delivered,
    btcpay_sign,
    follow_pay_page,
    payments_on,
    sim,
    sim_calls,
    sim_events,
    sim_post,
    stripe_event,
    stripe_sign,
)
from .conftest import wait_until
from .test_billing_topups import start

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)


def topups(account: Any) -> int:
    return LedgerEntry.objects.filter(account=account, kind="topup").count()


def held_event(sim: Any, type_: str) -> dict[str, Any]:
    return next(e for e in sim_events(sim, type=type_))


def post(url: str, event: dict[str, Any]) -> int:
    response = requests.post(url, data=event["body"].encode(), headers=event["headers"], timeout=30)
    return response.status_code


# -- bad input: 4xx, nothing stored, nothing credited, no outbound call ----------------------


@pytest.fixture
def paid_stripe_session(payments_on: Any, alice_client: Client) -> tuple[Payment, dict[str, Any]]:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "stripe")
    follow_pay_page(payment.checkout_url, "pay")
    return payment, held_event(payments_on, "checkout.session.completed")


def _refused(client: Client, path: str, body: bytes | str, **headers: str) -> None:
    response = client.post(path, data=body, content_type="application/json", headers=headers)
    assert response.status_code == 400, response.content


def test_stripe_bad_signatures_change_nothing(
    payments_on: Any, alice: Any, paid_stripe_session: Any
) -> None:
    _, event = paid_stripe_session
    body = event["body"]
    calls = len(sim_calls(payments_on))
    client = Client()
    path = "/webhooks/stripe/"
    _refused(client, path, body)  # no header
    _refused(client, path, body, **{"Stripe-Signature": "t=1,v1=deadbeef"})
    _refused(client, path, body, **{"Stripe-Signature": stripe_sign(body, "whsec_wrong")})
    _refused(
        client, path, body, **{"Stripe-Signature": stripe_sign(body, stamp=int(time.time()) - 3600)}
    )
    _refused(
        client, path, body, **{"Stripe-Signature": stripe_sign(body, stamp=int(time.time()) + 3600)}
    )
    # Re-serialised (same data, other bytes) under the original signature.
    reserialised = json.dumps(json.loads(body), separators=(",", ":"))
    _refused(
        client, path, reserialised, **{"Stripe-Signature": event["headers"]["Stripe-Signature"]}
    )
    # A tampered amount under the original signature.
    tampered = body.replace('"amount_total": 1059', '"amount_total": 1059000')
    assert tampered != body
    _refused(client, path, tampered, **{"Stripe-Signature": event["headers"]["Stripe-Signature"]})
    # Signed, but not JSON / not an event.
    _refused(client, path, "not json", **{"Stripe-Signature": stripe_sign("not json")})
    _refused(client, path, "[1, 2]", **{"Stripe-Signature": stripe_sign("[1, 2]")})
    assert client.get(path).status_code == 405
    assert len(sim_calls(payments_on)) == calls
    assert not WebhookEvent.objects.exists()
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had


def test_stripe_unknown_types_are_stored_as_ignored(payments_on: Any) -> None:
    body = stripe_event("customer.created", {"id": "cus_1", "object": "customer"}, "evt_unknown")
    client = Client()
    for _ in range(2):
        response = client.post(
            "/webhooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": stripe_sign(body)},
        )
        assert response.status_code == 200
    event = WebhookEvent.objects.get(event_id="evt_unknown")
    assert event.status == "ignored" and event.deliveries == 2


def test_btcpay_bad_signatures_change_nothing(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "btcpay")
    follow_pay_page(payment.checkout_url, "pay")
    event = held_event(payments_on, "InvoiceSettled")
    body = event["body"].encode()
    calls = len(sim_calls(payments_on))
    client = Client()
    path = "/webhooks/btcpay/"
    _refused(client, path, body)
    _refused(client, path, body, **{"BTCPay-Sig": "sha256=00"})
    _refused(client, path, body, **{"BTCPay-Sig": btcpay_sign(body, "wrong secret")})
    _refused(client, path, body, **{"BTCPay-Sig": btcpay_sign(body).replace("sha256=", "sha1=")})
    reserialised = json.dumps(json.loads(body), indent=1).encode()
    _refused(client, path, reserialised, **{"BTCPay-Sig": event["headers"]["BTCPay-Sig"]})
    _refused(client, path, b"{oops", **{"BTCPay-Sig": btcpay_sign(b"{oops")})
    assert len(sim_calls(payments_on)) == calls
    assert not WebhookEvent.objects.exists() and ledger.balance(alice.account) == Decimal("10")
    unknown = json.dumps({"deliveryId": "d1", "type": "InvoiceCreated", "storeId": "x"}).encode()
    response = client.post(
        path,
        data=unknown,
        content_type="application/json",
        headers={"BTCPay-Sig": btcpay_sign(unknown)},
    )
    assert response.status_code == 200
    assert WebhookEvent.objects.get(event_id="d1").status == "ignored"


def test_paypal_bad_signatures_change_nothing(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "paypal")
    follow_pay_page(payment.checkout_url, "pay", token=payment.checkout_id)
    event = held_event(payments_on, "CHECKOUT.ORDER.APPROVED")
    body, headers = event["body"], event["headers"]
    client = Client()
    path = "/webhooks/paypal/"
    calls = len(sim_calls(payments_on))
    # Refused here, before any outbound call: missing headers, stale time, foreign cert URL.
    _refused(client, path, body)
    for name in ["PAYPAL-TRANSMISSION-SIG", "PAYPAL-TRANSMISSION-ID", "PAYPAL-CERT-URL"]:
        _refused(client, path, body, **{k: v for k, v in headers.items() if k != name})
    _refused(client, path, body, **{**headers, "PAYPAL-TRANSMISSION-TIME": "2020-01-01T00:00:00Z"})
    _refused(client, path, body, **{**headers, "PAYPAL-CERT-URL": "https://evil.example/cert.pem"})
    _refused(client, path, "not json", **headers)
    assert len(sim_calls(payments_on)) == calls
    # Refused by PayPal's verification call, and nothing else is called.
    _refused(
        client,
        path,
        body,
        **{**headers, "PAYPAL-TRANSMISSION-SIG": "AAAA" + headers["PAYPAL-TRANSMISSION-SIG"][4:]},
    )
    _refused(client, path, json.dumps(json.loads(body), indent=2), **headers)
    _refused(client, path, body.replace(payment.checkout_id, "OTHERORDER0000000"), **headers)
    made = {p for _, p in sim_calls(payments_on)[calls:]}
    assert "/paypal/v1/notifications/verify-webhook-signature" in made
    assert made <= {
        "/paypal/v1/oauth2/token",
        "/paypal/v1/notifications/verify-webhook-signature",
    }
    assert not WebhookEvent.objects.exists() and ledger.balance(alice.account) == Decimal("10")


# -- the same event twenty times at once: one credit --------------------------------------------


@pytest.mark.parametrize(
    "provider,event_type,action",
    [
        ("stripe", "checkout.session.completed", "pay"),
        ("btcpay", "InvoiceSettled", "pay"),
        ("paypal", "CHECKOUT.ORDER.APPROVED", "pay"),
    ],
)
def test_one_event_delivered_twenty_times_at_once_credits_once(
    payments_on: Any,
    alice: Any,
    alice_client: Client,
    live_server: Any,
    provider: str,
    event_type: str,
    action: str,
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, provider)
    follow_pay_page(payment.checkout_url, action, token=payment.checkout_id)
    event = held_event(payments_on, event_type)
    url = f"{live_server.url}/webhooks/{provider}/"
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: post(url, event), range(20)))
    assert statuses == [200] * 20
    assert topups(alice.account) == 1
    assert ledger.balance(alice.account) == Decimal("20")  # her $10 and the $10 top-up
    stored = WebhookEvent.objects.get(provider=provider, type=event_type)
    assert stored.status == "processed" and stored.deliveries == 20
    # Every other event of that payment, also twenty times each: still one credit.
    others = [e for e in sim_events(payments_on) if e["type"] != event_type]
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda e: post(url, e), others * 20))
    assert topups(alice.account) == 1
    payments_on.simulator.held.clear()


# -- out of order ---------------------------------------------------------------------------------


def test_a_refund_before_the_completion_ends_at_the_right_balance(
    payments_on: Any, alice: Any, alice_client: Client, live_server: Any
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "stripe", "20")
    follow_pay_page(payment.checkout_url, "pay")
    intent = payments_on.simulator.sessions[payment.checkout_id]["payment_intent"]
    sim_post(payments_on, "/stripe/_sim/refund", payment_intent=intent, amount=500)
    sim_post(payments_on, "/stripe/_sim/refund", payment_intent=intent, amount=700)
    events = sim_events(payments_on)
    url = f"{live_server.url}/webhooks/stripe/"
    # Newest first: the second refund (cumulative $12), the first ($5), then the success.
    for event in reversed(events):
        assert post(url, event) == 200
    assert ledger.balance(alice.account) == Decimal("18")  # 10 + 20 − 12
    assert topups(alice.account) == 1
    payments_on.simulator.held.clear()


def test_a_dispute_won_before_its_withdrawal_arrives_nets_to_zero(
    payments_on: Any, alice: Any, alice_client: Client, live_server: Any
) -> None:
    payment = start(alice_client, "stripe", "20")
    follow_pay_page(payment.checkout_url, "pay")
    wait_until(lambda: Payment.objects.get(pk=payment.pk).status == "confirmed")
    all_delivered(payments_on)  # the payment's own events, before the dispute's are held
    payments_on.simulator.config.auto_deliver = False
    intent = Payment.objects.get(pk=payment.pk).provider_payment_id
    dispute = sim_post(payments_on, "/stripe/_sim/dispute", payment_intent=intent, fee=1500)
    sim_post(
        payments_on,
        f"/stripe/_sim/disputes/{dispute['id']}/close",
        outcome="won",
        fee_returned=1500,
    )
    url = f"{live_server.url}/webhooks/stripe/"
    for event in reversed([e for e in sim_events(payments_on) if "dispute" in e["type"]]):
        assert post(url, event) == 200
    assert ledger.balance(alice.account) == Decimal("30")  # her $10 and the $20 top-up
    payments_on.simulator.held.clear()


# -- failures are stored and replayed -------------------------------------------------------------


def test_a_failed_event_is_stored_with_its_error_and_replays(
    payments_on: Any, alice: Any, alice_client: Client, live_server: Any, settings: Any
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "btcpay")
    follow_pay_page(payment.checkout_url, "pay")
    event = held_event(payments_on, "InvoiceSettled")
    settings.BTCPAY_URL = "http://127.0.0.1:9"  # BTCPay down: the handler cannot read the invoice
    response = Client().post(
        "/webhooks/btcpay/",
        data=event["body"],
        content_type="application/json",
        headers={"BTCPay-Sig": event["headers"]["BTCPay-Sig"]},
    )
    assert response.status_code == 500  # retry wanted
    stored = WebhookEvent.objects.get(type="InvoiceSettled")
    assert stored.status == "failed" and "ProviderError" in stored.error
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had
    with pytest.raises(CommandError):
        call_command("replayevents", stdout=io.StringIO(), stderr=io.StringIO())
    settings.BTCPAY_URL = payments_on.settings["BTCPAY_URL"]
    out = io.StringIO()
    call_command("replayevents", stdout=out)
    assert "processed" in out.getvalue()
    assert ledger.balance(alice.account) == Decimal("20")
    # Replaying again (admin action, command) never credits twice.
    webhooks.replay(list(WebhookEvent.objects.all()))
    call_command("replayevents", stored.event_id, stdout=io.StringIO())
    assert topups(alice.account) == 1
    payments_on.simulator.held.clear()
