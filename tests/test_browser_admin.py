"""An operator in the admin, in Debian's Chromium, and the relay obeying within a second: a key's
allowed models narrowed, a model's new price version billed from the next request, a route
switched off getting no more requests."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from billing.models import UsageEvent
from catalog.models import Model, Provider, Route
from catalog.services import save_provider, save_route
from keys.services import issue_key
from simulators.llm import start_in_thread

from .conftest import wait_until
from .test_relay import chat, post

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("catalog")]
OPS_PASSWORD = "an operator's long and unguessable passphrase"


@pytest.fixture
def ops_page(page: Page, live_server: Any, transactional_db: None) -> Page:
    """The operator (staff, no second factor), signed in through the portal's login."""
    call_command(
        "adduser", "ops@example.com", "--password", OPS_PASSWORD, "--staff", stdout=io.StringIO()
    )
    page.goto(f"{live_server.url}/admin/")
    page.fill("input[name=login]", "ops@example.com")
    page.fill("input[name=password]", OPS_PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    return page


@pytest.fixture
def buyer(make_user: Any) -> tuple[Any, str]:
    """A customer's key that may use Mistral Small and Mistral Large 2, and $5 to spend."""
    user = make_user("lou@example.com")
    call_command("credit", "lou@example.com", "5", stdout=io.StringIO())
    key, secret = issue_key(
        account=user.account,
        name="app",
        limits={"allowed_models": ["mistral-small", "mistral-large-2"]},
    )
    return key, secret


def save(page: Page) -> float:
    """Presses the admin's Save and waits for its confirmation; when the save was done."""
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("ul.messagelist")).to_contain_text("successfully")
    return time.monotonic()


def test_a_model_taken_from_a_key_is_refused_within_a_second(
    ops_page: Page, live_server: Any, relay: Any, buyer: tuple[Any, str]
) -> None:
    _, secret = buyer
    url = f"{relay.base_url}/chat/completions"
    assert post(url, chat("mistral-large-2"), key=secret)[0] == 200  # the relay caches the key

    page = ops_page
    page.goto(f"{live_server.url}/admin/keys/apikey/")
    page.get_by_role("link", name="app").click()
    models = page.get_by_label(re.compile(r"Mistral Large 2 \(mistral-large-2\)"))
    expect(models).to_be_checked()
    models.uncheck()
    saved = save(page)

    wait_until(lambda: post(url, chat("mistral-large-2"), key=secret)[0] == 403, timeout=1)
    assert time.monotonic() - saved < 1
    status, _, body = post(url, chat("mistral-large-2"), key=secret)
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert post(url, chat("mistral-small"), key=secret)[0] == 200


def test_a_new_price_version_bills_the_next_request(
    ops_page: Page, live_server: Any, relay: Any, worker: Any, buyer: tuple[Any, str]
) -> None:
    _, secret = buyer
    url = f"{relay.base_url}/chat/completions"
    page = ops_page
    page.goto(f"{live_server.url}/admin/catalog/model/")
    page.get_by_role("link", name="mistral-small", exact=True).click()
    page.get_by_role("link", name="Add a price version").click()
    expect(page.get_by_label("Model:")).to_have_value("mistral-small")
    expect(page.get_by_label("Input:", exact=True)).to_have_value("0.2")
    page.get_by_label("Input:", exact=True).fill("1.5")
    page.get_by_label("Output:", exact=True).fill("4")
    saved = save(page)
    expect(page).to_have_url(re.compile(r"/admin/catalog/model/mistral-small/change/$"))
    expect(page.locator("#prices-group")).to_contain_text("1.5")

    def billed() -> tuple[float, UsageEvent]:
        sent = time.monotonic()
        status, headers, body = post(url, chat("mistral-small", max_tokens=20), key=secret)
        assert status == 200, body
        event = wait_until(
            lambda: UsageEvent.objects.filter(request_id=headers["x-request-id"]).first()
        )
        return sent, event

    sent, event = billed()
    while event.price_version != 2:  # only in the moment before the relay reloaded
        assert sent - saved < 1, "billed at the old price a second after the save"
        sent, event = billed()
    assert sent - saved < 1
    price = Model.objects.get(id="mistral-small").price
    assert price is not None and price.version == 2 and price.input == Decimal("1.5")
    assert event.cost == price_cost(price, event)
    assert billed()[1].price_version == 2


def price_cost(price: Any, event: UsageEvent) -> Decimal:
    from core.pricing import cost

    return cost(
        price.as_price(),
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_tokens=event.cached_tokens,
    )


@pytest.fixture
def two_upstreams() -> Iterator[tuple[Any, Any]]:
    first, second = start_in_thread(), start_in_thread()
    yield first, second
    first.stop()
    second.stop()


def requests_to(upstream: Any) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{upstream.root_url}/_demo/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def test_a_route_switched_off_gets_no_more_requests(
    ops_page: Page,
    live_server: Any,
    relay: Any,
    buyer: tuple[Any, str],
    two_upstreams: tuple[Any, Any],
) -> None:
    _, secret = buyer
    url = f"{relay.base_url}/chat/completions"
    first, second = two_upstreams
    # mistral-small by two providers of its own: "first" is tried first, "second" after it.
    model = Model.objects.get(id="mistral-small")
    for route in Route.objects.filter(model=model):
        route.active = False
        save_route(route=route)
    for priority, (slug, upstream) in enumerate((("first", first), ("second", second))):
        provider = save_provider(
            provider=Provider(slug=slug, name=slug.title(), base_url=upstream.base_url),
            api_key=f"{slug}-upstream-key",
        )
        save_route(
            route=Route(
                model=model,
                provider=provider,
                upstream_model=model.upstream_model,
                priority=priority,
            )
        )

    def answered_by(upstream: Any) -> bool:
        before = requests_to(upstream)
        assert post(url, chat("mistral-small"), key=secret)[0] == 200
        return requests_to(upstream) > before

    wait_until(lambda: answered_by(first), timeout=2)

    page = ops_page
    page.goto(f"{live_server.url}/admin/catalog/route/?q=first")
    page.get_by_role("link", name="mistral-small", exact=True).click()
    expect(page.locator("#id_provider option:checked")).to_have_text("First")
    page.get_by_label("Active").uncheck()
    saved = save(page)

    wait_until(lambda: answered_by(second), timeout=1)
    assert time.monotonic() - saved < 1
    untouched = requests_to(first)
    for _ in range(5):
        assert answered_by(second)
    assert requests_to(first) == untouched
