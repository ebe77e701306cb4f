"""Fuzzing every webhook endpoint (Stripe, PayPal, BTCPay, leaked-key reports): arbitrary header
values and bodies, and bodies of arbitrary shape signed for real, so that the code after
verification runs on them too. No answer is a 5xx and no payment or ledger entry changes.

The PayPal simulator verifies PayPal's signatures, as PayPal's own API would; the events name
no payment of ours, so what the handlers read is fuzzed while nothing may be credited."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import LedgerEntry, Payment, WebhookEvent
from billing.providers.btcpay import BTCPay
from billing.providers.paypal import PayPal
from billing.providers.stripe import Stripe
from core import keyformat
from keys.models import ApiKey
from keys.services import issue_key

from .billing_fixtures import btcpay_sign, payments_on, paypal_headers, sim, stripe_sign
from .test_billing_topups import start

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SCANNER_SECRET = "scanner-shared-secret"

# -- values -----------------------------------------------------------------------------------

# What WSGI can hand over (latin-1), anything at all, and the edge lengths.
header_values = st.one_of(
    st.text(st.characters(codec="latin-1"), max_size=80),
    st.text(max_size=40),
    st.just(""),
    st.builds(lambda c, n: c * n, st.characters(codec="latin-1"), st.integers(2_000, 20_000)),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
deep = st.integers(50, 5_000).map(lambda n: "[" * n + "]" * n)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    deep.map(str.encode),
    st.sampled_from(
        [b"", b"null", b"[]", b"{}", b"NaN", b'{"a": 1e999}', b'"\\u0000"', b'"\\ud800"']
    ),
)


def mutated(value: str) -> st.SearchStrategy[str]:
    """A valid-looking value with one part changed: a character swapped, cut, or doubled."""
    return st.one_of(
        st.tuples(st.integers(0, max(0, len(value) - 1)), st.characters(codec="latin-1")).map(
            lambda p: value[: p[0]] + p[1] + value[p[0] + 1 :]
        ),
        st.integers(0, len(value)).map(lambda n: value[:n]),
        st.just(value + value),
        st.just(value.upper()),
    )


def objects_with(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A provider object carrying the fields its handlers read, each of any JSON type."""
    return st.fixed_dictionaries({}, optional={name: json_values for name in fields})


# -- the state that must not change ----------------------------------------------------------


@pytest.fixture
def state(payments_on: Any, alice: Any, alice_client: Client, settings: Any) -> Any:
    """One open payment per provider and a live key, then a snapshot taker."""
    settings.TP_SECRET_SCANNING_HMAC_SECRET = SCANNER_SECRET
    payments_on.simulator.config.auto_deliver = False
    for provider in ("stripe", "paypal", "btcpay"):
        start(alice_client, provider)
    _, secret = issue_key(account=alice.account, name="fuzzed")

    def snapshot() -> Any:
        return (
            list(LedgerEntry.objects.order_by("pk").values_list("pk", "amount")),
            list(
                Payment.objects.order_by("pk").values_list(
                    "pk", "status", "checkout_id", "provider_payment_id", "credited"
                )
            ),
            list(ApiKey.objects.order_by("pk").values_list("pk", "status")),
        )

    snapshot.secret = secret  # type: ignore[attr-defined]
    return snapshot


def send(path: str, body: bytes, headers: dict[str, str]) -> None:
    response = Client().post(path, data=body, content_type="application/json", headers=headers)
    assert response.status_code < 500, (response.status_code, response.content[:300])


def check(state: Any, path: str, body: bytes, headers: dict[str, str]) -> None:
    before = state()
    send(path, body, headers)
    assert state() == before


def assert_handlers_ran(provider: str) -> None:
    """Signed bodies got past verification and were handed to the handlers (not only refused
    at the door): some were stored, and some ran into a handler's own checks."""
    events = WebhookEvent.objects.filter(provider=provider)
    assert events.exists()
    assert events.exclude(error="").exists()


# -- Stripe ------------------------------------------------------------------------------------

STRIPE_FIELDS = [
    "id", "object", "mode", "metadata", "client_reference_id", "payment_intent",
    "payment_status", "status", "amount_total", "amount_received", "currency",
    "last_payment_error", "amount_refunded", "charge", "amount", "balance_transactions",
]  # fmt: skip


def stripe_events() -> st.SearchStrategy[str]:
    return st.builds(
        lambda id_, type_, obj, extra: json.dumps(
            {"id": id_, "type": type_, "data": {"object": obj}, **extra}
        ),
        st.one_of(st.text(min_size=1, max_size=30), json_values),
        st.one_of(st.sampled_from(list(Stripe.handlers)), st.text(max_size=20), json_values),
        objects_with(STRIPE_FIELDS),
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    )


@st.composite
def stripe_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    signed = draw(st.booleans())
    text = draw(stripe_events()) if signed else None
    body = text.encode() if text is not None else draw(raw_bodies)
    valid = stripe_sign(body.decode("utf-8", "replace"), stamp=int(time.time()))
    stamp, signature = valid.split(",")
    element = st.one_of(
        st.just(stamp),
        st.just(signature),
        mutated(stamp),
        mutated(signature),
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["t", "v1", "v0", "x"]), header_values),
        header_values,
    )
    header = draw(
        st.one_of(
            st.just(valid) if signed else header_values,
            st.lists(element, max_size=6).map(",".join),
            header_values,
        )
    )
    return body, {"Stripe-Signature": header}


def test_stripe_webhook_never_answers_5xx_nor_changes_anything(state: Any) -> None:
    @FUZZ
    @given(request=stripe_requests())
    def fuzz(request: tuple[bytes, dict[str, str]]) -> None:
        check(state, "/webhooks/stripe/", *request)

    fuzz()
    assert_handlers_ran("stripe")


# -- BTCPay ------------------------------------------------------------------------------------

BTCPAY_FIELDS = ["originalDeliveryId", "invoiceId", "metadata", "timestamp"]


def btcpay_events() -> st.SearchStrategy[str]:
    return st.builds(
        lambda fields, id_, type_, store: json.dumps(
            {**fields, "deliveryId": id_, "type": type_, "storeId": store}
        ),
        objects_with(BTCPAY_FIELDS),
        st.one_of(st.text(min_size=1, max_size=30), json_values),
        st.one_of(st.sampled_from(list(BTCPay.handlers)), json_values),
        st.one_of(st.just("SimStore1"), json_values),
    )


@st.composite
def btcpay_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    signed = draw(st.booleans())
    body = draw(btcpay_events()).encode() if signed else draw(raw_bodies)
    valid = btcpay_sign(body)
    header = draw(
        st.one_of(
            st.just(valid) if signed else header_values,
            mutated(valid),
            header_values.map(lambda v: "sha256=" + v),
            header_values,
        )
    )
    return body, {"BTCPay-Sig": header}


def test_btcpay_webhook_never_answers_5xx_nor_changes_anything(state: Any) -> None:
    @FUZZ
    @given(request=btcpay_requests())
    def fuzz(request: tuple[bytes, dict[str, str]]) -> None:
        check(state, "/webhooks/btcpay/", *request)

    fuzz()
    assert_handlers_ran("btcpay")


# -- PayPal ------------------------------------------------------------------------------------

PAYPAL_FIELDS = [
    "id", "status", "custom_id", "amount", "supplementary_data", "purchase_units",
    "links", "status_details",
]  # fmt: skip
CERT_URLS = [
    "http://api.paypal.com/v1/notifications/certs/CERT-1",
    "https://api.paypal.com/v1/notifications/certs/CERT-1",
    "https://[::1/cert",
    "https://api.paypal.com:99999/cert",
    "https://evil.example@api.paypal.com/cert",
    "https://api.paypal.com.evil.example/cert",
    "javascript:alert(1)",
    "//api.paypal.com/cert",
    "file:///etc/passwd",
]


def paypal_events() -> st.SearchStrategy[str]:
    return st.builds(
        lambda id_, type_, resource: json.dumps(
            {"id": id_, "event_type": type_, "resource": resource}
        ),
        st.one_of(st.text(min_size=1, max_size=30), json_values),
        st.one_of(st.sampled_from(list(PayPal.handlers)), json_values),
        objects_with(PAYPAL_FIELDS),
    )


@st.composite
def paypal_requests(draw: st.DrawFn, sim: Any) -> tuple[bytes, dict[str, str]]:
    signed = draw(st.booleans())
    body = draw(paypal_events()).encode() if signed else draw(raw_bodies)
    valid = paypal_headers(sim, body.decode("utf-8", "replace"))
    headers = {}
    for name, value in valid.items():
        choices = [st.just(value), mutated(value), header_values]
        if name == "PAYPAL-CERT-URL":
            choices.append(st.sampled_from(CERT_URLS))
        if name == "PAYPAL-TRANSMISSION-TIME":
            choices.append(st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31", "now"]))
        if signed and draw(st.integers(0, 3)) > 0:
            headers[name] = value  # mostly the real signature, so the handlers run
        else:
            headers[name] = draw(st.one_of(*choices))
    return body, headers


def test_paypal_webhook_never_answers_5xx_nor_changes_anything(
    state: Any, payments_on: Any
) -> None:
    @FUZZ
    @given(request=paypal_requests(payments_on))
    def fuzz(request: tuple[bytes, dict[str, str]]) -> None:
        check(state, "/webhooks/paypal/", *request)

    fuzz()
    assert_handlers_ran("paypal")


# -- leaked-key reports --------------------------------------------------------------------------


@st.composite
def scanner_requests(draw: st.DrawFn, secret: str) -> tuple[bytes, dict[str, str]]:
    tokens = st.one_of(
        st.text(max_size=50),
        st.just(keyformat.generate()),  # well formed, not ours
        mutated(secret).filter(lambda t: t != secret),
        json_values,
    )
    candidate = st.fixed_dictionaries(
        {}, optional={"token": tokens, "type": json_values, "url": json_values}
    )
    signed = draw(st.booleans())
    if signed:
        body = json.dumps(draw(st.one_of(st.lists(candidate, max_size=5), json_values))).encode()
    else:
        body = draw(raw_bodies)
    valid = "sha256=" + hmac.new(SCANNER_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-Signature": draw(
            st.one_of(st.just(valid) if signed else header_values, mutated(valid), header_values)
        )
    }
    if draw(st.booleans()):
        headers["Github-Public-Key-Identifier"] = draw(header_values)
        headers["Github-Public-Key-Signature"] = draw(header_values)
    return body, headers


def test_secret_scanning_never_answers_5xx_nor_changes_anything(state: Any) -> None:
    @FUZZ
    @given(request=scanner_requests(state.secret))
    def fuzz(request: tuple[bytes, dict[str, str]]) -> None:
        check(state, "/api/v1/secret-scanning/", *request)

    fuzz()
