"""A Hypothesis state machine over top-ups (their success events, delivered any number of
times, by either object), usage debits, refunds, disputes won and lost, vouchers, replays and
redeliveries, all through the real webhook endpoint and services on PostgreSQL.

It keeps: the balance equals the sum of the entries (and a model's figure); no payment is
credited twice; and the balance never falls below the documented bound: only money a provider
takes back after it was spent (refunds, chargebacks, dispute fees) can push it below zero,
because usage is admitted only against the available balance (the relay's holds).
"""

from __future__ import annotations

import itertools
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Count, Sum
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing import ledger, usage, vouchers, webhooks
from billing.models import LedgerEntry, Payment, PaymentAdjustment, WebhookEvent
from billing.providers.base import cents
from billing.topups import get_provider

from .billing_fixtures import stripe_event, stripe_sign

SERIAL = itertools.count()
CENT = Decimal("0.01")


class Billing(RuleBasedStateMachine):
    payments = Bundle("payments")
    disputes = Bundle("disputes")

    def __init__(self) -> None:
        super().__init__()
        from django.contrib.auth import get_user_model

        n = next(SERIAL)
        user = get_user_model().objects.create_user(email=f"machine{n}@example.com")
        self.account = user.account
        self.client = Client()
        self.balance = Decimal(0)
        self.taken_back = Decimal(0)  # refunds, chargebacks and fees: the bound below zero
        self.confirmed: set[int] = set()
        self.reversed: dict[int, Decimal] = {}
        self.refunded: dict[int, int] = {}
        self.sent: list[str] = []
        self.serial = n

    # -- helpers --------------------------------------------------------------------------

    def deliver(self, type_: str, obj: dict[str, Any], event_id: str | None = None) -> None:
        body = stripe_event(type_, obj, event_id or f"evt_{self.serial}_{time.time_ns()}")
        self.sent.append(body)
        response = self.client.post(
            "/webhooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": stripe_sign(body)},
        )
        assert response.status_code == 200, response.content

    def room(self, payment: Payment) -> Decimal:
        return payment.amount - self.reversed.get(payment.pk, Decimal(0))

    # -- rules ----------------------------------------------------------------------------

    @rule(target=payments, dollars=st.integers(5, 120))
    def start_payment(self, dollars: int) -> Payment:
        amount = Decimal(dollars)
        fee = get_provider("stripe").fee(amount)
        n = next(SERIAL)
        return Payment.objects.create(
            account=self.account,
            provider="stripe",
            amount=amount,
            fee=fee,
            total=amount + fee,
            checkout_id=f"cs_machine_{n}",
        )

    @rule(payment=payments, by_session=st.booleans(), repeat=st.integers(1, 3))
    def succeed(self, payment: Payment, by_session: bool, repeat: int) -> None:
        intent = f"pi_machine_{payment.pk}"
        meta = {"tp_payment": str(payment.uuid)}
        if by_session:
            obj = {
                "id": payment.checkout_id,
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "status": "complete",
                "currency": "usd",
                "amount_total": cents(payment.total),
                "payment_intent": intent,
                "metadata": meta,
            }
            type_ = "checkout.session.completed"
        else:
            obj = {
                "id": intent,
                "object": "payment_intent",
                "status": "succeeded",
                "currency": "usd",
                "amount": cents(payment.total),
                "amount_received": cents(payment.total),
                "metadata": meta,
            }
            type_ = "payment_intent.succeeded"
        event_id = f"evt_{type_}_{payment.pk}"
        for _ in range(repeat):
            self.deliver(type_, obj, event_id)
        if payment.pk not in self.confirmed:
            self.confirmed.add(payment.pk)
            self.balance += payment.amount

    @precondition(lambda self: self.confirmed)
    @rule(payment=payments, share=st.integers(1, 100))
    def refund(self, payment: Payment, share: int) -> None:
        if payment.pk not in self.confirmed:
            return
        total = cents(payment.total)
        already = self.refunded.get(payment.pk, 0)
        delta = min(total - already, max(1, total * share // 100))
        if delta <= 0:
            return
        self.refunded[payment.pk] = already + delta
        charge = {
            "id": f"ch_machine_{payment.pk}",
            "object": "charge",
            "paid": True,
            "status": "succeeded",
            "amount": total,
            "amount_captured": total,
            "amount_refunded": already + delta,
            "currency": "usd",
            "payment_intent": f"pi_machine_{payment.pk}",
        }
        self.deliver("charge.refunded", charge)
        taken = min(Decimal(delta) * CENT, self.room(payment))
        self.reversed[payment.pk] = self.reversed.get(payment.pk, Decimal(0)) + taken
        self.balance -= taken
        self.taken_back += taken

    @precondition(lambda self: self.confirmed)
    @rule(target=disputes, payment=payments, fee=st.sampled_from([0, 1500]))
    def dispute(self, payment: Payment, fee: int) -> Any:
        if payment.pk not in self.confirmed:
            return None
        n = next(SERIAL)
        total = cents(payment.total)
        dispute = {
            "id": f"du_machine_{n}",
            "object": "dispute",
            "amount": total,
            "currency": "usd",
            "payment_intent": f"pi_machine_{payment.pk}",
            "status": "needs_response",
            "balance_transactions": [{"amount": -total, "fee": fee}],
        }
        self.deliver("charge.dispute.funds_withdrawn", dispute)
        taken = min(Decimal(total) * CENT, self.room(payment))
        self.reversed[payment.pk] = self.reversed.get(payment.pk, Decimal(0)) + taken
        self.balance -= taken + Decimal(fee) * CENT
        self.taken_back += taken + Decimal(fee) * CENT
        return (payment, dispute, taken, Decimal(fee) * CENT)

    @rule(won=consumes(disputes), fee_back=st.booleans())
    def win_dispute(self, won: Any, fee_back: bool) -> None:
        if won is None:
            return
        payment, dispute, taken, fee = won
        returned = int(fee * 100) if fee_back else 0
        dispute = {
            **dispute,
            "status": "won",
            "balance_transactions": [
                *dispute["balance_transactions"],
                {"amount": dispute["amount"], "fee": -returned},
            ],
        }
        self.deliver("charge.dispute.funds_reinstated", dispute)
        back = taken + (fee if fee_back else 0)
        self.reversed[payment.pk] -= taken
        self.balance += back

    @rule(cost=st.decimals(min_value="0.000000001", max_value="30", places=9))
    def use(self, cost: Decimal) -> None:
        # The relay admits a request only against the available balance (its hold).
        if cost > self.balance:
            return
        usage.record_batch(
            [
                {
                    "request_id": f"machine-{self.serial}-{time.time_ns()}",
                    "account": self.account.pk,
                    "key": 0,
                    "model": "demo",
                    "cost": str(cost),
                    "started_at": time.time(),
                }
            ]
        )
        self.balance -= cost

    @rule(dollars=st.integers(1, 50), twice=st.booleans())
    def voucher(self, dollars: int, twice: bool) -> None:
        batch = vouchers.make_batch(name="machine", amount=Decimal(dollars), count=1)
        code = batch.vouchers.get().code
        vouchers.redeem(account=self.account, code=code)
        self.balance += Decimal(dollars)
        if twice:
            try:
                vouchers.redeem(account=self.account, code=code)
            except vouchers.VoucherError:
                pass
            else:
                raise AssertionError("a voucher redeemed twice")

    @rule()
    def replay_everything(self) -> None:
        webhooks.replay(list(WebhookEvent.objects.filter(payload__data__object__isnull=False)))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def redeliver(self, data: Any) -> None:
        body = data.draw(st.sampled_from(self.sent))
        response = self.client.post(
            "/webhooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": stripe_sign(body)},
        )
        assert response.status_code == 200

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def balance_is_the_sum_of_entries(self) -> None:
        entries = LedgerEntry.objects.filter(account=self.account)
        total = entries.aggregate(s=Sum("amount"))["s"] or Decimal(0)
        assert total == ledger.balance(self.account) == self.balance

    @invariant()
    def no_payment_is_credited_twice(self) -> None:
        credits = (
            LedgerEntry.objects.filter(account=self.account, kind="topup")
            .values("reference")
            .annotate(n=Count("id"))
        )
        assert all(row["n"] == 1 for row in credits)
        assert len(credits) == len(self.confirmed)
        assert (
            set(
                Payment.objects.filter(account=self.account, status="confirmed").values_list(
                    "pk", flat=True
                )
            )
            == self.confirmed
        )

    @invariant()
    def the_balance_stays_above_the_bound(self) -> None:
        taken = -(
            PaymentAdjustment.objects.filter(payment__account=self.account, amount__lt=0).aggregate(
                s=Sum("amount")
            )["s"]
            or Decimal(0)
        )
        assert ledger.balance(self.account) >= -taken
        assert taken == self.taken_back


@pytest.mark.timeout(600)
def test_billing_state_machine(transactional_db: None, settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = "sk_test_machine"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_tokenpapa_simulator"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing here should call Stripe
    run_state_machine_as_test(
        Billing,
        settings=settings_for_machine,
    )


settings_for_machine = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_ = json  # payloads are built as dicts and serialised by stripe_event
