"""Cancelling a top-up: the provider's cancel redirect (a GET, which any site could also make)
only shows where the payment stands; the cancellation itself is a POST with a CSRF token."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from playwright.sync_api import Page, expect

from billing.models import Payment

from .billing_fixtures import follow_pay_page, payments_on, sim
from .test_billing_topups import start, topups
from .test_browser_billing import PASSWORD, in_chromium

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)


def csrf_client(user: Any) -> Client:
    """Signed in, and sending no CSRF token unless the test does (alice_client skips the
    check, so it posts the top-up's two steps)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def form_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def cancel_url(payment: Payment) -> str:
    return reverse("billing_payment_cancel", args=[payment.uuid])


def status_of(payment: Payment) -> str:
    return Payment.objects.get(pk=payment.pk).status


@pytest.mark.parametrize("provider", ["stripe", "paypal"])
def test_it_lands_the_providers_cancel_redirect_on_a_page_that_changes_nothing(
    payments_on: Any, alice: Any, alice_client: Client, provider: str
) -> None:
    payment = start(alice_client, provider)
    left = follow_pay_page(payment.checkout_url, "cancel", token=payment.checkout_id)
    back = left.headers["Location"].replace("http://testserver", "")
    assert back.startswith(cancel_url(payment))
    page = alice_client.get(back)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'method="post"' in html and "Cancel payment" in html
    assert "csrfmiddlewaretoken" in html
    assert status_of(payment) == "created"


def test_it_refuses_a_cancellation_without_a_csrf_token(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    client = csrf_client(alice)
    payment = start(alice_client, "stripe")
    response = client.post(cancel_url(payment))
    assert response.status_code == 403
    assert status_of(payment) == "created"


def test_it_cancels_on_a_post_with_a_csrf_token(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    client = csrf_client(alice)
    payment = start(alice_client, "stripe")
    token = form_token(client.get(cancel_url(payment)).content.decode())
    response = client.post(cancel_url(payment), {"csrfmiddlewaretoken": token}, follow=True)
    assert response.status_code == 200
    assert status_of(payment) == "canceled" and not topups(alice.account)
    assert "The top-up was canceled" in response.content.decode()


def test_it_keeps_a_crypto_invoice_open_when_asked_to_cancel(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    # Coins may still arrive on an invoice: BTCPay is asked where it stands instead.
    payment = start(alice_client, "btcpay")
    response = alice_client.post(cancel_url(payment), follow=True)
    assert response.status_code == 200
    assert status_of(payment) == "created"
    assert "still open at the payment provider" in response.content.decode()


def test_it_offers_no_cancellation_of_a_paid_top_up(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    from .test_billing_topups import confirmed

    payment = start(alice_client, "btcpay")
    follow_pay_page(payment.checkout_url, "pay")
    confirmed(payment)
    page = alice_client.get(cancel_url(payment)).content.decode()
    assert "Cancel payment" not in page
    alice_client.post(cancel_url(payment))
    assert status_of(payment) == "confirmed" and len(topups(alice.account)) == 1


def test_another_user_cannot_cancel_alices_payment(
    payments_on: Any, alice_client: Client, bob: Any
) -> None:
    payment = start(alice_client, "stripe")
    bob_client = Client()
    bob_client.force_login(bob)
    assert bob_client.get(cancel_url(payment)).status_code == 404
    assert bob_client.post(cancel_url(payment)).status_code == 404
    assert status_of(payment) == "created"


# -- in Chromium: the provider's Cancel button, then ours ---------------------------------------


def cancel_journey(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    page.goto(f"{base}/billing/")
    page.get_by_label("$10.00").check()
    page.get_by_label("Card", exact=True).check()
    page.get_by_role("button", name="Continue").click()
    page.locator("main form button[type=submit]").first.click()
    expect(page.get_by_test_id("amount")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Cancel", exact=True).click()
    # Back on the portal: nothing happened yet, and the page says how to cancel.
    expect(page.get_by_test_id("payment-status")).to_have_attribute("data-status", "created")
    page.get_by_role("button", name="Cancel payment").click()
    expect(page).to_have_url(re.compile(r"/billing/$"))
    expect(page.get_by_text("The top-up was canceled. Nothing was charged.")).to_be_visible()


@pytest.mark.browser
def test_a_person_cancels_a_card_top_up_in_the_browser(
    live_server: Any, payments_on: Any, make_user: Any
) -> None:
    user = make_user("erin@example.com", PASSWORD)
    base = live_server.url.replace("//localhost:", "//127.0.0.1:")
    in_chromium(cancel_journey, base, "erin@example.com")
    payment = Payment.objects.get(account=user.account)
    assert payment.status == "canceled" and not topups(user.account)
