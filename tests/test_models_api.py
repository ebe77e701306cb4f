"""The relay's model list, ``/v1/models/{id}`` and ``/endpoints``: OpenAI's fields that the openai
SDK reads, OpenRouter's beside them (prices per token as exact decimal strings), a real
``created``, ids with slashes; public without a key, a 401 in OpenAI's shape with a wrong one."""

from __future__ import annotations

import calendar
import json
import urllib.error
import urllib.request
from datetime import date
from decimal import Decimal
from typing import Any

import openai
import pytest

from catalog.api import per_token, plain
from catalog.models import Model, PriceVersion, Provider, Route
from core import keyformat
from keys.models import ApiKey
from keys.services import revoke_key

from .conftest import publish_catalog, wait_until

pytestmark = pytest.mark.usefixtures("catalog")


def get(url: str, **headers: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def a_gemini(release: date | None = None) -> Model:
    """A model whose id holds a slash, with every price type and a long-context tier."""
    google, _ = Provider.objects.update_or_create(
        slug="google",
        defaults={"name": "Google AI Studio", "base_url": "https://generativelanguage.example/v1"},
    )
    model = Model.objects.create(
        id="google/gemini-2.5-pro",
        name="Gemini 2.5 Pro",
        provider=google,
        upstream_model="gemini-2.5-pro",
        description="Google's reasoning model.",
        context_window=1_048_576,
        max_output_tokens=65_536,
        vision=True,
        reasoning=True,
        author="google",
        family="gemini",
        release_date=release,
        input_modalities=["text", "image", "audio"],
        output_modalities=["text"],
        supported_parameters=["temperature", "tools", "response_format"],
    )
    PriceVersion.objects.create(
        model=model,
        version=1,
        input=Decimal("1.25"),
        output=Decimal("10"),
        cached_input=Decimal("0.31"),
        cache_write=Decimal("1.5625"),
        cache_write_1h=Decimal("2.5"),
        reasoning=Decimal("10"),
        input_audio=Decimal("0.075"),
        request=Decimal("0.001"),
        image=Decimal("0.0025"),
        tiers=[{"above": 200_000, "input": "2.5", "output": "15", "cached_input": "0.625"}],
    )
    Route.objects.create(
        model=model, provider=google, upstream_model="gemini-2.5-pro", max_output_tokens=32_768
    )
    return model


def test_it_writes_prices_per_token_without_an_exponent() -> None:
    assert per_token("2") == "0.000002"
    assert per_token("2.00") == "0.000002"
    assert per_token("0.075") == "0.000000075"
    assert per_token("15") == "0.000015"
    assert per_token("2.5") == "0.0000025"
    assert per_token("0.000001") == "0.000000000001"
    assert per_token("1000000") == "1"
    assert per_token("0") == "0"
    assert plain(Decimal("0.0010")) == "0.001"
    assert plain(Decimal("10")) == "10"
    assert "E" not in per_token("0.01")


def test_it_lists_every_model_as_the_openai_sdk_reads_it(relay: Any, alice_key: str) -> None:
    publish_catalog(relay)
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key)
    models = {m.id: m for m in client.models.list()}
    listed = set(Model.objects.filter(active=True).values_list("id", flat=True))
    assert set(models) <= listed and "mistral-large-2" in models

    large = models["mistral-large-2"]
    row = Model.objects.get(id="mistral-large-2")
    assert large.object == "model"
    assert large.owned_by == (row.author or "mistral")
    # No release date in the file: when it was added here, never a primary key.
    assert large.created == int(row.added_at.timestamp())
    extra = large.model_extra or {}
    assert extra["pricing"]["prompt"] == "0.000002"  # $2 per 1M
    assert extra["pricing"]["completion"] == "0.000006"
    assert extra["pricing"]["request"] == "0" and extra["pricing"]["image"] == "0"
    assert extra["context_length"] == 128_000
    assert extra["top_provider"] == {
        "context_length": 128_000,
        "max_completion_tokens": 8192,
        "is_moderated": False,
    }
    assert extra["architecture"]["modality"].endswith("->text")
    assert extra["name"] == row.name and extra["description"] == row.description


def test_a_model_with_a_slash_in_its_id_is_served_whole(relay: Any) -> None:
    model = a_gemini(release=date(2025, 6, 17))
    publish_catalog(relay)

    status, body = get(f"{relay.base_url}/models/google/gemini-2.5-pro")
    assert status == 200, body
    assert body["id"] == model.id and body["object"] == "model"
    assert body["created"] == calendar.timegm((2025, 6, 17, 0, 0, 0)) == 1750118400
    assert body["owned_by"] == "google"
    assert body["pricing"] == {
        "prompt": "0.00000125",
        "completion": "0.00001",
        "input_cache_read": "0.00000031",
        "input_cache_write": "0.0000015625",
        "input_cache_write_1h": "0.0000025",
        "internal_reasoning": "0.00001",
        "audio": "0.000000075",
        "request": "0.001",
        "image": "0.0025",
    }
    assert body["pricing_tiers"] == [
        {
            "above": 200_000,
            "prompt": "0.0000025",
            "completion": "0.000015",
            "input_cache_read": "0.000000625",
        }
    ]
    assert body["architecture"] == {
        "modality": "text+image+audio->text",
        "input_modalities": ["text", "image", "audio"],
        "output_modalities": ["text"],
        "tokenizer": "gemini",
    }
    assert body["context_length"] == 1_048_576
    assert body["top_provider"]["max_completion_tokens"] == 32_768
    assert body["supported_parameters"] == ["temperature", "tools", "response_format"]

    status, body = get(f"{relay.base_url}/models/google/gemini-2.5-pro/endpoints")
    assert status == 200, body
    data = body["data"]
    assert data["id"] == model.id and data["name"] == "Gemini 2.5 Pro"
    assert data["created"] == 1750118400
    (endpoint,) = data["endpoints"]
    assert endpoint["provider_name"] == "Google AI Studio" and endpoint["tag"] == "google"
    assert endpoint["context_length"] == 1_048_576
    assert endpoint["max_completion_tokens"] == 32_768
    assert endpoint["pricing"]["prompt"] == "0.00000125"
    # No traffic yet: no figure is made up.
    assert endpoint["uptime_last_1h"] is None and endpoint["latency_last_1h"] is None
    assert endpoint["stats"]["hour"]["enough_data"] is False

    for missing in ("google/gemini-9", "google/gemini-9/endpoints", "endpoints"):
        status, body = get(f"{relay.base_url}/models/{missing}")
        assert status == 404 and body["error"]["code"] == "model_not_found"


def assert_incorrect_key(status: int, body: Any) -> None:
    assert status == 401, body
    assert body["error"]["message"].startswith("Incorrect API key provided")
    assert {k: v for k, v in body["error"].items() if k != "message"} == {
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_it_is_public_but_a_wrong_or_revoked_key_is_refused(
    relay: Any, alice: Any, alice_key: str
) -> None:
    publish_catalog(relay)
    models = f"{relay.base_url}/models"
    one = f"{relay.base_url}/models/mistral-large-2"
    for url in (models, one, f"{one}/endpoints"):
        status, _ = get(url)
        assert status == 200, url
        status, _ = get(url, Authorization=f"Bearer {alice_key}")
        assert status == 200, url
        # A typo (the checksum fails), a well-formed key nobody holds, either header.
        typo = alice_key[:-1] + ("A" if alice_key[-1] != "A" else "B")
        assert_incorrect_key(*get(url, Authorization=f"Bearer {typo}"))
        assert_incorrect_key(*get(url, Authorization=f"Bearer {keyformat.generate()}"))
        assert_incorrect_key(*get(url, **{"x-api-key": "sk-not-ours"}))

    # What a client that "tests the connection" with the list sees, through the SDK.
    client = openai.OpenAI(base_url=relay.base_url, api_key="tp-sk-typo")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.code == "invalid_api_key"

    revoke_key(key=ApiKey.objects.get(account=alice.account, name="laptop"))
    wait_until(lambda: get(models, Authorization=f"Bearer {alice_key}")[0] == 401)
    assert_incorrect_key(*get(models, Authorization=f"Bearer {alice_key}"))
