"""Provider keys (BYOK) in Debian's Chromium: a key the provider refuses is not saved and not
shown; one it accepts is saved, shown by its last four characters only, and used by the
relay for that provider's models."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from catalog.models import Provider
from catalog.services import save_provider
from keys.models import ProviderCredential
from simulators.llm import start_in_thread

from .conftest import publish_catalog, wait_until
from .test_browser_keys import PASSWORD, sign_in
from .test_byok import bearers

pytestmark = pytest.mark.browser


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"operator": f"op-{secrets.token_hex(16)}", "own": f"sk-own{secrets.token_hex(20)}"}


@pytest.fixture
def provider_upstream(provider_keys: dict[str, str]) -> Iterator[Any]:
    server = start_in_thread(api_keys=tuple(provider_keys.values()))
    yield server
    server.stop()


def test_a_user_adds_a_provider_key_and_sees_only_its_last_four(
    page: Page,
    live_server: Any,
    relay: Any,
    catalog: None,
    settings: Any,
    provider_upstream: Any,
    provider_keys: dict[str, str],
) -> None:
    settings.TP_RELAY_BASE_URL = relay.base_url
    mistral = Provider.objects.get(slug="mistral")
    mistral.base_url = provider_upstream.base_url
    save_provider(provider=mistral, api_key=provider_keys["operator"])
    publish_catalog(relay)
    base = live_server.url
    call_command("adduser", "kim@example.com", "--password", PASSWORD, stdout=io.StringIO())
    call_command("credit", "kim@example.com", "5", stdout=io.StringIO())
    sign_in(page, base, "kim@example.com")

    page.goto(f"{base}/keys/")
    page.get_by_role("link", name="Provider keys").first.click()
    expect(page.get_by_role("heading", name="Provider keys", exact=True)).to_be_visible()

    # A key the provider refuses: the form says why, and neither keeps nor shows it.
    wrong = f"sk-wrong{secrets.token_hex(20)}"
    page.get_by_label("Provider", exact=True).select_option("mistral")
    page.get_by_label("API key", exact=True).fill(wrong)
    page.get_by_label("Always: only my key").check()
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_text("refused this key (HTTP 401)")).to_be_visible()
    assert wrong not in page.content() and wrong[-4:] not in page.content()
    assert page.get_by_label("API key", exact=True).input_value() == ""
    assert not ProviderCredential.objects.exists()

    # The right one: saved, shown by its last four characters, never whole.
    own = provider_keys["own"]
    page.get_by_label("Provider", exact=True).select_option("mistral")
    page.get_by_label("API key", exact=True).fill(own)
    page.get_by_label("Always: only my key").check()
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_test_id("provider-key-saved")).to_be_visible()
    expect(page.get_by_test_id("provider-key-last4")).to_have_text(f"…{own[-4:]}")
    assert own not in page.content()
    page.reload()
    expect(page.get_by_test_id("provider-key-last4")).to_have_text(f"…{own[-4:]}")
    assert own not in page.content()

    # The relay sends mistral's models with it.
    page.goto(f"{base}/keys/")
    page.fill("input[name=name]", "byok")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").inner_text().strip()
    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)

    def served_with_own_key() -> bool:
        client.chat.completions.create(
            model="mistral-small", messages=[{"role": "user", "content": "Hello"}], max_tokens=10
        )
        return bearers(provider_upstream)[-1] == own

    wait_until(served_with_own_key, timeout=2)

    # Removed from the page: gone from the list.
    page.goto(f"{base}/keys/providers/")
    page.get_by_role("button", name="Remove the Mistral AI key").click()
    expect(page.get_by_text("No provider keys")).to_be_visible()
    assert not ProviderCredential.objects.exists()
