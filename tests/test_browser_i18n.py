"""The portal in French in Debian's Chromium: switch with the footer's switcher, sign up,
verify by the mailed link, create a key, read the usage page; no English is left on the way
(data aside: addresses, key prefixes, model ids, amounts)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing import usage
from keys.models import ApiKey

from .conftest import wait_until
from .po import catalogue, read, untranslated

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        bool(untranslated("fr")),
        reason=f"French catalogue incomplete ({len(untranslated('fr'))} messages untranslated)",
    ),
]

PASSWORD = "a long and unguessable passphrase"
# Words of the interface that are English alone (the check below takes msgids of two words
# or more, which single words would make too noisy to match as substrings).
ENGLISH_WORDS = [
    "Sign up",
    "Sign in",
    "Sign out",
    "Balance",
    "Keys",
    "Usage",
    "Create",
    "Top up",
    "Dashboard",
    "Billing",
    "Models",
    "Account",
    "Revoke",
    "Password",
    "Email",
]


def english_phrases() -> list[str]:
    """The catalogue's English messages of two words or more that French writes differently,
    placeholders and markup aside, and the single words above."""
    phrases = []
    for entry in read(catalogue("fr")):
        text = entry.msgid
        if re.search(r"%\(|\{|<|&", text) or len(text.split()) < 2:
            continue
        if entry.msgstr.get(0, "").strip() != text.strip():
            phrases.append(text.strip())
    french = {e.msgid: e.msgstr.get(0, "") for e in read(catalogue("fr"))}
    phrases += [w for w in ENGLISH_WORDS if french.get(w, "") != w]
    return phrases


def english_left(page: Page, phrases: list[str]) -> list[str]:
    text = page.inner_text("body")
    return [p for p in phrases if re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text)]


def test_french_all_the_way(page: Page, live_server: Any, settings: Any) -> None:
    base = live_server.url
    email = "camille@example.com"
    phrases = english_phrases()
    seen: dict[str, list[str]] = {}

    def check(where: str) -> None:
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        seen[where] = english_left(page, phrases)

    # The switcher in the footer: a labelled list and a button, no script needed.
    page.set_extra_http_headers({"Accept-Language": "en"})
    page.goto(f"{base}/")
    assert len(english_left(page, phrases)) > 5  # the check sees English where there is some
    page.get_by_label("Language").select_option("fr")
    page.locator("form.language-form button[type=submit]").click()
    check("home")

    # Sign up and verify by the mailed link (the mail is in French too).
    page.locator("header a[href$='/accounts/signup/']").click()
    check("signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    check("verification sent")
    link = wait_until(
        lambda: mail.outbox and re.search(r"https?://\S+/confirm-email/\S+", mail.outbox[-1].body)
    )
    page.goto(link.group(0))
    check("confirm email")
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    check("dashboard")

    # Create a key.
    page.goto(f"{base}/keys/")
    check("keys")
    page.fill("input[name=name]", "portable")
    page.locator("main form:has(input[name=name]) button[type=submit]").first.click()
    secret = page.get_by_test_id("new-key").inner_text().strip()
    assert secret.startswith("tp-sk-")
    check("key created")

    # Usage as the worker records it; the usage page reads it in French, amounts in French.
    key = ApiKey.objects.get(name="portable")
    usage.record_batch(
        [
            {
                "request_id": "req-fr-1",
                "account": key.account_id,
                "key": key.pk,
                "model": "demo",
                "cost": "0.0012345",
                "prompt_tokens": 1200,
                "completion_tokens": 340,
                "started_at": timezone.now().timestamp(),
            }
        ]
    )
    page.goto(f"{base}/usage/")
    check("usage")
    page.goto(f"{base}/usage/requests/")
    expect(page.get_by_test_id("log-table")).to_contain_text("0,0012345")
    check("usage_requests")

    left = {where: found for where, found in seen.items() if found}
    assert not left, f"English on French pages: {left}"
