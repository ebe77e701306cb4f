"""The whole journey in Debian's Chromium driven by Playwright: sign up, verify by the mailed
link, get credit, create a key, call the relay with the openai SDK, see the request and its
cost on the usage page, revoke the key, and be refused."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import openai
import pytest
from django.core import mail
from django.core.management import call_command
from playwright.sync_api import Page, expect

from billing.models import UsageEvent

from .conftest import wait_until

pytestmark = pytest.mark.browser

PASSWORD = "a long and unguessable passphrase"


def test_the_whole_journey(
    page: Page, live_server: Any, relay: Any, catalog: None, worker: Any, settings: Any
) -> None:
    settings.TP_RELAY_BASE_URL = relay.base_url
    base = live_server.url
    email = "dana@example.com"

    # Sign up with an email and a password only.
    page.goto(f"{base}/")
    page.get_by_role("link", name="Sign up").first.click()
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page.locator("main")).to_contain_text("verif", ignore_case=True)

    # Verify by the mailed link.
    link = wait_until(
        lambda: mail.outbox and re.search(r"https?://\S+/confirm-email/\S+", mail.outbox[-1].body)
    )
    page.goto(link.group(0))
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))

    # Credit from the operator's command line; the dashboard shows it.
    call_command("credit", email, "5", stdout=io.StringIO())
    page.reload()
    expect(page.get_by_test_id("balance")).to_have_text("$5.00")

    # Create a key; the secret is shown once.
    page.get_by_role("link", name="Keys", exact=True).first.click()
    page.fill("input[name=name]", "journey")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()
    assert secret.startswith("tp-sk-")

    # Call the relay with the openai SDK.
    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model="mistral-small", messages=[{"role": "user", "content": "Hello from the browser test"}]
    )
    assert reply.choices[0].message.content
    event = wait_until(lambda: UsageEvent.objects.filter(key__name="journey").first())

    # The usage page shows the request and its exact cost.
    page.get_by_role("link", name="Usage", exact=True).first.click()
    expect(page.locator("canvas[data-chart]")).to_be_visible()
    page.get_by_test_id("request-log-link").click()
    table = page.get_by_test_id("log-table")
    expect(table).to_contain_text("mistral-small")
    expect(table.get_by_test_id("cost").first).to_contain_text(_usd(event.cost))

    # Revoke the key in the browser; the relay refuses it within a second.
    page.get_by_role("link", name="Keys", exact=True).first.click()
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("Revoked").first).to_be_visible()
    revoked = time.monotonic()

    def refused() -> bool:
        try:
            client.chat.completions.create(
                model="mistral-small", messages=[{"role": "user", "content": "again"}]
            )
        except openai.AuthenticationError:
            return True
        return False

    wait_until(refused, timeout=1, interval=0.05)
    assert time.monotonic() - revoked < 1.5


def _usd(amount: Any) -> str:
    from lib.money import usd

    return usd(amount)
