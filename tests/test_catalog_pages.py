"""The catalog pages as a visitor reads them: the list (search, filters with their counts,
orderings, pages), a model's page (every price type, the price history, the calculator's
exact cost, the snippets) and the comparison. A small shelf of models of our own, so the
stories do not depend on what the catalog file lists."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import DailyUsage
from catalog import views
from catalog.models import Model, PriceVersion, Provider, Route
from keys.services import issue_key

LIST = "/models/"


def provider(slug: str, name: str, **policy: Any) -> Provider:
    return Provider.objects.create(
        slug=slug, name=name, base_url=f"https://{slug}.example/v1", **policy
    )


def model(model_id: str, by: Provider, price: tuple[str, str], **fields: Any) -> Model:
    made = Model.objects.create(id=model_id, upstream_model=model_id, provider=by, **fields)
    Route.objects.create(model=made, provider=by, upstream_model=model_id)
    PriceVersion.objects.create(
        model=made, version=1, input=Decimal(price[0]), output=Decimal(price[1])
    )
    return made


@pytest.fixture
def shelf(db: None) -> dict[str, Model]:
    acme = provider(
        "acme", "Acme Cloud", region="EU", trains_on_prompts=False, prompt_retention_days=0
    )
    bolt = provider(
        "bolt", "Bolt AI", region="US", trains_on_prompts=True, prompt_retention_days=30
    )
    cirrus = provider("cirrus", "Cirrus", region="US")
    dark = provider("dark", "Dark Hosting", active=False)
    models = {
        "large": model(
            "acme/large",
            acme,
            ("3", "9"),
            name="Acme Large",
            author="acme",
            description="The flagship for careful reasoning.",
            context_window=128_000,
            function_calling=True,
            json_mode=True,
            reasoning=True,
            input_modalities=["text", "image"],
            release_date=date(2025, 5, 1),
            supported_parameters=["temperature", "tools"],
        ),
        "small": model(
            "acme/small",
            acme,
            ("0.2", "0.6"),
            name="Acme Small",
            author="acme",
            context_window=32_000,
            function_calling=True,
            open_weights=True,
            release_date=date(2024, 1, 1),
        ),
        "turbo": model(
            "bolt/turbo",
            bolt,
            ("5", "15"),
            name="Bolt Turbo",
            author="bolt",
            description="A million tokens of context.",
            context_window=1_000_000,
            structured_outputs=True,
            reasoning=True,
            input_modalities=["text", "image", "audio"],
            release_date=date(2025, 9, 1),
        ),
        "embed": model(
            "bolt/embed",
            bolt,
            ("0.1", "0"),
            name="Bolt Embed",
            author="bolt",
            context_window=8192,
            embeddings=True,
        ),
        "open": model(
            "cirrus/open-70b",
            cirrus,
            ("0.5", "0.9"),
            name="Open 70B",
            author="meta",
            context_window=131_072,
            open_weights=True,
        ),
        "hidden": model("acme/hidden", acme, ("1", "1"), name="Hidden", active=False),
        "dark": model("dark/secret", dark, ("1", "1"), name="Dark Secret"),
    }
    # Neither can be used, so neither is listed: a model without a price, one without a route.
    unpriced = Model.objects.create(id="acme/unpriced", upstream_model="u", provider=acme, name="U")
    Route.objects.create(model=unpriced, provider=acme, upstream_model="u")
    unrouted = Model.objects.create(id="acme/unrouted", upstream_model="r", provider=acme, name="R")
    PriceVersion.objects.create(model=unrouted, version=1, input=Decimal(1), output=Decimal(1))
    # Open 70B is served by Acme as well.
    Route.objects.create(model=models["open"], provider=acme, upstream_model="open-70b")
    # Acme Large was cheaper before: version 2 is the current price, $2 / $6.
    PriceVersion.objects.filter(model=models["large"]).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    PriceVersion.objects.create(
        model=models["large"], version=2, input=Decimal(2), output=Decimal(6)
    )
    return models


def listed(response: Any) -> list[str]:
    """The model ids of the list's rows, in order."""
    return re.findall(r'<tr data-model="([^"]+)"', response.content.decode())


def count(response: Any, facet: str, value: str = "") -> int:
    testid = f"count-{facet}-{value}" if value else f"count-{facet}"
    found = re.search(rf'data-testid="{re.escape(testid)}">(\d+)<', response.content.decode())
    assert found, testid
    return int(found.group(1))


ALL_LISTED = {"acme/large", "acme/small", "bolt/turbo", "bolt/embed", "cirrus/open-70b"}


def test_it_lists_the_listed_models_with_their_current_prices(shelf: Any) -> None:
    response = Client().get(LIST)
    assert response.status_code == 200
    # Not the unlisted model, the hidden host's, the one without a price nor the one without a
    # route.
    assert set(listed(response)) == ALL_LISTED
    body = response.content.decode()
    assert "$2.00" in body and "$6.00" in body  # Acme Large's current version, not $3 / $9
    assert "5 models of 5" in body
    assert 'href="/models/acme/large/"' in body
    assert "/models/compare/?ids=cirrus/open-70b" in body  # "Add to compare"
    # In the reader's number format, the same exact digits.
    french = Client().get(LIST, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "$2,00" in french and "$6,00" in french and "$2.00" not in french


def test_it_searches_ids_names_authors_and_descriptions(shelf: Any) -> None:
    client = Client()
    assert listed(client.get(LIST, {"q": "turbo"})) == ["bolt/turbo"]
    assert listed(client.get(LIST, {"q": "careful REASONING"})) == ["acme/large"]
    assert set(listed(client.get(LIST, {"q": "meta"}))) == {"cirrus/open-70b"}
    assert listed(client.get(LIST, {"q": "acme/"})) == ["acme/large", "acme/small"]
    assert "No model matches" in client.get(LIST, {"q": "nothing like it"}).content.decode()


def test_it_filters_by_provider_and_counts_what_each_other_provider_would_give(
    shelf: Any,
) -> None:
    response = Client().get(LIST, {"provider": "acme"})
    # Open 70B is served by Acme too.
    assert set(listed(response)) == {"acme/large", "acme/small", "cirrus/open-70b"}
    # A provider's count ignores the provider filter itself: ticking Bolt would add two.
    assert count(response, "provider", "acme") == 3
    assert count(response, "provider", "bolt") == 2
    assert count(response, "provider", "cirrus") == 1
    # Other facets count within the matches.
    assert count(response, "capability", "tools") == 2
    assert count(response, "author", "acme") == 2
    assert count(response, "open_weights") == 2
    both = Client().get(LIST, {"provider": ["acme", "bolt"]})
    assert set(listed(both)) == ALL_LISTED


def test_it_filters_by_author_capability_modality_and_open_weights(shelf: Any) -> None:
    client = Client()
    assert set(listed(client.get(LIST, {"author": ["bolt", "meta"]}))) == {
        "bolt/turbo",
        "bolt/embed",
        "cirrus/open-70b",
    }
    reasoning = client.get(LIST, {"capability": "reasoning"})
    assert set(listed(reasoning)) == {"acme/large", "bolt/turbo"}
    assert count(reasoning, "capability", "vision") == 2  # both take images
    assert count(reasoning, "capability", "structured") == 1
    assert listed(client.get(LIST, {"capability": ["reasoning", "structured"]})) == ["bolt/turbo"]
    assert listed(client.get(LIST, {"capability": "embeddings"})) == ["bolt/embed"]
    assert listed(client.get(LIST, {"input": "audio"})) == ["bolt/turbo"]
    images = client.get(LIST, {"input": "image"})
    assert set(listed(images)) == {"acme/large", "bolt/turbo"}
    assert count(images, "input", "audio") == 1
    assert listed(client.get(LIST, {"output": "embeddings"})) == ["bolt/embed"]
    assert set(listed(client.get(LIST, {"open_weights": "on"}))) == {
        "acme/small",
        "cirrus/open-70b",
    }


def test_it_filters_by_context_price_data_policy_and_region(shelf: Any) -> None:
    client = Client()
    assert listed(client.get(LIST, {"min_context": "200000"})) == ["bolt/turbo"]
    assert set(listed(client.get(LIST, {"min_context": "128000"}))) == {
        "acme/large",
        "bolt/turbo",
        "cirrus/open-70b",
    }
    assert set(listed(client.get(LIST, {"max_input": "0.5"}))) == {
        "acme/small",
        "bolt/embed",
        "cirrus/open-70b",
    }
    assert set(listed(client.get(LIST, {"max_output": "0.6"}))) == {"acme/small", "bolt/embed"}
    # Open 70B is also served by Cirrus, whose policy is not known: it does not qualify.
    assert set(listed(client.get(LIST, {"policy": "no_training"}))) == {
        "acme/large",
        "acme/small",
    }
    assert set(listed(client.get(LIST, {"policy": "zero_retention"}))) == {
        "acme/large",
        "acme/small",
    }
    us = client.get(LIST, {"region": "US"})
    assert set(listed(us)) == {"bolt/turbo", "bolt/embed", "cirrus/open-70b"}
    assert count(us, "region", "EU") == 3  # Acme's two and Open 70B
    assert count(us, "region", "US") == 3


def test_it_ignores_values_that_do_not_parse(shelf: Any) -> None:
    response = Client().get(
        LIST,
        {
            "provider": ["nope", "acme"],
            "capability": "telepathy",
            "max_input": "cheap",
            "min_context": "7",
            "sort": "sideways",
            "page": "ninety",
            "q": "x" * 500,
        },
    )
    assert response.status_code == 200
    assert set(listed(response)) == {"acme/large", "acme/small", "cirrus/open-70b"}
    nul = Client().get(LIST, {"q": "large\x00", "author": "acme\x00", "max_output": "1\x00"})
    assert nul.status_code == 200 and set(listed(nul)) == ALL_LISTED


def test_it_sorts_by_price_context_newest_and_use(shelf: Any, alice: Any) -> None:
    client = Client()
    assert listed(client.get(LIST, {"sort": "price"})) == [
        "bolt/embed",
        "acme/small",
        "cirrus/open-70b",
        "acme/large",
        "bolt/turbo",
    ]
    assert listed(client.get(LIST, {"sort": "-price"}))[:2] == ["bolt/turbo", "acme/large"]
    assert listed(client.get(LIST, {"sort": "context"}))[:3] == [
        "bolt/turbo",
        "cirrus/open-70b",
        "acme/large",
    ]
    assert listed(client.get(LIST, {"sort": "newest"}))[:3] == [
        "bolt/turbo",
        "acme/large",
        "acme/small",
    ]
    # Most used here: requests over the last 30 days, every account's, from the daily rollup.
    key, _ = issue_key(account=alice.account, name="laptop")
    today = timezone.now().date()
    for model_id, day, requests in (
        ("acme/small", today, 5),
        ("bolt/embed", today, 3),
        ("bolt/embed", today - timedelta(days=1), 1),
        ("cirrus/open-70b", today - timedelta(days=45), 100),  # too long ago
    ):
        DailyUsage.objects.create(
            account=alice.account, key=key, day=day, model_id=model_id, requests=requests
        )
    assert listed(client.get(LIST, {"sort": "used"}))[:2] == ["acme/small", "bolt/embed"]


def test_it_answers_htmx_with_the_results_alone_and_pages_keep_the_query(
    shelf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    client = Client()
    response = client.get(
        LIST,
        {"sort": "price", "page": "2"},
        headers={"HX-Request": "true", "HX-Target": "catalog-results"},
    )
    body = response.content.decode()
    assert "<html" not in body and 'id="catalog-q"' not in body
    assert listed(response) == ["cirrus/open-70b", "acme/large"]
    assert "Page 2 of 3" in body
    assert "/models/?sort=price&amp;page=3" in body and "/models/?sort=price&amp;page=1" in body
    assert "HX-Request" in response["Vary"]
    # A history restore asks for the whole page.
    restore = client.get(
        LIST,
        {"sort": "price"},
        headers={
            "HX-Request": "true",
            "HX-Target": "catalog-results",
            "HX-History-Restore-Request": "true",
        },
    )
    assert "<html" in restore.content.decode()


def test_the_list_reads_the_catalog_in_a_fixed_number_of_queries(
    shelf: Any, django_assert_max_num_queries: Any
) -> None:
    acme = Provider.objects.get(slug="acme")
    for i in range(60):
        made = model(f"acme/extra-{i}", acme, ("1", "2"), name=f"Extra {i}", author="acme")
        PriceVersion.objects.create(model=made, version=2, input=Decimal(1), output=Decimal(3))
    client = Client()
    with django_assert_max_num_queries(4):
        response = client.get(LIST, {"provider": "acme", "sort": "price", "q": "extra"})
    assert len(listed(response)) == views.PAGE_SIZE
    assert "60 models of 65" in response.content.decode()


def test_a_model_page_shows_the_model_every_price_and_the_snippets(
    shelf: Any, settings: Any
) -> None:
    settings.TP_RELAY_BASE_URL = "https://relay.example/v1"
    turbo = shelf["turbo"]
    PriceVersion.objects.create(
        model=turbo,
        version=2,
        input=Decimal(5),
        output=Decimal(15),
        cached_input=Decimal("0.5"),
        cache_write=Decimal("6.25"),
        cache_write_1h=Decimal(10),
        reasoning=Decimal(20),
        input_audio=Decimal(40),
        output_audio=Decimal(80),
        request=Decimal("0.001"),
        image=Decimal("0.0025"),
        audio_second=Decimal("0.0001"),
        tiers=[{"above": 200000, "input": "10", "output": "30"}],
    )
    response = Client().get(reverse("model_detail", args=["bolt/turbo"]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Bolt Turbo" in body and "A million tokens of context." in body
    assert 'aria-label="Copy model id"' in body and 'id="model-id"' in body
    for field, amount in (
        ("input", "$5.00"),
        ("output", "$15.00"),
        ("cached_input", "$0.50"),
        ("cache_write", "$6.25"),
        ("cache_write_1h", "$10.00"),
        ("reasoning", "$20.00"),
        ("input_audio", "$40.00"),
        ("output_audio", "$80.00"),
        ("request", "$0.001"),
        ("image", "$0.0025"),
        ("audio_second", "$0.0001"),
    ):
        row = re.search(rf'<tr data-price="{field}">(.*?)</tr>', body, re.S)
        assert row and amount in row.group(1), field
    assert "Prompts above 200,000 tokens" in body and "$30.00" in body
    # The calculator prices a long prompt at its tier, and adds the per-request price.
    long_prompt = {"input_tokens": "300000", "output_tokens": "0"}
    body = Client().get(reverse("model_detail", args=["bolt/turbo"]), long_prompt).content.decode()
    assert 'data-testid="cost-one">$3.001<' in body
    assert 'data-testid="cost-thousand">$3,001.00<' in body
    assert "1,000,000 tokens" in body  # context
    # Snippets name the exact id and the relay: its /v1 base, and its root for Anthropic's SDK.
    assert 'model="bolt/turbo"' in body and 'model: "bolt/turbo"' in body
    assert "curl https://relay.example/v1/chat/completions" in body
    assert 'base_url="https://relay.example", api_key' in body
    # The routes with their data policy and figures (too few requests yet).
    assert "Does not train on prompts" not in body and "Trains on prompts" in body
    assert "not enough data" in body


def test_a_model_page_draws_the_price_history_from_every_version(shelf: Any) -> None:
    body = Client().get(reverse("model_detail", args=["acme/large"])).content.decode()
    assert body.count("<polyline") == 2  # input and output
    versions = re.search(r'data-testid="price-versions">(.*?)</table>', body, re.S)
    assert versions
    assert "$3.00" in versions.group(1) and "$2.00" in versions.group(1)
    points = re.findall(r'class="chart-line chart-input" points="([^"]+)"', body)[0].split()
    assert len(points) == 4  # two steps
    assert points[1].split(",")[1] != points[3].split(",")[1]  # the price went down


def test_unknown_and_unlisted_models_are_not_found(shelf: Any) -> None:
    client = Client()
    for model_id in (
        "acme/nothing",
        "acme/hidden",
        "dark/secret",
        "acme/unpriced",
        "acme/unrouted",
    ):
        assert client.get(reverse("model_detail", args=[model_id])).status_code == 404
    # Nothing a model id cannot be reaches the database, a NUL byte included.
    assert client.get("/models/acme%00large/").status_code == 404
    assert (
        client.get("/models/compare/", {"ids": ["acme/large\x00", "a" * 5000]}).status_code == 200
    )


def test_the_calculator_gives_the_exact_cost_of_one_request_and_of_a_thousand(
    shelf: Any,
) -> None:
    client = Client()
    url = reverse("model_detail", args=["acme/large"])
    tokens = {"input_tokens": "1000000", "output_tokens": "1000000", "cached_tokens": "0"}
    body = client.get(url, tokens).content.decode()
    assert 'data-testid="cost-one">$8.00<' in body
    assert 'data-testid="cost-thousand">$8,000.00<' in body
    # htmx asks for the result alone.
    fragment = client.get(
        url, tokens, headers={"HX-Request": "true", "HX-Target": "cost-result"}
    ).content.decode()
    assert fragment.strip().startswith('<div id="cost-result"') and "<html" not in fragment
    # Cached tokens at the cached price: 1,000 × $5 + 2,000 × $0.5 + 500 × $15, per 1M.
    PriceVersion.objects.create(
        model=shelf["turbo"],
        version=2,
        input=Decimal(5),
        output=Decimal(15),
        cached_input=Decimal("0.5"),
    )
    turbo = reverse("model_detail", args=["bolt/turbo"])
    small = {"input_tokens": "1000", "output_tokens": "500", "cached_tokens": "2000"}
    body = client.get(turbo, small).content.decode()
    assert 'data-testid="cost-one">$0.0135<' in body
    assert 'data-testid="cost-thousand">$13.50<' in body
    # A nano-dollar is never lost: 1 token at $0.2 per 1M.
    one = {"input_tokens": "1", "output_tokens": "0"}
    body = client.get(reverse("model_detail", args=["acme/small"]), one).content.decode()
    assert 'data-testid="cost-one">$0.0000002<' in body
    assert 'data-testid="cost-thousand">$0.0002<' in body
    bad = client.get(url, {"input_tokens": "-3", "output_tokens": "many"})
    assert bad.status_code == 200 and "Enter whole numbers of tokens" in bad.content.decode()


def test_it_compares_two_to_four_models_side_by_side(shelf: Any) -> None:
    client = Client()
    url = reverse("models_compare")

    def columns(response: Any) -> list[str]:
        return re.findall(r'<th scope="col" data-model="([^"]+)"', response.content.decode())

    two = client.get(url, {"ids": ["acme/large", "bolt/turbo"]})
    assert columns(two) == ["acme/large", "bolt/turbo"]
    body = two.content.decode()
    assert "$2.00" in body and "$5.00" in body and "1,000,000" in body
    three = client.get(url, {"ids": ["acme/large", "bolt/turbo", "cirrus/open-70b"]})
    assert columns(three) == ["acme/large", "bolt/turbo", "cirrus/open-70b"]
    ids = ["acme/small", "acme/large", "bolt/turbo", "bolt/embed", "cirrus/open-70b"]
    four = client.get(url, {"ids": ids})
    assert columns(four) == ids[:4]
    assert "the first 4 are shown" in four.content.decode()
    one = client.get(url, {"ids": ["acme/large", "acme/hidden", "acme/large"]})
    assert columns(one) == []
    body = one.content.decode()
    assert "Pick at least two models" in body and "acme/hidden" in body  # named as unknown
    assert 'value="acme/large"' in body  # kept in the picker
    assert '<datalist id="listed-models">' in body and 'value="dark/secret"' not in body
    assert client.get(url).status_code == 200
