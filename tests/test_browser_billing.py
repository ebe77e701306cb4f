"""A person tops up $10 by card, by PayPal and by crypto in Chromium, through the simulators'
own pages, sees each credit once, and opens a receipt."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from billing import ledger
from billing.models import LedgerEntry

from .billing_fixtures import payments_on, sim

pytestmark = pytest.mark.browser

# pytest finds these fixtures by name in this module.
FIXTURES = (payments_on, sim)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "a long and unguessable passphrase"


def in_chromium(journey: Any, *args: Any) -> Any:
    """Run a journey in its own thread: Playwright's sync API wants a thread without an
    event loop, and tests/test_browser.py's session-wide browser may hold this one."""

    def run() -> Any:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            try:
                page = browser.new_context().new_page()
                page.set_default_timeout(15_000)
                page.on("dialog", lambda dialog: dialog.accept())
                import time

                page.on(
                    "requestfailed",
                    lambda r: print("DBG failed", time.time(), r.url[:90], r.failure),
                )
                page.on("request", lambda r: print("DBG req", time.time(), r.method, r.url[:90]))
                return journey(page, *args)
            finally:
                browser.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def top_up(page: Page, base: str, method: str) -> None:
    page.goto(f"{base}/billing/")
    page.get_by_label("$10.00").check()
    page.get_by_label(method, exact=True).check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_test_id("quote")).to_be_visible()
    page.locator("main form button[type=submit]").first.click()
    # The provider's (simulated) page.
    expect(page.get_by_test_id("amount")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Pay", exact=True).click()
    # Back on the portal: the payment page checks again by itself until it is credited.
    status = page.get_by_test_id("payment-status")
    expect(status).to_have_attribute("data-status", "confirmed", timeout=20_000)
    expect(page.get_by_test_id("credited")).to_have_text("$10.00")


def journey(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))

    top_up(page, base, "Card")
    top_up(page, base, "PayPal")
    top_up(page, base, "Crypto")

    page.goto(f"{base}/billing/")
    expect(page.get_by_test_id("billing-balance")).to_have_text("$30.00")
    expect(page.locator("[data-testid=ledger-row][data-kind=topup]")).to_have_count(3)
    expect(page.get_by_test_id("payment-row")).to_have_count(3)

    page.get_by_role("link", name="Receipt").first.click()
    expect(page.get_by_test_id("receipt")).to_contain_text("TP-")
    expect(page.get_by_test_id("receipt-total")).to_have_text("10.00")
    href = page.get_by_role("link", name="Download PDF").get_attribute("href")
    pdf = page.request.get(f"{base}{href}")
    assert pdf.ok and pdf.body().startswith(b"%PDF")


def test_a_person_tops_up_by_card_paypal_and_crypto(
    live_server: Any, payments_on: Any, make_user: Any
) -> None:
    user = make_user("erin@example.com", PASSWORD)
    # As in `make run`, portal and simulators share a host (127.0.0.1) on different ports.
    base = live_server.url.replace("//localhost:", "//127.0.0.1:")
    in_chromium(journey, base, "erin@example.com")
    assert ledger.balance(user.account) == Decimal("30")
    assert LedgerEntry.objects.filter(account=user.account, kind="topup").count() == 3
