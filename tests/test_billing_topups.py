"""Top-ups end to end through the simulators over HTTP: the portal starts a payment, a person
pays on the provider's page, the provider's signed webhooks reach the live server, and the
balance is credited once, whatever else arrives."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from billing import ledger
from billing.models import LedgerEntry, Payment, WebhookEvent
from billing.topups import sync_open_payments

from .billing_fixtures import (
    delivered,
    follow_pay_page,
    payments_on,
    sim,
    sim_post,
)
from .conftest import wait_until

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)


def start(client: Client, provider: str, amount: str = "10", save_card: bool = False) -> Payment:
    """The two steps of the billing page: the quote, then "Continue to ..."."""
    quote = client.post(
        reverse("billing_topup"),
        {"custom": amount, "provider": provider, "save_card": "on" if save_card else ""},
    )
    assert quote.status_code == 200, quote.content
    response = client.post(
        reverse("billing_topup_start"),
        {"amount": amount, "provider": provider, "save_card": "on" if save_card else ""},
    )
    assert response.status_code == 302
    payment = Payment.objects.latest("created_at")
    assert response["Location"] == payment.checkout_url
    return payment


def topups(account: Any) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account=account, kind="topup"))


def confirmed(payment: Payment) -> Payment:
    return wait_until(  # type: ignore[no-any-return]
        lambda: Payment.objects.filter(pk=payment.pk, status="confirmed").first(), timeout=20
    )


def test_it_shows_the_fee_before_paying(payments_on: Any, alice_client: Client) -> None:
    response = alice_client.post(
        reverse("billing_topup"), {"preset": "", "custom": "20", "provider": "stripe"}
    )
    assert response.status_code == 200
    quote = response.context["quote"]
    # 2.9% + $0.30 on $20.00
    assert quote["fee"] == Decimal("0.88") and quote["total"] == Decimal("20.88")
    assert b"$20.88" in response.content
    assert not Payment.objects.exists()
    # Its form is redirected to the provider's page: the CSP's form-action must allow it.
    form_action = next(
        part for part in response["Content-Security-Policy"].split(";") if "form-action" in part
    )
    assert "'self'" in form_action and payments_on.base_url in form_action


@pytest.mark.parametrize("amount", ["4.99", "-5", "abc", "10.001", "NaN", "1e9"])
def test_it_refuses_bad_amounts_on_the_server(
    payments_on: Any, alice_client: Client, amount: str
) -> None:
    quote = alice_client.post(reverse("billing_topup"), {"custom": amount, "provider": "stripe"})
    assert quote.status_code == 400
    start = alice_client.post(
        reverse("billing_topup_start"), {"amount": amount, "provider": "stripe"}
    )
    assert start.status_code == 302 and start["Location"] == reverse("billing")
    assert not Payment.objects.exists()


def test_a_card_top_up_credits_once(payments_on: Any, alice: Any, alice_client: Client) -> None:
    payment = start(alice_client, "stripe")
    assert payment.total == Decimal("10.59")
    paid = follow_pay_page(payment.checkout_url, "pay")
    assert paid.status_code == 303 and "/return/" in paid.headers["Location"]
    # The redirect back, with a tampered amount and someone else's session id: ignored.
    back = alice_client.get(
        reverse("billing_payment_return", args=[payment.uuid]),
        {"session_id": "cs_test_other", "amount": "100000", "amount_total": "10000000"},
    )
    assert back.status_code == 302
    payment = confirmed(payment)
    delivered(payments_on, "checkout.session.completed")
    delivered(payments_on, "payment_intent.succeeded")
    assert payment.credited == Decimal("10.00")
    assert payment.provider_payment_id.startswith("pi_")
    assert [e.amount for e in topups(alice.account)] == [Decimal("10.00")]
    assert ledger.balance(alice.account) == Decimal("20")  # her $10, and $10 more
    page = alice_client.get(reverse("billing"))
    assert b"TP-" in page.content and page.context["summary"]["balance"] == Decimal("20")


def test_a_paypal_top_up_credits_once(payments_on: Any, alice: Any, alice_client: Client) -> None:
    payment = start(alice_client, "paypal")
    assert payment.total == Decimal("10.84")  # 3.49% + $0.49
    approved = follow_pay_page(payment.checkout_url, "pay", token=payment.checkout_id)
    assert approved.status_code == 303
    back = approved.headers["Location"]
    assert f"token={payment.checkout_id}" in back
    response = alice_client.get(back.replace("http://testserver", "") + "&amount=99999")
    assert response.status_code == 302
    payment.refresh_from_db()
    assert payment.status == "confirmed" and payment.credited == Decimal("10.00")
    delivered(payments_on, "CHECKOUT.ORDER.APPROVED")
    delivered(payments_on, "PAYMENT.CAPTURE.COMPLETED")
    assert [e.amount for e in topups(alice.account)] == [Decimal("10.00")]
    assert WebhookEvent.objects.filter(provider="paypal", status="processed").count() == 2


def test_a_crypto_top_up_credits_once(payments_on: Any, alice: Any, alice_client: Client) -> None:
    payment = start(alice_client, "btcpay")
    assert payment.total == Decimal("10.00")
    paid = follow_pay_page(payment.checkout_url, "pay")
    assert paid.status_code == 303
    alice_client.get(reverse("billing_payment_return", args=[payment.uuid]))
    payment = confirmed(payment)
    delivered(payments_on, "InvoiceSettled")
    assert [e.amount for e in topups(alice.account)] == [Decimal("10.00")]


def test_a_partly_paid_invoice_credits_nothing_and_is_flagged(
    payments_on: Any, alice: Any, alice_client: Client, settings: Any
) -> None:
    settings.TP_BILLING_OPERATOR_EMAILS = ["ops@example.com"]
    payment = start(alice_client, "btcpay", "25")
    follow_pay_page(payment.checkout_url, "partial")
    delivered(payments_on, "InvoiceExpired")
    payment = wait_until(
        lambda: (
            Payment.objects.get(pk=payment.pk).status == "needs_review"
            and Payment.objects.get(pk=payment.pk)
        )
    )
    assert not topups(alice.account)
    assert ledger.balance(alice.account) == Decimal("10")  # the $10 she had
    assert any("needs review" in m.subject and "ops@example.com" in m.to for m in mail.outbox)
    page = alice_client.get(reverse("billing"))
    assert b'data-testid="flagged-payment"' in page.content


def test_a_delayed_card_payment_credits_when_the_bank_confirms(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payment = start(alice_client, "stripe", "25")
    follow_pay_page(payment.checkout_url, "delayed")
    delivered(payments_on, "checkout.session.completed")
    payment.refresh_from_db()
    assert payment.status == "pending" and not topups(alice.account)
    sim_post(payments_on, f"/stripe/_sim/sessions/{payment.checkout_id}/async", outcome="succeeded")
    confirmed(payment)
    delivered(payments_on, "checkout.session.async_payment_succeeded")
    assert [e.amount for e in topups(alice.account)] == [Decimal("25.00")]


def test_a_failed_bank_payment_credits_nothing(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payment = start(alice_client, "stripe", "25")
    follow_pay_page(payment.checkout_url, "delayed")
    delivered(payments_on, "checkout.session.completed")
    sim_post(payments_on, f"/stripe/_sim/sessions/{payment.checkout_id}/async", outcome="failed")
    delivered(payments_on, "checkout.session.async_payment_failed")
    wait_until(lambda: Payment.objects.get(pk=payment.pk).status == "failed")
    assert not topups(alice.account)


def test_refunds_and_disputes_become_ledger_entries(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payment = start(alice_client, "stripe", "50")  # charged $51.75
    follow_pay_page(payment.checkout_url, "pay")
    payment = confirmed(payment)
    intent = payment.provider_payment_id
    sim_post(payments_on, "/stripe/_sim/refund", payment_intent=intent, amount=1000)
    delivered(payments_on, "charge.refunded")
    wait_until(lambda: ledger.balance(alice.account) == Decimal("50"))  # $10 + $50 − $10
    sim_post(payments_on, "/stripe/_sim/refund", payment_intent=intent, amount=500)
    delivered(payments_on, "charge.refunded", 2)
    wait_until(lambda: ledger.balance(alice.account) == Decimal("45"))
    dispute = sim_post(payments_on, "/stripe/_sim/dispute", payment_intent=intent, amount=3675)
    delivered(payments_on, "charge.dispute.funds_withdrawn")
    # $36.75 disputed takes the $35 left of the credit, plus the $15 dispute fee.
    wait_until(lambda: ledger.balance(alice.account) == Decimal("-5"))
    sim_post(payments_on, f"/stripe/_sim/disputes/{dispute['id']}/close", outcome="won")
    delivered(payments_on, "charge.dispute.funds_reinstated")
    wait_until(lambda: ledger.balance(alice.account) == Decimal("30"))
    kinds = list(
        LedgerEntry.objects.filter(account=alice.account)
        .order_by("seq")
        .values_list("kind", "amount")
    )
    assert kinds == [
        ("adjustment", Decimal("10")),  # the $10 she started with
        ("topup", Decimal("50")),
        ("refund", Decimal("-10")),
        ("refund", Decimal("-5")),
        ("chargeback", Decimal("-35")),
        ("chargeback", Decimal("-15")),
        ("chargeback", Decimal("35")),
    ]


def test_paypal_refunds_and_reversals(payments_on: Any, alice: Any, alice_client: Client) -> None:
    payment = start(alice_client, "paypal", "20")
    approved = follow_pay_page(payment.checkout_url, "pay", token=payment.checkout_id)
    alice_client.get(approved.headers["Location"].replace("http://testserver", ""))
    payment.refresh_from_db()
    capture = payment.provider_payment_id
    sim_post(payments_on, f"/paypal/_sim/captures/{capture}/refund", amount="5.00")
    delivered(payments_on, "PAYMENT.CAPTURE.REFUNDED")
    wait_until(lambda: ledger.balance(alice.account) == Decimal("25"))  # $10 + $20 − $5
    sim_post(payments_on, f"/paypal/_sim/captures/{capture}/reverse")
    delivered(payments_on, "PAYMENT.CAPTURE.REVERSED")
    wait_until(lambda: ledger.balance(alice.account) == Decimal("10"))  # back where she began


def test_a_held_paypal_payment_waits_and_a_denied_one_credits_nothing(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    held = start(alice_client, "paypal", "10")
    approved = follow_pay_page(held.checkout_url, "pending", token=held.checkout_id)
    alice_client.get(approved.headers["Location"].replace("http://testserver", ""))
    held.refresh_from_db()
    assert held.status == "pending" and not topups(alice.account)
    delivered(payments_on, "PAYMENT.CAPTURE.PENDING")
    capture = _capture_of(payments_on, held)
    sim_post(payments_on, f"/paypal/_sim/captures/{capture}/complete")
    confirmed(held)
    assert [e.amount for e in topups(alice.account)] == [Decimal("10.00")]

    denied = start(alice_client, "paypal", "10")
    approved = follow_pay_page(denied.checkout_url, "pending", token=denied.checkout_id)
    alice_client.get(approved.headers["Location"].replace("http://testserver", ""))
    denied.refresh_from_db()
    sim_post(
        payments_on,
        f"/paypal/_sim/captures/{denied.checkout_id and _capture_of(payments_on, denied)}/deny",
    )
    wait_until(lambda: Payment.objects.get(pk=denied.pk).status == "failed")
    assert len(topups(alice.account)) == 1


def _capture_of(sim: Any, payment: Payment) -> str:
    order = sim.simulator.orders[payment.checkout_id]
    return order["purchase_units"][0]["payments"]["captures"][0]["id"]  # type: ignore[no-any-return]


def test_a_canceled_checkout_credits_nothing(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payment = start(alice_client, "stripe")
    canceled = follow_pay_page(payment.checkout_url, "cancel")
    back = canceled.headers["Location"].replace("http://testserver", "")
    # The provider's redirect (a GET) only shows the page; its form cancels (a POST).
    assert alice_client.get(back).status_code == 200
    assert alice_client.post(back).status_code == 302
    payment.refresh_from_db()
    assert payment.status == "canceled" and not topups(alice.account)


def test_someone_elses_payment_is_not_found(
    payments_on: Any, alice_client: Client, bob: Any
) -> None:
    bob_client = Client()
    bob_client.force_login(bob)
    payment = start(alice_client, "btcpay")
    for name in ["billing_payment", "billing_payment_return", "billing_payment_cancel"]:
        assert bob_client.get(reverse(name, args=[payment.uuid])).status_code == 404


def test_the_periodic_check_credits_a_payment_whose_webhooks_never_came(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payments_on.simulator.config.auto_deliver = False
    payment = start(alice_client, "btcpay")
    follow_pay_page(payment.checkout_url, "pay")
    Payment.objects.filter(pk=payment.pk).update(
        created_at=payment.created_at - timedelta(minutes=10)
    )
    assert sync_open_payments() == 1
    assert Payment.objects.get(pk=payment.pk).status == "confirmed"
    payments_on.simulator.held.clear()


def test_production_settings_refuse_the_simulators(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "x" * 50,
        "TP_KEY_PEPPER": "y" * 50,
        "TP_SECRETS_KEYS": "eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXk=",  # 32 bytes of "y"
        "TP_VAR_DIR": str(tmp_path),
        "STRIPE_API_BASE": "http://127.0.0.1:8003/stripe",
    }
    check = [sys.executable, "-c", "import portal.settings"]
    refused = subprocess.run(check, env=env, capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "development only" in refused.stderr
    env["STRIPE_API_BASE"] = "https://api.stripe.com"
    assert subprocess.run(check, env=env, capture_output=True, check=False).returncode == 0
