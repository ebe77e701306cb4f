"""Organizations in Debian's Chromium: alice makes one and invites bob, bob accepts and calls
the relay with a key of his, alice sees the request under bob in usage, removes him, and his
key is refused by the relay within a second."""

from __future__ import annotations

import io
import re
import time
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.core import mail
from django.core.management import call_command
from playwright.sync_api import Browser, Page, expect

from accounts.models import Account
from billing import ledger
from billing.models import UsageEvent

from .conftest import wait_until
from .test_browser_keys import PASSWORD, sign_in

pytestmark = pytest.mark.browser


def test_a_team_shares_a_balance_and_loses_a_member(
    page: Page,
    browser: Browser,
    live_server: Any,
    relay: Any,
    catalog: None,
    worker: Any,
    settings: Any,
) -> None:
    settings.TP_RELAY_BASE_URL = relay.base_url
    settings.TP_SITE_URL = live_server.url
    base = live_server.url
    for email in ("alice@example.com", "bob@example.com"):
        call_command("adduser", email, "--password", PASSWORD, stdout=io.StringIO())

    # alice makes "Acme" and acts for it at once.
    sign_in(page, base, "alice@example.com")
    page.get_by_role("link", name="Organizations").click()
    page.get_by_label("Organization name").fill("Acme")
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name="Acme")).to_be_visible()
    expect(page.get_by_label("Acting for")).to_have_value(
        str(Account.objects.get(organization__name="Acme").pk)
    )
    ledger.adjust(account=Account.objects.get(organization__name="Acme"), amount=Decimal(5))

    # She invites bob as a member.
    mail.outbox.clear()
    page.get_by_label("Email address").fill("bob@example.com")
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_test_id("invitations")).to_contain_text("bob@example.com")
    link = wait_until(
        lambda: mail.outbox and re.search(r"https?://\S+/invitations/\S+/", mail.outbox[-1].body)
    )

    # bob, in a browser of his own, accepts, makes a key and calls the relay with it.
    bob_context = browser.new_context()
    bob_page = bob_context.new_page()
    bob_page.set_default_timeout(15_000)
    try:
        sign_in(bob_page, base, "bob@example.com")
        bob_page.goto(link.group(0))
        expect(bob_page.locator("main")).to_contain_text("Acme")
        bob_page.get_by_role("button", name="Accept invitation").click()
        expect(bob_page).to_have_url(re.compile(r"/dashboard/$"))
        expect(bob_page.get_by_role("heading", name=re.compile("Acme"))).to_be_visible()
        expect(bob_page.get_by_test_id("balance")).to_have_count(0)  # a member sees no balance
        bob_page.get_by_role("link", name="Keys", exact=True).first.click()
        bob_page.fill("input[name=name]", "bob-laptop")
        bob_page.get_by_role("button", name="Create key").click()
        secret = bob_page.get_by_test_id("new-key").inner_text().strip()
    finally:
        bob_context.close()
    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model="mistral-small", messages=[{"role": "user", "content": "Hello from bob"}]
    )
    assert reply.choices[0].message.content
    wait_until(lambda: UsageEvent.objects.filter(key__name="bob-laptop").exists())

    # alice sees the request under bob in the organization's usage.
    page.get_by_role("link", name="Usage", exact=True).first.click()
    expect(page.get_by_test_id("by-key")).to_contain_text("bob-laptop · bob@example.com")

    # She removes bob; the relay refuses his key within a second.
    page.get_by_role("link", name="Organizations").click()
    page.get_by_role("link", name="Acme").click()
    page.get_by_role("button", name="Remove bob@example.com").click()
    expect(page.get_by_test_id("members")).not_to_contain_text("bob@example.com")
    removed = time.monotonic()

    def refused() -> bool:
        try:
            client.chat.completions.create(
                model="mistral-small", messages=[{"role": "user", "content": "again"}]
            )
        except openai.AuthenticationError:
            return True
        return False

    wait_until(refused, timeout=1, interval=0.05)
    assert time.monotonic() - removed < 1.5
