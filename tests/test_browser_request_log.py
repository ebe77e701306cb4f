"""The request log in Debian's Chromium: a filter changes the list in place and the address
with it (htmx), the older and newer links page through, and a row opens the request's page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from keys.services import issue_key

from .conftest import PASSWORD
from .test_request_log import OTHER_MODEL, record

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("catalog")]


def test_a_filter_pages_and_a_requests_page(page: Page, live_server: Any, alice: Any) -> None:
    laptop = issue_key(account=alice.account, name="laptop")[0]
    for n in range(55):
        record(alice.account, laptop, n)
    other = record(alice.account, laptop, 100, model=OTHER_MODEL, finish_reason="length")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", alice.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).not_to_have_url(re.compile(r"/accounts/login/"))
    page.goto(f"{live_server.url}/usage/requests/")
    rows = page.locator("[data-testid=log-table] tbody tr")
    expect(rows).to_have_count(50)

    # Older, then newer again.
    page.get_by_test_id("older").click()
    expect(rows).to_have_count(6)
    page.get_by_test_id("newer").click()
    expect(rows).to_have_count(50)

    # A filter: the list changes in place, the address says so.
    page.get_by_label("Model").fill(OTHER_MODEL)
    page.get_by_label("Model").press("Enter")
    expect(page).to_have_url(re.compile(rf"model={OTHER_MODEL}"))
    expect(rows).to_have_count(1)
    page.get_by_label("Status").select_option("error")
    expect(page.get_by_text("No requests match these filters")).to_be_visible()
    page.get_by_label("Status").select_option("")
    expect(rows).to_have_count(1)

    # The row opens the request's page.
    rows.first.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/usage/requests/{other}/$"))
    expect(page.get_by_test_id("finish-reason")).to_have_text("length")
    assert errors == []
