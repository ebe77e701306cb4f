"""Vouchers, signup credit, low-balance email, auto top-up with a card saved at Stripe, and
receipts."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import alerts, ledger, payments, usage, vouchers
from billing.accounts import profile_of
from billing.models import BillingProfile, LedgerEntry, Payment, Voucher

from .billing_fixtures import follow_pay_page, payments_on, sim, sim_post
from .conftest import wait_until
from .test_billing_topups import confirmed, start

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)


def debit(account: Any, amount: str) -> None:
    """Usage as the worker records it (and the one call it makes for alerts)."""
    usage.record_batch(
        [
            {
                "request_id": f"req-{timezone.now().timestamp()}-{amount}",
                "account": account.pk,
                "key": 0,
                "model": "demo",
                "cost": amount,
                "started_at": timezone.now().timestamp(),
            }
        ]
    )


# -- vouchers -------------------------------------------------------------------------------------


def test_makevouchers_prints_codes_that_redeem_once(alice: Any, alice_client: Client) -> None:
    out = io.StringIO()
    call_command("makevouchers", "7.50", "3", "--name", "launch", stdout=out, stderr=io.StringIO())
    codes = out.getvalue().split()
    assert len(codes) == 3 and all(len(c) == 19 for c in codes)
    response = alice_client.post(reverse("billing_redeem_voucher"), {"code": codes[0].lower()})
    assert response.status_code == 302
    assert ledger.balance(alice.account) == Decimal("17.5")  # her $10 and the voucher's $7.50
    again = alice_client.post(reverse("billing_redeem_voucher"), {"code": codes[0]})
    assert again.status_code == 400 and b"already been used" in again.content
    assert ledger.balance(alice.account) == Decimal("17.5")


def test_a_code_raced_by_twenty_users_credits_once(make_user: Any) -> None:
    batch = vouchers.make_batch(name="race", amount=Decimal("5"), count=1)
    code = batch.vouchers.get().code
    users = [make_user(f"racer{i}@example.com") for i in range(20)]
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def redeem(user: Any) -> None:
        barrier.wait()
        try:
            vouchers.redeem(account=user.account, code=code)
            outcomes.append("ok")
        except vouchers.VoucherError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=redeem, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 19
    assert LedgerEntry.objects.filter(kind="voucher").count() == 1


def test_expired_and_unknown_codes_credit_nothing_and_guessing_is_slowed(alice: Any) -> None:
    batch = vouchers.make_batch(
        name="old", amount=Decimal("5"), count=1, expires_at=timezone.now() - timedelta(days=1)
    )
    with pytest.raises(vouchers.VoucherError, match="expired"):
        vouchers.redeem(account=alice.account, code=batch.vouchers.get().code)
    for _ in range(vouchers.MAX_FAILURES_PER_HOUR):
        with pytest.raises(vouchers.VoucherError):
            vouchers.redeem(account=alice.account, code="NOPE-NOPE")
    fresh = vouchers.make_batch(name="new", amount=Decimal("5"), count=1).vouchers.get()
    with pytest.raises(vouchers.VoucherError, match="Too many"):
        vouchers.redeem(account=alice.account, code=fresh.code)
    assert ledger.balance(alice.account) == Decimal("10")  # only the $10 she had
    assert not Voucher.objects.filter(redeemed_by__isnull=False).exists()


# -- signup credit --------------------------------------------------------------------------------


def test_signup_credit_is_a_ledger_entry(make_user: Any, settings: Any) -> None:
    assert ledger.balance(make_user("before@example.com").account) == 0
    settings.TP_SIGNUP_CREDIT = Decimal("1.50")
    account = make_user("after@example.com").account
    entry = LedgerEntry.objects.get(account=account)
    assert (entry.kind, entry.amount, entry.reference) == ("adjustment", Decimal("1.5"), "signup")


# -- low balance ----------------------------------------------------------------------------------


def test_the_low_balance_email_goes_once_per_crossing(alice: Any) -> None:
    profile = profile_of(alice.account)
    profile.low_balance_threshold = Decimal("5")
    profile.save()

    def low_emails() -> int:
        return sum("balance is low" in m.subject for m in mail.outbox)

    for cost in ["3", "3", "1", "1"]:  # from her $10: 7, 4 (crossing), 3, 2
        debit(alice.account, cost)
        alerts.check_balance(alice.account.pk)
    assert low_emails() == 1
    ledger.credit(account=alice.account, amount=Decimal("10"), kind="adjustment")  # 12: re-armed
    alerts.after_credit(alice.account.pk)
    debit(alice.account, "8")  # 4: a second crossing
    alerts.check_balance(alice.account.pk)
    assert low_emails() == 2


def test_a_credited_payment_re_arms_the_alert_and_clears_auto_top_up_failures(alice: Any) -> None:
    # The state machine cannot call the alerts (they sit above it): it announces the credit.
    BillingProfile.objects.filter(pk=profile_of(alice.account).pk).update(
        low_balance_threshold=Decimal("5"),
        low_balance_notified=True,
        auto_topup_failures=2,
        auto_topup_last_error="card declined",
    )
    payment = Payment.objects.create(
        account=alice.account,
        provider="stripe",
        amount=Decimal("10"),
        total=Decimal("10"),
        auto=True,
    )
    payments.confirm(
        payment, provider_payment_id="pi_1", amount_received=Decimal("10"), currency="usd"
    )
    profile = profile_of(alice.account)
    assert not profile.low_balance_notified
    assert (profile.auto_topup_failures, profile.auto_topup_last_error) == (0, "")


def test_usage_recording_queues_the_check_only_for_watched_accounts(
    alice: Any, worker: Any
) -> None:
    profile = profile_of(alice.account)
    profile.low_balance_threshold = Decimal("5")
    profile.save()
    debit(alice.account, "6")  # 4 left of her $10: the worker's task sends the email
    wait_until(lambda: any("balance is low" in m.subject for m in mail.outbox), timeout=15)


# -- auto top-up ----------------------------------------------------------------------------------


@pytest.fixture
def saved_card(payments_on: Any, alice: Any, alice_client: Client) -> BillingProfile:
    payment = start(alice_client, "stripe", "10", save_card=True)
    follow_pay_page(payment.checkout_url, "pay")
    confirmed(payment)
    profile = wait_until(
        lambda: (
            BillingProfile.objects.filter(account=alice.account)
            .exclude(stripe_payment_method_id="")
            .first()
        )
    )
    assert profile.card_last4 == "4242"
    response = alice_client.post(
        reverse("billing_settings"),
        {
            "form": "alerts",
            "alerts-auto_topup_enabled": "on",
            "alerts-auto_topup_threshold": "5",
            "alerts-auto_topup_amount": "20",
        },
    )
    assert response.status_code == 302
    profile.refresh_from_db()
    assert profile.auto_topup_enabled
    return profile


def test_auto_top_up_charges_the_saved_card_off_session(
    payments_on: Any, alice: Any, saved_card: BillingProfile
) -> None:
    debit(alice.account, "16")  # of her $10 and the $10 topped up, 4 available: below 5
    alerts.check_balance(alice.account.pk)
    auto = Payment.objects.get(auto=True)
    assert auto.status == "confirmed" and auto.credited == Decimal("20")
    assert auto.total == Decimal("20.88")
    assert ledger.balance(alice.account) == Decimal("24")
    alerts.check_balance(alice.account.pk)  # above the threshold again: nothing more
    assert Payment.objects.filter(auto=True).count() == 1
    # Its webhooks (payment_intent.succeeded) arrive too: still one credit.
    wait_until(lambda: LedgerEntry.objects.filter(kind="topup").count() == 2)


def test_auto_top_up_switches_off_after_three_failures_and_tells_the_user(
    payments_on: Any, alice: Any, saved_card: BillingProfile
) -> None:
    sim_post(payments_on, f"/stripe/_sim/customers/{saved_card.stripe_customer_id}/decline")
    debit(alice.account, "16")  # 4 available, below 5
    for _ in range(5):
        alerts.check_balance(alice.account.pk)
    saved_card.refresh_from_db()
    assert not saved_card.auto_topup_enabled and saved_card.auto_topup_failures == 3
    assert Payment.objects.filter(auto=True, status="failed").count() == 3
    assert ledger.balance(alice.account) == Decimal("4")
    assert [m.to for m in mail.outbox if "Auto top-up is off" in m.subject] == [
        ["alice@example.com"]
    ]


# -- receipts -------------------------------------------------------------------------------------


def test_a_receipt_has_both_parties_details_as_a_page_and_a_pdf(
    payments_on: Any, alice: Any, alice_client: Client, settings: Any, bob: Any
) -> None:
    settings.TP_COMPANY_NAME = "Papa Tokens GmbH"
    settings.TP_COMPANY_ADDRESS = "Hauptstraße 1\n10115 Berlin"
    settings.TP_COMPANY_VAT_ID = "DE123456789"
    alice_client.post(
        reverse("billing_settings"),
        {
            "form": "details",
            "details-name": "Alice Łukasiewicz",
            "details-company": "Alice Ltd",
            "details-address_line1": "1 Main St",
            "details-city": "Kraków",
            "details-country": "Poland",
            "details-vat_id": "PL1234567890",
        },
    )
    payment = start(alice_client, "btcpay")
    follow_pay_page(payment.checkout_url, "pay")
    payment = confirmed(payment)
    page = alice_client.get(reverse("billing_receipt", args=[payment.uuid]))
    text = page.content.decode()
    for expected in [
        "Papa Tokens GmbH",
        "DE123456789",
        "Alice Łukasiewicz",
        "PL1234567890",
        "Kraków",
        payment.receipt_number,
        "10.00",
    ]:
        assert expected in text
    pdf = alice_client.get(reverse("billing_receipt_pdf", args=[payment.uuid]))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    bob_client = Client()
    bob_client.force_login(bob)
    assert bob_client.get(reverse("billing_receipt", args=[payment.uuid])).status_code == 404
    unpaid = start(alice_client, "btcpay")
    assert alice_client.get(reverse("billing_receipt_pdf", args=[unpaid.uuid])).status_code == 404


# -- usage recording ------------------------------------------------------------------------------


def test_recorded_usage_rows_hold_exactly_what_the_events_said(alice: Any, catalog: None) -> None:
    """Rows go in by COPY: every column comes from the event (or the ledger), none is lost or
    shifted, an unknown key is kept as no key, and a failed request links to no debit."""
    from billing.models import UsageEvent
    from keys.services import issue_key

    api_key, _ = issue_key(account=alice.account, name="ci")
    started = timezone.now().timestamp()
    common = {"account": alice.account.pk, "model": "mistral-small", "started_at": started}
    events = [
        {
            **common,
            "request_id": "req_copy_1",
            "key": api_key.pk,
            "provider": "mistral",
            "upstream_model": "mistral-small-latest",
            "prompt_tokens": 1200,
            "completion_tokens": 345,
            "cached_tokens": 200,
            "cost": "0.000123456",
            "estimated": True,
            "status": "upstream_cut",
            "http_status": 200,
            "streamed": True,
            "duration_ms": 2500,
            "ttfb_ms": 180,
            "client_net": "203.0.113.0/24",
        },
        {**common, "request_id": "req_copy_2", "key": 999_999, "cost": "0", "status": "error"},
    ]
    assert usage.record_batch(events) == 2
    assert usage.record_batch(events) == 0  # a redelivery records nothing twice
    first = UsageEvent.objects.get(request_id="req_copy_1")
    assert (first.key_id, first.provider, first.upstream_model) == (
        api_key.pk,
        "mistral",
        "mistral-small-latest",
    )
    assert (first.prompt_tokens, first.completion_tokens, first.cached_tokens) == (1200, 345, 200)
    assert first.cost == Decimal("0.000123456")  # no price version: the relay's figure stands
    assert (first.estimated, first.status, first.http_status, first.streamed) == (
        True,
        "upstream_cut",
        200,
        True,
    )
    assert (first.duration_ms, first.ttfb_ms) == (2500, 180)
    assert abs(first.started_at.timestamp() - started) < 1e-3
    assert first.ledger_entry is not None and first.ledger_entry.amount == -first.cost
    assert first.recorded_at >= first.started_at
    second = UsageEvent.objects.get(request_id="req_copy_2")
    assert second.key_id is None and second.ledger_entry_id is None
    assert (second.cost, second.status, second.ttfb_ms) == (Decimal(0), "error", None)
    assert ledger.balance(alice.account) == Decimal("10") - Decimal("0.000123456")
    columns = {f.column for f in UsageEvent._meta.concrete_fields} - {"id"}
    assert {*usage._COLUMNS, "recorded_at"} == columns  # (recorded_at: one parameter a batch)
