"""Publishes the catalog (models, aliases, routes, current prices) to the relay's view.

Provider API keys travel encrypted (``api_key_encrypted``, a Fernet token under
``TP_SECRETS_KEYS``): the relay decrypts them once per catalog load, so Redis never holds one
in plain text.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import orjson
from django.conf import settings
from django.db.models import Prefetch

from core import state
from lib.redis import client, evict
from lib.secrets import box

from . import api, figures, health
from .models import Model, PriceVersion, Provider, Route

DEMO_API_KEY = "demo"


@lru_cache(maxsize=64)
def _sealed(plain: str, keys: tuple[str, ...]) -> str:
    """One token per key from the environment (the keys in the argument: a rotation seals
    anew), not a fresh encryption for every route of every publication."""
    return box().encrypt(plain)


def provider_endpoint(provider: Provider) -> tuple[str, str, bool]:
    """(base URL, the API key encrypted, served by the demo upstream). The environment
    overrides the database; in demo mode a provider without a key is answered by the demo
    upstream."""
    env = provider.slug.upper().replace("-", "_")
    base_url = os.environ.get(f"TP_PROVIDER_{env}_BASE_URL") or provider.base_url
    keys = tuple(settings.TP_SECRETS_KEYS)
    from_env = os.environ.get(f"TP_PROVIDER_{env}_API_KEY")
    api_key = _sealed(from_env, keys) if from_env else provider.api_key
    if not api_key and settings.TP_DEMO_UPSTREAM_URL:
        return settings.TP_DEMO_UPSTREAM_URL, _sealed(DEMO_API_KEY, keys), True
    return base_url, api_key, False


def route_entry(route: Route, own_price: PriceVersion | None = None) -> dict[str, Any]:
    """One route as the relay reads it. ``own_price``: the route's current price where it has
    one of its own (else the route is charged the model's price)."""
    base_url, api_key, demo = provider_endpoint(route.provider)
    provider = route.provider
    entry: dict[str, Any] = {
        "provider": route.provider.slug,
        "shape": route.provider.api_shape,
        "base_url": base_url.rstrip("/"),
        "api_key_encrypted": api_key,
        "upstream_model": route.upstream_model,
        "priority": route.priority,
        "weight": route.weight,
        "options": route.provider.options or {},
        # The demo upstream is steered by x-demo-* request headers (latency, token counts,
        # injected faults); only demo routes receive them.
        "demo": demo,
        # The provider's data policy, for routing preferences (data_collection, zdr).
        "trains_on_prompts": provider.trains_on_prompts,
        "prompt_retention_days": provider.prompt_retention_days,
    }
    if own_price is not None:
        entry["price"] = own_price.as_price().as_dict()
        # What /v1/models/{id}/endpoints says of it (OpenRouter's shape).
        entry["pricing"] = api.pricing(own_price)
    return entry


def current_prices(
    versions: list[PriceVersion],
) -> tuple[PriceVersion | None, dict[int, PriceVersion]]:
    """(the model's own current price, each route's own current price by route id) from all
    of a model's price versions."""
    model_price: PriceVersion | None = None
    by_route: dict[int, PriceVersion] = {}
    for price in sorted(versions, key=lambda p: p.version):
        if price.route_id is None:
            model_price = price
        else:
            by_route[price.route_id] = price
    return model_price, by_route


def snapshot() -> dict[str, Any]:
    models: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    # Listed models of listed providers, through the routes of listed providers.
    queryset = Model.objects.filter(active=True, provider__active=True).select_related("provider")
    served = Route.objects.filter(active=True, provider__active=True).select_related("provider")
    for model in queryset.prefetch_related(Prefetch("routes", queryset=served), "prices"):
        price, route_prices = current_prices(list(model.prices.all()))
        routes = [route_entry(r, route_prices.get(r.pk)) for r in model.routes.all()]
        if price is None or not routes:
            continue
        models[model.id] = {
            "id": model.id,
            "provider": model.provider.slug,
            "max_output_tokens": model.max_output_tokens,
            "context_window": model.context_window,
            # OpenRouter's names; the relay refuses the others (relay.adapters.quirks).
            "supported_parameters": list(model.supported_parameters or []),
            "embeddings": model.embeddings,
            "created": api.created(model),
            "price": price.as_price().as_dict(),
            "routes": routes,
            # What /v1/models says of it (OpenRouter's shape), built once per catalog load.
            "meta": api.model_meta(model, price, list(model.routes.all())),
        }
        aliases[f"{model.provider.slug}/{model.id}"] = model.id
        for alias in model.aliases or []:
            aliases[str(alias)] = model.id
    return {"models": models, "aliases": aliases}


def publish() -> None:
    published = snapshot()
    client().set(state.CATALOG, orjson.dumps(published))
    evict("catalog")
    health.prune(published)
    # The routes' live figures, for /v1/models/{id}/endpoints (beat refreshes them each minute).
    figures.publish()
