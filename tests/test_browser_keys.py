"""Keys and accounts in Debian's Chromium: a key with limits that the relay enforces (403 for
a model it may not use, 402 once its cap is spent), rotation, and two-factor sign-in."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import openai
import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser
PASSWORD = "a long and unguessable passphrase"


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()


def totp_code(secret: str) -> str:
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def test_a_key_with_limits_is_enforced_by_the_relay_and_rotates(
    page: Page, live_server: Any, relay: Any, catalog: None, worker: Any, settings: Any
) -> None:
    settings.TP_RELAY_BASE_URL = relay.base_url
    base = live_server.url
    call_command("adduser", "lee@example.com", "--password", PASSWORD, stdout=io.StringIO())
    call_command("credit", "lee@example.com", "5", stdout=io.StringIO())
    sign_in(page, base, "lee@example.com")

    page.goto(f"{base}/keys/")
    page.fill("input[name=name]", "limited")
    page.get_by_text("Limits (optional)").click()
    page.get_by_label(re.compile(r"Mistral Large 2 \(mistral-large-2\)")).check()
    page.fill("input[name=spend_cap]", "0.01")
    page.select_option("select[name=spend_cap_period]", "day")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()

    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)
    hello = [{"role": "user", "content": "Hello"}]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=hello)
    assert refused.value.code == "model_not_allowed"
    # Each answer is 1,000 tokens at $6 per 1M: the $0.01 cap pays for one, not two.
    long = {"x-demo-completion-tokens": "1000"}
    capped = None
    for _ in range(3):
        try:
            client.chat.completions.create(
                model="mistral-large-2", messages=hello, max_tokens=1000, extra_headers=long
            )
        except openai.APIStatusError as exc:
            capped = exc
            break
    assert capped is not None and capped.status_code == 402
    assert capped.code == "spend_cap_reached"

    # Rotate from the key's page, revoking the old secret at once.
    page.goto(f"{base}/keys/")
    page.get_by_role("link", name="limited").first.click()
    page.select_option("select[name=grace]", "0")
    page.get_by_role("button", name="Rotate key").click()
    rotated = page.get_by_test_id("new-key").inner_text().strip()
    assert rotated != secret
    expect(page.get_by_text("The old key is revoked.")).to_be_visible()
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="mistral-large-2", messages=hello, max_tokens=10)
    fresh = openai.OpenAI(base_url=relay.base_url, api_key=rotated, max_retries=0)
    assert fresh.chat.completions.create(
        model="mistral-large-2", messages=hello, max_tokens=10
    ).choices


def test_two_factor_sign_in(page: Page, live_server: Any, catalog: None) -> None:
    base = live_server.url
    call_command("adduser", "mo@example.com", "--password", PASSWORD, stdout=io.StringIO())
    sign_in(page, base, "mo@example.com")

    page.goto(f"{base}/accounts/2fa/totp/activate/")
    if "reauthenticate" in page.url:  # sensitive: the password again first
        page.fill("input[name=password]", PASSWORD)
        page.locator("main form button[type=submit]").click()
    secret = page.locator("#authenticator_secret").input_value()
    page.fill("input[name=code]", totp_code(secret))
    page.locator("main form button[type=submit]").click()
    expect(page.locator("main")).to_contain_text(re.compile("recovery codes", re.I))

    page.goto(f"{base}/accounts/logout/")
    page.locator("main form button[type=submit]").click()
    sign_in(page, base, "mo@example.com")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.fill("input[name=code]", totp_code(secret))
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))


def test_routing_defaults_are_set_by_their_labels_and_reach_the_relay(
    page: Page, live_server: Any, relay: Any, catalog: None, settings: Any
) -> None:
    """The key form's routing preferences, field by field (no JSON): saved on the key as the
    provider object the relay applies, shown again on the key's page, and a maximum price no
    route meets refuses the key's requests with the reason."""
    from keys.models import ApiKey

    settings.TP_RELAY_BASE_URL = relay.base_url
    base = live_server.url
    call_command("adduser", "rae@example.com", "--password", PASSWORD, stdout=io.StringIO())
    call_command("credit", "rae@example.com", "5", stdout=io.StringIO())
    sign_in(page, base, "rae@example.com")

    page.goto(f"{base}/keys/")
    page.get_by_label("Name", exact=True).fill("routed")
    page.get_by_text("Limits (optional)").click()
    routing = page.get_by_role("group", name="Routing preferences")
    routing.get_by_label("Sort providers by").select_option(label="Lowest price")
    only = routing.locator(".field", has=page.get_by_text("Use only these providers", exact=True))
    only.get_by_label("Mistral AI", exact=True).check()
    routing.get_by_label("Maximum input price (USD per 1M tokens)").fill("0.0001")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()

    key = ApiKey.objects.get(name="routed")
    assert key.routing == {"only": ["mistral"], "sort": "price", "max_price": {"prompt": "0.0001"}}
    page.get_by_role("link", name="routed").first.click()
    routing = page.get_by_role("group", name="Routing preferences")
    expect(routing.get_by_label("Sort providers by")).to_have_value("price")
    expect(routing.get_by_label("Maximum input price (USD per 1M tokens)")).to_have_value("0.0001")

    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)
    hello = [{"role": "user", "content": "Hello"}]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="mistral-large-2", messages=hello, max_tokens=10)
    assert refused.value.status_code in (400, 404)
    assert "max_price" in str(refused.value.message)

    # Lifted on the key's page: the same request goes through.
    routing.get_by_label("Maximum input price (USD per 1M tokens)").fill("")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_test_id("limits-saved")).to_be_visible()
    key.refresh_from_db()
    assert key.routing == {"only": ["mistral"], "sort": "price"}
    deadline = time.time() + 5
    while True:
        try:
            answer = client.chat.completions.create(
                model="mistral-large-2", messages=hello, max_tokens=10
            )
            break
        except openai.APIStatusError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    assert answer.choices
