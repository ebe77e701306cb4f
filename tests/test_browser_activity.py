"""The activity page in Debian's Chromium: a person signs in, opens /usage/, reads the 30-day
spend off the table alternative to the chart and finds the ledger's usage debits; the chart is
drawn; a breakdown row narrows the page to its model; a custom range with the dates reversed
is a form error."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import User
from billing import usage
from billing.models import LedgerEntry
from keys.services import issue_key

pytestmark = pytest.mark.browser
PASSWORD = "a long and unguessable passphrase"


def test_the_30_day_spend_on_the_page_is_the_ledgers_usage_debits(
    page: Page, live_server: Any
) -> None:
    base = live_server.url
    call_command("adduser", "ana@example.com", "--password", PASSWORD, stdout=io.StringIO())
    call_command("credit", "ana@example.com", "100", stdout=io.StringIO())
    account = User.objects.get(email="ana@example.com").account
    key = issue_key(account=account, name="ana's laptop")[0]
    now = timezone.now()
    usage.record_batch(
        [
            {
                "request_id": f"browser-activity-{n}",
                "account": account.pk,
                "key": key.pk,
                "model": "m-large" if n % 3 else "m-small",
                "cost": f"0.{n:02d}0000001",
                "prompt_tokens": 1000 + n,
                "completion_tokens": 100,
                "started_at": (now - timedelta(hours=11 * n)).timestamp(),
            }
            for n in range(1, 60)  # 1 to 27 days back
        ]
    )
    debits = -LedgerEntry.objects.filter(account=account, kind="usage").aggregate(s=Sum("amount"))[
        "s"
    ]

    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", "ana@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))

    page.goto(f"{base}/usage/")
    table = page.get_by_test_id("activity-table")
    expect(table).to_be_visible()
    spend = table.get_by_test_id("total-spend")
    assert Decimal(spend.get_attribute("data-value") or "") == debits
    assert spend.inner_text().replace(",", "") == f"{debits.normalize():f}"
    assert table.get_by_test_id("total-requests").inner_text() == "59"
    # The chart is drawn from the same figures (Chart.js sizes its canvas).
    canvas = page.locator("canvas[data-chart=activity-chart]")
    expect(canvas).to_have_attribute("width", re.compile(r"[1-9]\d*"))

    # A row of the breakdown by model narrows everything to that model.
    page.get_by_test_id("by-model").get_by_role("row", name=re.compile("m-small")).click()
    expect(page).to_have_url(re.compile(r"model=m-small"))
    narrowed = Decimal(page.get_by_test_id("total-spend").get_attribute("data-value") or "")
    assert 0 < narrowed < debits

    # A custom range with its dates reversed is a form error, not a failure.
    page.goto(f"{base}/usage/")
    page.select_option("select[name=range]", "custom")
    page.fill("input[name=from]", "2026-03-10")
    page.fill("input[name=to]", "2026-03-01")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("form-errors")).to_contain_text("after the last")
