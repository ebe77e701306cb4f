"""The catalog in Debian's Chromium: search, a filter and a sort each change the address and the
list; a model page's calculator gives the exact cost; the comparison shows three models; and a
model page shows live figures once traffic has gone through the relay."""

from __future__ import annotations

import re
from typing import Any

import openai
import pytest
from django.db.models import Sum
from playwright.sync_api import Page, expect

from catalog.figures import MIN_REQUESTS
from catalog.models import RouteHour
from catalog.selectors import cards, ordered

from .conftest import publish_catalog, wait_until

pytestmark = pytest.mark.browser


def row(page: Page, model_id: str) -> Any:
    return page.locator(f'[data-testid=models-table] tr[data-model="{model_id}"]')


def test_search_a_filter_and_a_sort_change_the_address_and_the_list(
    page: Page, live_server: Any, catalog: None
) -> None:
    base = live_server.url
    page.goto(f"{base}/models/")
    everything = page.get_by_test_id("model-count").inner_text()

    # Search: the list narrows as one types, and the address says so.
    page.get_by_label("Search").fill("mistral-large")
    expect(page).to_have_url(re.compile(r"/models/\?(.*&)?q=mistral-large"))
    expect(row(page, "mistral-large-2")).to_be_visible()
    expect(page.get_by_test_id("model-count")).not_to_have_text(everything)
    expect(row(page, "gpt-4o")).to_have_count(0)
    # The address holds the state: loaded again, it shows the same list.
    page.reload()
    expect(page.get_by_label("Search")).to_have_value("mistral-large")
    expect(row(page, "gpt-4o")).to_have_count(0)

    # A filter: Mistral's embedding models only; each option shows how many it would give.
    page.goto(f"{base}/models/?q=mistral")
    expect(row(page, "mistral-large-2")).to_be_visible()
    capabilities = page.get_by_role("group", name="Capabilities")
    embeddings = capabilities.get_by_label(re.compile(r"^Embeddings"))
    expect(capabilities.get_by_test_id("count-capability-embeddings")).not_to_have_text("0")
    embeddings.check()
    expect(page).to_have_url(re.compile(r"q=mistral&(.*&)?capability=embeddings"))
    expect(row(page, "mistral-embed")).to_be_visible()
    expect(row(page, "mistral-large-2")).to_have_count(0)
    expect(
        page.get_by_role("group", name="Capabilities").get_by_label(re.compile(r"^Embeddings"))
    ).to_be_checked()

    # A sort: dearest first.
    page.goto(f"{base}/models/")
    dearest = ordered(cards(), "-price")[0].id
    page.get_by_label("Sort by").select_option("-price")
    expect(page).to_have_url(re.compile(r"sort=-price"))
    first = page.locator("[data-testid=models-table] tbody tr").first
    expect(first).to_have_attribute("data-model", dearest)
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"sort=-price"))


def test_a_model_pages_calculator_gives_the_exact_cost(
    page: Page, live_server: Any, catalog: None
) -> None:
    # Mistral Large 2 is $2 per 1M input tokens and $6 per 1M output tokens.
    page.goto(f"{live_server.url}/models/?q=mistral-large-2")
    row(page, "mistral-large-2").get_by_role("link", name="Mistral Large 2", exact=True).click()
    expect(page).to_have_url(re.compile(r"/models/mistral-large-2/$"))
    expect(page.get_by_role("button", name="Copy model id")).to_be_visible()
    expect(page.get_by_test_id("model-id")).to_have_text("mistral-large-2")

    page.get_by_label("Input tokens", exact=True).fill("1000000")
    page.get_by_label("Output tokens", exact=True).fill("1000000")
    page.get_by_label("Cached input tokens", exact=True).fill("0")
    expect(page.get_by_test_id("cost-one")).to_have_text("$8.00")
    expect(page.get_by_test_id("cost-thousand")).to_have_text("$8,000.00")
    page.get_by_label("Output tokens", exact=True).fill("1")
    expect(page.get_by_test_id("cost-one")).to_have_text("$2.000006")
    expect(page.get_by_test_id("cost-thousand")).to_have_text("$2,000.006")


def test_the_comparison_shows_three_models(page: Page, live_server: Any, catalog: None) -> None:
    page.goto(f"{live_server.url}/models/?q=mistral-large-2")
    row(page, "mistral-large-2").get_by_role("link", name=re.compile("Add to compare")).click()
    expect(page.get_by_label("Model 1")).to_have_value("mistral-large-2")
    page.get_by_label("Model 2").fill("gpt-4o")
    page.get_by_label("Model 3").fill("claude-sonnet-4")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page).to_have_url(re.compile(r"ids=mistral-large-2&ids=gpt-4o&ids=claude-sonnet-4"))
    table = page.get_by_test_id("compare-table")
    expect(table.locator("thead th[data-model]")).to_have_count(3)
    for name in ("Mistral Large 2", "GPT-4o", "Claude Sonnet 4"):
        expect(table.locator("thead")).to_contain_text(name)
    expect(table.get_by_role("row", name=re.compile(r"^Input \(per 1M tokens\)"))).to_contain_text(
        "$2.00"
    )


def test_live_figures_appear_on_a_model_page_after_traffic_through_the_relay(
    page: Page,
    live_server: Any,
    relay: Any,
    catalog: None,
    worker: Any,
    alice_key: str,
) -> None:
    publish_catalog(relay)
    page.goto(f"{live_server.url}/models/mistral-small/")
    hour = page.locator(
        '[data-testid=route-figures] tbody[data-provider="mistral"] tr[data-window="hour"]'
    )
    expect(hour).to_contain_text("not enough data")

    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    for i in range(MIN_REQUESTS):
        hello = [{"role": "user", "content": f"Hello {i}"}]
        if i % 2:
            client.chat.completions.create(model="mistral-small", messages=hello)
        else:  # streamed: read to the end
            for _chunk in client.chat.completions.create(
                model="mistral-small", messages=hello, stream=True
            ):
                pass

    def recorded() -> bool:
        total = RouteHour.objects.filter(model_id="mistral-small").aggregate(n=Sum("requests"))
        return (total["n"] or 0) >= MIN_REQUESTS

    wait_until(recorded, timeout=20)
    page.reload()
    expect(hour).not_to_contain_text("not enough data")
    expect(hour).to_contain_text(re.compile(r"\d ms"))
    expect(hour).to_contain_text("100.00%")  # uptime: the upstream failed none of them
