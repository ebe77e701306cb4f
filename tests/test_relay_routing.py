"""Provider routing per request (OpenRouter's ``provider`` object and ``models`` list), and
routes priced apart from their model.

One model, MODEL, is served by two working upstreams of its own ("cheap" and "dear", each a
provider with a route price of its own) and, where a test needs one, a failing one
("broken"). Which provider served a request is read from its usage event."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import orjson
import pytest

from billing.models import LedgerEntry
from catalog.models import Model, PriceVersion, Provider, Route
from catalog.services import new_price_version
from core import pricing, routing, state
from keys.models import ApiKey
from simulators.llm import start_in_thread

from .conftest import publish_catalog, relay_redis
from .test_relay import assert_error, chat, post, recorded
from .test_relay_limits import key_with

pytestmark = pytest.mark.usefixtures("catalog")

MODEL = "mistral-small"  # $0.20 / $0.60 per 1M tokens (the model's own price)
FALLBACK = "mistral-large-2"  # $2 / $6
SEEDED = "deepseek-v4-flash"  # the seed's model with a route priced apart (via Fireworks)
CHEAP = (Decimal("0.10"), Decimal("0.30"))
DEAR = (Decimal("0.40"), Decimal("1.20"))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    started = {
        "cheap": start_in_thread(),
        "dear": start_in_thread(),
        "broken": start_in_thread(error="503"),
    }
    yield started
    for server in started.values():
        server.stop()


def route(
    model_id: str,
    slug: str,
    base_url: str,
    *,
    priority: int = 0,
    price: tuple[Decimal, Decimal] | None = None,
    trains: bool | None = None,
    retention: int | None = None,
) -> Route:
    provider, _ = Provider.objects.update_or_create(
        slug=slug,
        defaults={
            "name": slug.title(),
            "base_url": base_url,
            "api_key": "upstream-key",
            "trains_on_prompts": trains,
            "prompt_retention_days": retention,
        },
    )
    model = Model.objects.get(id=model_id)
    made = Route.objects.create(
        model=model, provider=provider, upstream_model=model.upstream_model, priority=priority
    )
    if price is not None:
        new_price_version(model=model, source="admin", route=made, input=price[0], output=price[1])
    return made


def unroute(*model_ids: str) -> None:
    PriceVersion.objects.filter(route__model_id__in=model_ids).delete()
    Route.objects.filter(model_id__in=model_ids).delete()


@pytest.fixture
def two(relay: Any, servers: dict[str, Any]) -> None:
    """MODEL via "cheap" (trains on prompts, keeps them 30 days) and "dear" (neither): the
    operator puts "dear" first."""
    unroute(MODEL)
    route(MODEL, "cheap", servers["cheap"].base_url, priority=1, price=CHEAP, trains=True)
    route(MODEL, "dear", servers["dear"].base_url, price=DEAR, trains=False, retention=0)
    publish_catalog(relay)


def served(relay: Any, secret: str, preferences: dict[str, Any] | None = None, **extra: Any) -> Any:
    body = chat(MODEL, max_tokens=8, **extra)
    if preferences is not None:
        body["provider"] = preferences
    status, headers, answer = post(f"{relay.base_url}/chat/completions", body, key=secret)
    assert status == 200, answer
    return recorded(headers["x-request-id"])


def refused(relay: Any, secret: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, answer = post(f"{relay.base_url}/chat/completions", body, key=secret)
    return status, answer


def last_request(server: Any) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.root_url}/_demo/requests/last", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


# ---- the validator (core.routing) --------------------------------------------------------------


def test_it_normalises_the_preferences() -> None:
    assert routing.parse(
        {
            "order": ["Dear", "cheap", "dear"],
            "allow_fallbacks": False,
            "sort": "price",
            "max_price": {"prompt": 1, "completion": "2.50", "image": None},
            "data_collection": "deny",
            "zdr": True,
            "only": None,
        }
    ) == {
        "order": ["dear", "cheap"],
        "allow_fallbacks": False,
        "sort": "price",
        "max_price": {"prompt": "1", "completion": "2.5"},
        "data_collection": "deny",
        "zdr": True,
    }
    assert routing.merge({"only": ["a"], "sort": "price"}, {"sort": "latency"}) == {
        "only": ["a"],
        "sort": "latency",
    }


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("price", "provider"),
        ({"colour": "blue"}, "provider.colour"),
        ({"order": "dear"}, "provider.order"),
        ({"only": [1]}, "provider.only"),
        ({"ignore": {}}, "provider.ignore"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"max_price": 1}, "provider.max_price"),
        ({"max_price": {"tokens": 1}}, "provider.max_price.tokens"),
        ({"max_price": {"prompt": -1}}, "provider.max_price.prompt"),
        ({"max_price": {"prompt": "lots"}}, "provider.max_price.prompt"),
        ({"max_price": {"prompt": True}}, "provider.max_price.prompt"),
        ({"data_collection": "never"}, "provider.data_collection"),
        ({"zdr": 1}, "provider.zdr"),
    ],
)
def test_it_names_the_faulty_field(value: Any, param: str) -> None:
    with pytest.raises(routing.PreferenceError) as caught:
        routing.parse(value)
    assert caught.value.param == param


# ---- each field through the relay --------------------------------------------------------------


def test_order_puts_a_provider_first(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    for _ in range(3):
        assert served(relay, secret, {"order": ["cheap", "dear"]}).provider == "cheap"


def test_only_and_ignore(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    assert served(relay, secret, {"only": ["cheap"]}).provider == "cheap"
    assert served(relay, secret, {"ignore": ["dear"]}).provider == "cheap"
    assert served(relay, secret, {"ignore": ["cheap"]}).provider == "dear"


def test_without_preferences_the_operators_order_stands(
    relay: Any, alice: Any, worker: Any, two: None, servers: dict[str, Any]
) -> None:
    secret = key_with(alice)
    event = served(relay, secret)
    assert event.provider == "dear"
    # Billed at the route's own price, with its version.
    price = PriceVersion.objects.get(route__provider__slug="dear", model_id=MODEL)
    assert event.price_version == price.version
    # Nothing of the routing fields reaches an upstream.
    served(relay, secret, {"order": ["dear"]}, models=[MODEL])
    sent = last_request(servers["dear"])
    assert "provider" not in sent["body"] and "models" not in sent["body"]


def test_every_endpoint_takes_preferences(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="Hi", extra_body={"provider": {"only": ["cheap"]}}
    )
    assert recorded(raw.headers["x-request-id"]).provider == "cheap"
    status, headers, answer = post(
        f"{relay.base_url}/messages",
        {
            "model": MODEL,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hi"}],
            "provider": {"sort": "price"},
        },
        key=secret,
    )
    assert status == 200, answer
    assert recorded(headers["x-request-id"]).provider == "cheap"
    status, headers, answer = post(
        f"{relay.base_url}/embeddings",
        {"model": "mistral-embed", "input": "Hi", "provider": {"only": ["mistral"]}},
        key=secret,
    )
    assert status == 200, answer
    status, _, answer = post(
        f"{relay.base_url}/embeddings",
        {"model": "mistral-embed", "input": "Hi", "provider": {"ignore": ["mistral"]}},
        key=secret,
    )
    assert_error(status, answer, 404, "no_route_matches_preferences")


def test_allow_fallbacks(relay: Any, alice: Any, worker: Any, servers: dict[str, Any]) -> None:
    unroute(MODEL)
    route(MODEL, "broken", servers["broken"].base_url)
    route(MODEL, "cheap", servers["cheap"].base_url, priority=1, price=CHEAP)
    publish_catalog(relay)
    secret = key_with(alice)
    # Fallbacks allowed (the default): the preferred route fails, the next one serves.
    assert served(relay, secret, {"order": ["broken"]}).provider == "cheap"
    # Not allowed: the preferred route's failure is the answer.
    status, answer = refused(
        relay,
        secret,
        {**chat(MODEL), "provider": {"order": ["broken"], "allow_fallbacks": False}},
    )
    assert status in (502, 503), answer
    # Without an order: only the first provider that would be tried.
    status, answer = refused(relay, secret, {**chat(MODEL), "provider": {"allow_fallbacks": False}})
    assert status in (502, 503), answer


def test_sort_by_price_picks_the_cheaper_route(
    relay: Any, alice: Any, worker: Any, two: None
) -> None:
    secret = key_with(alice)
    for _ in range(3):
        event = served(relay, secret, {"sort": "price"})
        assert event.provider == "cheap"  # though the operator ranks it second
        assert event.cost == pricing.cost(
            PriceVersion.objects.get(route__provider__slug="cheap", model_id=MODEL).as_price(),
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
        )


def figures(*entries: tuple[str, float | None, float | None]) -> None:
    """MODEL's live figures, (provider, tokens a second, ms to the first token) per route;
    None: not enough data."""
    published = [
        {
            "provider": slug,
            "windows": {
                "hour": {
                    "enough_data": tps is not None,
                    "p50_tokens_per_second": tps,
                    "p50_ttfb_ms": ttfb,
                }
            },
        }
        for slug, tps, ttfb in entries
    ]
    relay_redis().hset(state.ROUTE_FIGURES, MODEL, orjson.dumps(published))


def test_sort_by_throughput_and_latency(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    figures(("cheap", 120.0, 900.0), ("dear", 40.0, 150.0))
    assert served(relay, secret, {"sort": "throughput"}).provider == "cheap"
    assert served(relay, secret, {"sort": "latency"}).provider == "dear"
    # A route without figures sorts last.
    figures(("cheap", 5.0, 2000.0), ("dear", None, None))
    assert served(relay, secret, {"sort": "throughput"}).provider == "cheap"
    assert served(relay, secret, {"sort": "latency"}).provider == "cheap"


def test_max_price_admits_and_refuses(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    # dear's $0.40 prompt is above the limit: cheap serves, though ranked second.
    assert served(relay, secret, {"max_price": {"prompt": 0.2}}).provider == "cheap"
    assert served(relay, secret, {"max_price": {"prompt": 1, "completion": 5}}).provider == "dear"
    status, answer = refused(
        relay, secret, {**chat(MODEL), "provider": {"max_price": {"prompt": 0.05}}}
    )
    assert_error(status, answer, 404, "no_route_matches_preferences")
    message = answer["error"]["message"]
    assert f"No route for model {MODEL} matches your provider preferences" in message
    assert "max_price.prompt 0.05 is below every route's price (the lowest is 0.1)" in message


def test_data_collection_deny_and_zdr(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    # cheap trains on prompts; dear states it does not and keeps none.
    for _ in range(2):
        assert served(relay, secret, {"data_collection": "deny", "order": ["cheap"]}).provider == (
            "dear"
        )
        assert served(relay, secret, {"zdr": True, "sort": "price"}).provider == "dear"
    Provider.objects.filter(slug="dear").update(trains_on_prompts=None, prompt_retention_days=30)
    publish_catalog(relay)
    for preferences, why in (
        ({"data_collection": "deny"}, "data_collection 'deny': none of its providers"),
        ({"zdr": True}, "zdr: none of its providers (cheap, dear) keeps prompts for zero days"),
    ):
        status, answer = refused(relay, secret, {**chat(MODEL), "provider": preferences})
        assert_error(status, answer, 404, "no_route_matches_preferences")
        assert why in answer["error"]["message"]


def test_models_falls_back_to_the_next_model_billed_at_its_price(
    relay: Any, alice: Any, worker: Any, servers: dict[str, Any]
) -> None:
    unroute(MODEL, FALLBACK)
    route(MODEL, "broken", servers["broken"].base_url)
    route(FALLBACK, "cheap", servers["cheap"].base_url)
    publish_catalog(relay)
    secret = key_with(alice)
    client = openai.OpenAI(base_url=relay.base_url, api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        extra_body={"models": [MODEL, FALLBACK]},
    )
    event = recorded(raw.headers["x-request-id"])
    assert event.model_id == FALLBACK and event.provider == "cheap"
    price = Model.objects.get(id=FALLBACK).price
    assert price is not None and event.price_version == price.version
    assert event.cost == pricing.cost(
        price.as_price(),
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
    )
    assert (
        last_request(servers["cheap"])["body"]["model"]
        == Model.objects.get(id=FALLBACK).upstream_model
    )
    # The failed attempt counts against the route that failed: the first model's.
    from catalog.models import RouteHour

    assert RouteHour.objects.filter(model_id=MODEL, provider="broken").exclude(errors=0).exists()
    assert not RouteHour.objects.filter(model_id=FALLBACK, provider="broken").exists()


def test_a_route_priced_request_is_debited_exactly(
    relay: Any, alice: Any, worker: Any, two: None
) -> None:
    secret = key_with(alice)
    event = served(
        relay,
        secret,
        {"only": ["cheap"]},
    )
    route_price = PriceVersion.objects.get(route__provider__slug="cheap", model_id=MODEL)
    assert event.price_version == route_price.version
    expected = pricing.cost(
        route_price.as_price(),
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
    )
    assert expected > 0 and event.cost == expected
    # The model's own price would have charged otherwise.
    model_price = Model.objects.get(id=MODEL).price
    assert model_price is not None and model_price.route_id is None
    assert (
        pricing.cost(
            model_price.as_price(),
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
        )
        != expected
    )
    debit = LedgerEntry.objects.get(kind="usage")
    assert debit.amount == -expected


def test_key_defaults_and_their_override(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice, routing={"only": ["cheap"], "sort": "latency"})
    assert served(relay, secret).provider == "cheap"
    # The request's field replaces the key's; the key's other fields stay.
    assert served(relay, secret, {"only": ["dear"]}).provider == "dear"
    status, answer = refused(relay, secret, {**chat(MODEL), "provider": {"ignore": ["cheap"]}})
    assert_error(status, answer, 404, "no_route_matches_preferences")
    message = answer["error"]["message"]
    assert "provider.ignore excludes every one of its providers (cheap, dear)" in message
    assert ApiKey.objects.get(name="limited").routing == {"only": ["cheap"], "sort": "latency"}


def test_bad_preferences_are_400_naming_the_field(relay: Any, alice: Any, two: None) -> None:
    secret = key_with(alice)
    for preferences, param in (
        ({"colour": "blue"}, "provider.colour"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"only": "cheap"}, "provider.only"),
        ({"max_price": {"prompt": "x"}}, "provider.max_price.prompt"),
        ({"order": ["cheap", "nowhere"]}, "provider.order"),
    ):
        status, answer = refused(relay, secret, {**chat(MODEL), "provider": preferences})
        assert_error(status, answer, 400)
        assert answer["error"]["param"] == param, answer
    status, answer = refused(relay, secret, {**chat(MODEL), "provider": {"only": ["nowhere"]}})
    assert "unknown providers: nowhere" in answer["error"]["message"]
    status, answer = refused(relay, secret, {**chat(MODEL), "models": "mistral-large-2"})
    assert_error(status, answer, 400)
    assert answer["error"]["param"] == "models"
    status, answer = refused(relay, secret, {**chat(MODEL), "models": [MODEL, "gpt-9"]})
    assert_error(status, answer, 404, "model_not_found")


def test_a_known_provider_that_serves_other_models_only_is_404(
    relay: Any, alice: Any, two: None
) -> None:
    secret = key_with(alice)
    status, answer = refused(relay, secret, {**chat(MODEL), "provider": {"only": ["openai"]}})
    assert_error(status, answer, 404, "no_route_matches_preferences")
    assert "provider.only names none of its providers (cheap, dear)" in answer["error"]["message"]


def test_a_pin_never_overrides_preferences(relay: Any, alice: Any, worker: Any, two: None) -> None:
    """Both routes at one priority, so that a conversation is pinned to whichever served it;
    preferences that exclude the pinned route, or order another first, still win."""
    Route.objects.filter(model_id=MODEL).update(priority=0)
    publish_catalog(relay)
    secret = key_with(alice)
    session = {"x-session-id": "pinned-conversation"}

    def turn(preferences: dict[str, Any] | None) -> str:
        body = chat(MODEL, max_tokens=8)
        if preferences is not None:
            body["provider"] = preferences
        status, headers, answer = post(
            f"{relay.base_url}/chat/completions", body, key=secret, **session
        )
        assert status == 200, answer
        return str(recorded(headers["x-request-id"]).provider)

    pinned = turn(None)
    other = "cheap" if pinned == "dear" else "dear"
    assert turn(None) == pinned  # the pin holds
    assert turn({"ignore": [pinned]}) == other
    assert turn({"order": [other]}) == other
    assert turn({"sort": "price"}) == "cheap"
    # Among routes the preferences admit alike, the pin still chooses.
    assert turn({"only": ["cheap", "dear"]}) in (pinned, other)


def test_the_hold_covers_the_dearest_route_that_may_serve() -> None:
    from relay.holds import Holds
    from relay.prices import NanoPrice
    from relay.request import Request
    from relay.routing import Plan

    def price(version: int, given: str, made: str) -> dict[str, object]:
        return pricing.Price(version=version, input=Decimal(given), output=Decimal(made)).as_dict()

    def model(name: str, own: dict[str, object], *routes: dict[str, object]) -> dict[str, Any]:
        return {
            "id": name,
            "context_window": 100_000,
            "max_output_tokens": 1000,
            "price": own,
            "routes": [{"provider": f"p{i}", "price": p} for i, p in enumerate(routes)],
        }

    first = model("m", price(1, "1", "1"), price(2, "1", "2"), price(3, "3", "4"))
    second = model("n", price(1, "5", "9"))
    second["routes"] = [{"provider": "q"}]  # charged the model's price

    def hold(plan: Plan | None, m: dict[str, Any] = first) -> int:
        req = Request()
        req.model, req.routes, req.plan = m, m["routes"], plan
        req.body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        return Holds().worst_case(req, 200, "chat")

    def most(p: dict[str, object]) -> int:
        return NanoPrice(pricing.Price.from_dict(p)).most(prompt_tokens=200, completion_tokens=10)

    assert hold(None) == most(price(3, "3", "4"))  # either route may serve: the dearer
    assert hold(Plan([(first, first["routes"][0])], 1)) == most(price(2, "1", "2"))
    both_models = Plan([(first, first["routes"][0]), (second, second["routes"][0])], 1)
    assert hold(both_models) == most(price(1, "5", "9"))  # the fallback model is dearer


def test_endpoints_show_each_routes_price(relay: Any, two: None) -> None:
    with urllib.request.urlopen(f"{relay.base_url}/models/{MODEL}/endpoints", timeout=5) as r:
        body = json.loads(r.read())
    pricing_of = {e["tag"]: e["pricing"] for e in body["data"]["endpoints"]}
    assert pricing_of["cheap"]["prompt"] == "0.0000001"
    assert pricing_of["dear"]["prompt"] == "0.0000004"


def test_usage_events_of_a_fallback_count_attempts_for_their_model() -> None:
    from billing import routestats

    slots: dict[Any, Any] = {}
    routestats._count(
        {
            "model": FALLBACK,
            "provider": "cheap",
            "started_at": 1_700_000_000,
            "status": "ok",
            "attempts": [["broken", "x", "upstream_error", MODEL], ["b", "y", "rate_limited"]],
        },
        slots,
    )
    assert {(model, provider) for model, provider, _ in slots} == {
        (MODEL, "broken"),
        (FALLBACK, "b"),
        (FALLBACK, "cheap"),
    }


# ---- route prices in the catalog ------------------------------------------------------------


def test_the_seed_prices_a_route_apart_and_the_pages_show_it() -> None:
    from django.test import Client
    from django.urls import reverse

    from catalog.sync import snapshot

    model = Model.objects.get(id=SEEDED)
    own = model.price
    assert own is not None and own.route_id is None and own.input == Decimal("0.14")
    fireworks = PriceVersion.objects.get(model=model, route__provider__slug="fireworks")
    assert (fireworks.input, fireworks.output) == (Decimal("0.12"), Decimal("0.24"))
    published = snapshot()["models"][SEEDED]
    assert published["price"]["input"] == own.as_price().as_dict()["input"]
    by_provider = {r["provider"]: r for r in published["routes"]}
    assert "price" not in by_provider["deepseek"]
    assert by_provider["fireworks"]["pricing"]["prompt"] == "0.00000012"
    page = Client().get(reverse("model_detail", args=[SEEDED])).content.decode()
    assert 'data-testid="route-prices"' in page and "Fireworks AI" in page
    # The model's list and price history show the model's own price only.
    listing = Client().get(reverse("models")).content.decode()
    assert "$0.28" in listing and "$0.24" not in listing


def test_loading_the_catalog_again_adds_no_route_price() -> None:
    from django.core.management import call_command

    versions = PriceVersion.objects.count()
    call_command("loadcatalog", stdout=open("/dev/null", "w"))
    assert PriceVersion.objects.count() == versions


def test_a_route_with_prices_of_its_own_is_switched_off_never_deleted() -> None:
    """Usage keeps the price version it was charged at: deleting a route's prices would let
    the model's next version take one of their numbers."""
    from catalog import services

    route_ = Route.objects.get(model_id=SEEDED, provider__slug="fireworks")
    Route.objects.filter(pk=route_.pk).update(in_file=False)
    route_.refresh_from_db()
    with pytest.raises(services.PricedRoute):
        services.delete_route(route=route_)
    last = PriceVersion.objects.filter(model_id=SEEDED).order_by("-version").first()
    assert last is not None
    added = services.add_price_version(
        model=Model.objects.get(id=SEEDED), input=Decimal("0.3"), output=Decimal("0.9")
    )
    assert added.version == last.version + 1 and added.route is None
    assert Model.objects.get(id=SEEDED).price == added


def test_a_model_no_route_of_which_matches_is_passed_over_for_the_next(
    relay: Any, alice: Any, worker: Any, two: None
) -> None:
    secret = key_with(alice)
    status, headers, answer = post(
        f"{relay.base_url}/chat/completions",
        {**chat(MODEL), "models": [MODEL, FALLBACK], "provider": {"only": ["mistral"]}},
        key=secret,
    )
    assert status == 200, answer
    event = recorded(headers["x-request-id"])
    assert (event.model_id, event.provider) == (FALLBACK, "mistral")
    status, answer = refused(
        relay,
        secret,
        {**chat(MODEL), "models": [MODEL, FALLBACK], "provider": {"only": ["openai"]}},
    )
    assert_error(status, answer, 404, "no_route_matches_preferences")
    assert answer["error"]["message"] == (
        f"No route for any of the models {MODEL}, {FALLBACK} matches your provider preferences: "
        f"{MODEL}: provider.only names none of its providers (cheap, dear); "
        f"{FALLBACK}: provider.only names none of its providers (mistral)."
    )


def test_the_floor_and_nitro_shortcuts(relay: Any, alice: Any, worker: Any, two: None) -> None:
    secret = key_with(alice)
    figures(("cheap", 5.0, 900.0), ("dear", 80.0, 150.0))
    for name, provider in ((f"{MODEL}:floor", "cheap"), (f"{MODEL}:nitro", "dear")):
        status, headers, answer = post(
            f"{relay.base_url}/chat/completions", chat(name, max_tokens=8), key=secret
        )
        assert status == 200, answer
        event = recorded(headers["x-request-id"])
        assert (event.model_id, event.provider) == (MODEL, provider)
    # The request's own sort wins over the suffix's.
    status, headers, answer = post(
        f"{relay.base_url}/chat/completions",
        {**chat(f"{MODEL}:floor", max_tokens=8), "provider": {"sort": "throughput"}},
        key=secret,
    )
    assert status == 200 and recorded(headers["x-request-id"]).provider == "dear"
    for unknown in ("no-such-model:floor", f"{MODEL}:cheapest"):
        status, answer = refused(relay, secret, chat(unknown))
        assert_error(status, answer, 404, "model_not_found")
