"""The audit log in Debian's Chromium: reached from the account menu, a key's creation on it,
the action filter narrowing the table in place (htmx) and the address bar following."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from .test_browser_keys import PASSWORD, sign_in

pytestmark = pytest.mark.browser


def test_a_reader_filters_the_audit_log(page: Page, live_server: Any) -> None:
    base = live_server.url
    call_command("adduser", "ada@example.com", "--password", PASSWORD, stdout=io.StringIO())
    call_command("credit", "ada@example.com", "5", stdout=io.StringIO())
    sign_in(page, base, "ada@example.com")
    page.goto(f"{base}/keys/")
    page.fill("input[name=name]", "laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-key")).to_be_visible()

    page.goto(f"{base}/accounts/email/")
    page.get_by_role("link", name="Audit log").click()
    expect(page).to_have_url(re.compile(r"/account/audit/$"))
    table = page.get_by_test_id("audit-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("API key created")
    expect(table).to_contain_text("Balance adjusted by the operator")

    page.get_by_label("Action").select_option("key.created")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text("laptop (tp-sk-")
    expect(table).to_contain_text("ada@example.com")
    expect(page).to_have_url(re.compile(r"action=key\.created"))
    csv_link = page.get_by_test_id("audit-csv")
    expect(csv_link).to_have_attribute("href", re.compile(r"export\.csv\?action=key\.created"))
