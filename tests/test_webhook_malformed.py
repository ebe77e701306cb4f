"""Malformed input at the webhook endpoints, the leaked-key endpoint and the payment providers'
answers: a 4xx and nothing changed, never a traceback. Each test names a class of input that
answered 500 (or was accepted) before: non-ASCII or repeated header elements, certificate URLs
that are not PayPal's, bodies PostgreSQL cannot store or Python cannot parse, verified events
whose fields have the wrong type, and provider ids that another payment already holds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

import simulators.payments.ids
from billing import ledger
from billing.models import Payment, WebhookEvent
from billing.providers.base import ProviderError, cents
from billing.providers.paypal import PayPal
from core import keyformat
from keys.services import issue_key, issue_management_key

from .billing_fixtures import (
    btcpay_sign,
    follow_pay_page,
    payments_on,
    paypal_headers,
    sim,
    stripe_event,
    stripe_sign,
)
from .conftest import reauthenticated, signed_in
from .test_billing_topups import confirmed, start

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)

STRIPE, PAYPAL, BTCPAY = "/webhooks/stripe/", "/webhooks/paypal/", "/webhooks/btcpay/"
SCANNING = "/api/v1/secret-scanning/"


def post(path: str, body: bytes | str, **headers: str) -> Any:
    return Client().post(path, data=body, content_type="application/json", headers=headers)


def assert_nothing_stored(alice: Any) -> None:
    assert not WebhookEvent.objects.exists()
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had


# -- headers ----------------------------------------------------------------------------------

IGNORED_EVENT = stripe_event("customer.created", {"id": "cus_1", "object": "customer"}, "evt_h")


ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

STRIPE_HEADERS = {
    # compare_digest raises TypeError on non-ASCII text.
    "non-ASCII v1": lambda b, t: f"t={t},v1=\xe9{'0' * 63}",
    "latin-1 byte in v1": lambda b, t: stripe_sign(b, stamp=t).replace("v1=", "v1=\xff"),
    # The SDK reads the first t, the old code the last one.
    "repeated t, second not numeric": lambda b, t: stripe_sign(b, stamp=t) + ",t=abc",
    "repeated t, both numeric": lambda b, t: f"t={t}," + stripe_sign(b, stamp=t),
    # int() reads them; the signature is over ASCII digits.
    "non-ASCII digits in t": lambda b, t: stripe_sign(b, stamp=t).replace(
        f"t={t}", f"t={str(t).translate(ARABIC_DIGITS)}"
    ),
    "empty t": lambda b, t: "t=," + stripe_sign(b, stamp=t).split(",")[1],
    "an element without a value": lambda b, t: stripe_sign(b, stamp=t) + ",junk",
    "a header of 100 kB": lambda b, t: stripe_sign(b, stamp=t) + ",v1=" + "0" * 100_000,
}


@pytest.mark.parametrize("name", list(STRIPE_HEADERS))
def test_it_refuses_malformed_stripe_signature_headers(
    payments_on: Any, alice: Any, name: str
) -> None:
    signature = STRIPE_HEADERS[name](IGNORED_EVENT, int(time.time()))
    response = post(STRIPE, IGNORED_EVENT, **{"Stripe-Signature": signature})
    assert response.status_code == 400, response.content
    assert_nothing_stored(alice)


@pytest.mark.parametrize(
    "signature",
    ["sha256=\xe9" + "0" * 63, "sha256=\xff", "sha256=" + "a" * 100_000, "sha256=\u20ac"],
    ids=["non-ASCII", "latin-1 byte", "100 kB", "euro sign"],
)
def test_it_refuses_malformed_btcpay_signature_headers(
    payments_on: Any, alice: Any, signature: str
) -> None:
    body = json.dumps({"deliveryId": "d1", "type": "InvoiceCreated", "storeId": "x"})
    assert post(BTCPAY, body, **{"BTCPay-Sig": signature}).status_code == 400
    assert_nothing_stored(alice)


@pytest.fixture
def real_paypal(payments_on: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """PayPal's own host configured (not the simulator); every outbound call is recorded and
    refused, so a test sees whether anything was sent at all."""
    settings.PAYPAL_API_BASE = "https://api-m.sandbox.paypal.com"
    calls: list[str] = []

    def no_network(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        calls.append(url)
        raise ProviderError("no network in this test", retry=True)

    monkeypatch.setattr(PayPal, "request", no_network)
    return calls


PAYPAL_EVENT = json.dumps(
    {"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {"id": "C1"}}
)


def _paypal_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "PAYPAL-TRANSMISSION-ID": "0f0e0d0c-1",
        "PAYPAL-TRANSMISSION-TIME": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(b"x" * 256).decode(),
        "PAYPAL-CERT-URL": "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }
    return {**headers, **overrides}


@pytest.mark.parametrize(
    "cert_url",
    [
        "http://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        "https://[::1/v1/notifications/certs/CERT-1",
        "https://api.sandbox.paypal.com:99999/v1/notifications/certs/CERT-1",
        "https://api.sandbox.paypal.com:8443/v1/notifications/certs/CERT-1",
        "https://evil.example@api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1?next=https://evil.example",
        "https://api.sandbox.paypal.com.evil.example/v1/notifications/certs/CERT-1",
        "https://api.sandbox.paypal.com/v1/notifications/certs/\xe9",
        "https://api.sandbox.paypal.com",
        "ftp://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
    ],
)
def test_it_refuses_a_paypal_cert_url_off_paypal_before_any_call(
    real_paypal: list[str], alice: Any, cert_url: str
) -> None:
    response = post(PAYPAL, PAYPAL_EVENT, **_paypal_headers(**{"PAYPAL-CERT-URL": cert_url}))
    assert response.status_code == 400, response.content
    assert real_paypal == []
    assert_nothing_stored(alice)


@pytest.mark.parametrize(
    "header,value",
    [
        ("PAYPAL-TRANSMISSION-SIG", "\xe9" * 40),
        ("PAYPAL-TRANSMISSION-ID", "id\xff"),
        ("PAYPAL-AUTH-ALGO", "SHA256withRSA" * 500),
        ("PAYPAL-TRANSMISSION-TIME", "not a time"),
        ("PAYPAL-TRANSMISSION-TIME", "٢٠٢٥-01-01T00:00:00Z"),
    ],
)
def test_it_refuses_malformed_paypal_transmission_headers_before_any_call(
    real_paypal: list[str], alice: Any, header: str, value: str
) -> None:
    response = post(PAYPAL, PAYPAL_EVENT, **_paypal_headers(**{header: value}))
    assert response.status_code == 400, response.content
    assert real_paypal == []
    assert_nothing_stored(alice)


def test_a_well_formed_paypal_request_does_reach_paypals_verification(
    real_paypal: list[str], alice: Any
) -> None:
    # The control for the two tests above: these headers are refused for what they hold.
    assert post(PAYPAL, PAYPAL_EVENT, **_paypal_headers()).status_code == 503
    assert real_paypal and real_paypal[0].startswith("https://api-m.sandbox.paypal.com/")


# -- signed bodies that cannot be parsed or stored ---------------------------------------------

UNSTORABLE = {
    "nested 3000 deep": '{"id": "evt_deep", "type": "x", "data": {"object": {"a": '
    + "[" * 3000
    + "]" * 3000
    + "}}}",
    "a NUL in the id": '{"id": "evt_\\u0000", "type": "x", "data": {"object": {}}}',
    "a NUL in a value": '{"id": "evt_nul", "type": "x", "data": {"object": {"a": "\\u0000"}}}',
    "NaN": '{"id": "evt_nan", "type": "x", "data": {"object": {"a": NaN}}}',
    "1e999": '{"id": "evt_inf", "type": "x", "data": {"object": {"a": 1e999}}}',
    "a lone surrogate": '{"id": "evt_sur", "type": "x", "data": {"object": {"a": "\\ud800"}}}',
}


def _as_btcpay(body: str) -> str:
    return body.replace('"id":', '"deliveryId":', 1).replace('"data":', '"storeId": "x", "d":')


def _as_paypal(body: str) -> str:
    return body.replace('"type":', '"event_type":', 1).replace('"data":', '"resource":')


@pytest.mark.parametrize("name", list(UNSTORABLE))
@pytest.mark.parametrize("provider", ["stripe", "btcpay", "paypal"])
def test_it_refuses_signed_bodies_that_cannot_be_parsed_or_stored(
    payments_on: Any, alice: Any, provider: str, name: str
) -> None:
    body = UNSTORABLE[name]
    if provider == "stripe":
        response = post(STRIPE, body, **{"Stripe-Signature": stripe_sign(body)})
    elif provider == "btcpay":
        body = _as_btcpay(body)
        response = post(BTCPAY, body, **{"BTCPay-Sig": btcpay_sign(body.encode())})
    else:
        body = _as_paypal(body)
        response = post(PAYPAL, body, **paypal_headers(payments_on, body))
    assert response.status_code == 400, response.content
    assert_nothing_stored(alice)


# -- verified events whose fields have the wrong type ------------------------------------------


def _paid_session(payment: Payment, **overrides: Any) -> dict[str, Any]:
    return {
        "id": payment.checkout_id,
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": "pi_wrong_types",
        "amount_total": cents(payment.total),
        "currency": "usd",
        "metadata": {"tp_payment": str(payment.uuid)},
        **overrides,
    }


STRIPE_WRONG_TYPES = {
    "amount_total null": {"amount_total": None},
    "amount_total a string": {"amount_total": "1059"},
    "amount_total a float": {"amount_total": 1059.0},
    "amount_total a bool": {"amount_total": True},
    "amount_total negative": {"amount_total": -1059},
    "currency a number": {"currency": 5},
    "metadata a list": {"metadata": ["tp_payment"]},
    "payment_intent a list": {"payment_intent": ["pi_1"]},
    "payment_intent an object without id": {"payment_intent": {"object": "payment_intent"}},
}


@pytest.mark.parametrize("name", list(STRIPE_WRONG_TYPES))
def test_a_verified_stripe_event_of_the_wrong_shape_is_kept_failed_and_answered_400(
    payments_on: Any, alice: Any, alice_client: Client, name: str
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "stripe")
    session = _paid_session(payment, **STRIPE_WRONG_TYPES[name])
    body = stripe_event("checkout.session.completed", session, "evt_wrong")
    for _ in range(2):  # a redelivery fails the same way, and is answered the same way
        response = post(STRIPE, body, **{"Stripe-Signature": stripe_sign(body)})
        assert response.status_code == 400, response.content
    stored = WebhookEvent.objects.get(event_id="evt_wrong")
    assert stored.status == "failed" and stored.error.startswith("Malformed: ")
    assert stored.deliveries == 2
    assert Payment.objects.get(pk=payment.pk).status == "created"
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had


PAYPAL_WRONG_TYPES = {
    "amount NaN": {"amount": {"value": "NaN", "currency_code": "USD"}},
    "amount in exponent form": {"amount": {"value": "1e3", "currency_code": "USD"}},
    "amount a number": {"amount": {"value": 10.59, "currency_code": "USD"}},
    "amount a string": {"amount": "10.59"},
    "currency missing": {"amount": {"value": "10.59"}},
    "supplementary_data a string": {"supplementary_data": "x"},
    "related_ids a list": {"supplementary_data": {"related_ids": ["x"]}},
    "id a number": {"id": 12},
}


@pytest.mark.parametrize("name", list(PAYPAL_WRONG_TYPES))
def test_a_verified_paypal_event_of_the_wrong_shape_is_kept_failed_and_answered_400(
    payments_on: Any, alice: Any, alice_client: Client, name: str
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "paypal")
    capture = {
        "id": "CAPTUREWRONG01",
        "status": "COMPLETED",
        "custom_id": str(payment.uuid),
        "amount": {"value": str(payment.total), "currency_code": "USD"},
        **PAYPAL_WRONG_TYPES[name],
    }
    body = json.dumps(
        {"id": "WH-WRONG", "event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": capture}
    )
    response = post(PAYPAL, body, **paypal_headers(payments_on, body))
    assert response.status_code == 400, response.content
    stored = WebhookEvent.objects.get(event_id="WH-WRONG")
    assert stored.status == "failed" and stored.error.startswith("Malformed: ")
    assert Payment.objects.get(pk=payment.pk).status == "created"
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had


# -- leaked-key reports and the management API -------------------------------------------------


@pytest.fixture
def scanning(settings: Any) -> str:
    settings.TP_SECRET_SCANNING_HMAC_SECRET = "scanner-shared-secret"
    return "scanner-shared-secret"


def _scan_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "signature", ["sha256=\xe9" + "0" * 63, "sha256=\xff", "sha256=" + "0" * 100_000]
)
def test_it_refuses_a_malformed_scanner_signature(
    alice: Any, scanning: str, signature: str
) -> None:
    key, secret = issue_key(account=alice.account, name="safe")
    body = json.dumps([{"token": secret}]).encode()
    assert post(SCANNING, body, **{"X-Signature": signature}).status_code == 401
    key.refresh_from_db()
    assert key.is_active


def test_it_refuses_a_signed_report_nested_too_deep(alice: Any, scanning: str) -> None:
    body = ("[" * 5000 + "]" * 5000).encode()
    response = post(SCANNING, body, **{"X-Signature": _scan_sign(scanning, body)})
    assert response.status_code == 400


def test_a_candidate_with_a_non_ascii_checksum_is_a_false_positive(
    alice: Any, scanning: str
) -> None:
    key, secret = issue_key(account=alice.account, name="safe")
    garbled = secret[:-1] + "\xe9"
    body = json.dumps([{"token": garbled}]).encode()
    response = post(SCANNING, body, **{"X-Signature": _scan_sign(scanning, body)})
    assert response.status_code == 200
    assert response.json()[0]["label"] == "false_positive"
    key.refresh_from_db()
    assert key.is_active


def test_a_management_key_with_a_non_ascii_checksum_is_refused(alice: Any) -> None:
    _, secret = issue_management_key(account=alice.account, name="scripts")
    garbled = secret[:-1] + "\xe9"
    response = Client().get("/api/v1/keys/", headers={"Authorization": f"Bearer {garbled}"})
    assert response.status_code == 401
    assert (
        Client().get("/api/v1/keys/", headers={"Authorization": f"Bearer {secret}"}).status_code
        == 200
    )
    assert not keyformat.is_well_formed(garbled, keyformat.MANAGEMENT_PREFIX)


# -- a provider's id that another payment already holds ----------------------------------------


def _next_id_is(monkeypatch: pytest.MonkeyPatch, provider: str, value: str) -> None:
    """The simulator's next id for a new checkout is ``value``: as when it restarted and
    counted from the start again, or a replayed answer."""
    name = "upper_id" if provider == "paypal" else "token"
    original = getattr(simulators.payments.ids, name)
    used = []

    def once(*args: Any, **kwargs: Any) -> str:
        wanted = {
            "stripe": args[:1] == ("cs_test_a1",),
            "btcpay": args[:2] == ("", 22),
            "paypal": args[:1] == (17,),
        }[provider]
        if wanted and not used:
            used.append(value)
            return value
        return original(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(simulators.payments.ids, name, once)


@pytest.mark.parametrize("provider", ["stripe", "paypal", "btcpay"])
def test_it_stops_a_top_up_whose_provider_id_is_another_payments(
    payments_on: Any,
    alice: Any,
    alice_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
) -> None:
    first = start(alice_client, provider)
    _next_id_is(monkeypatch, provider, first.checkout_id)
    amount = {"amount": "10", "provider": provider, "save_card": ""}
    response = alice_client.post(reverse("billing_topup_start"), amount, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("billing")
    assert "answered with the reference of another payment" in response.content.decode()
    second = Payment.objects.latest("created_at")
    assert second.pk != first.pk and second.status == "failed" and second.checkout_id == ""
    first.refresh_from_db()
    assert first.status == "created" and first.checkout_id
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had


def test_a_payment_confirmed_with_another_payments_intent_is_flagged_not_credited(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    first = start(alice_client, "stripe")
    follow_pay_page(first.checkout_url, "pay")
    first = confirmed(first)
    second = start(alice_client, "stripe")
    session = _paid_session(second, payment_intent=first.provider_payment_id)
    body = stripe_event("checkout.session.completed", session, "evt_replayed_intent")
    response = post(STRIPE, body, **{"Stripe-Signature": stripe_sign(body)})
    assert response.status_code == 200, response.content
    second.refresh_from_db()
    assert second.status == "needs_review" and "another payment" in second.status_detail
    assert ledger.balance(alice.account) == Decimal("20")  # her $10 and the first $10, once


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 3 * 1024 * 1024])
@pytest.mark.parametrize("path", [STRIPE, PAYPAL, BTCPAY, SCANNING])
def test_it_refuses_oversized_bodies(
    payments_on: Any, alice: Any, scanning: str, path: str, size: int
) -> None:
    body = b'{"id": "' + b"x" * size + b'"}'
    headers = {"Stripe-Signature": stripe_sign(body.decode()), "BTCPay-Sig": btcpay_sign(body)}
    headers["X-Signature"] = _scan_sign(scanning, body)
    response = post(path, body, **headers)
    assert 400 <= response.status_code < 500
    assert_nothing_stored(alice)


# -- a malformed form ----------------------------------------------------------------------------


def test_a_malformed_management_key_form_is_refused_not_a_500(alice: Any) -> None:
    client = reauthenticated(signed_in(alice))
    key, _ = issue_management_key(account=alice.account, name="keep")
    # str.isdigit() says yes to "²" (int() then raises) and to "١" (int() reads 1).
    for value in ("\u00b2", "\u0661", str(key.pk) + "\u00b2", "9" * 40):
        assert client.post(reverse("management_keys"), {"revoke": value}).status_code == 404
    assert client.post(reverse("management_keys"), {"name": "a\x00b"}).status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is None
    assert sorted(alice.account.management_keys.values_list("name", flat=True)) == ["ab", "keep"]
