"""``/v1/models``, ``/v1/models/{id}`` and ``/v1/models/{id}/endpoints``.

A model's object is OpenAI's (``id``, ``object``, ``created``, ``owned_by``) with OpenRouter's
fields, from the ``meta`` the catalog publishes with each model (catalog.api); the answers to
the first two are built once per catalog load (:class:`Listing`), never per request.

``/endpoints`` is OpenRouter's ``/api/v1/models/{author}/{slug}/endpoints``: ``data`` is the
model (id, name, created, description, architecture) with ``endpoints``, one per provider that
serves it, in the order the relay tries them. Each carries OpenRouter's fields (``name``,
``provider_name``, ``tag``, ``context_length``, ``max_completion_tokens``, ``pricing`` (the
route's own where it has one, else the model's),
``supported_parameters``, ``status``) and our figures from our own traffic: ``uptime_last_1h``
(percent), ``latency_last_1h`` and ``throughput_last_1h`` (``{"p50": ...}``, milliseconds to
the first token and tokens per second), each ``null`` below the threshold of data; and
``stats`` with every window (``hour``, ``day``, ``week``: requests, ``enough_data``,
``p50_ttfb_ms``, ``p50_tokens_per_second``, ``uptime``, ``error_rate``), plus the provider's
data policy and region. The figures come from Redis (one hash field per model, written by the
worker's beat every minute and after every catalog publication), read on request: the answer
is as fresh as the last publication, and the relay keeps no copy of every model's figures.
"""

from __future__ import annotations

from typing import Any

import orjson

JSON = dict[str, Any]


def model_object(model: JSON) -> JSON:
    obj: JSON = {
        "id": model["id"],
        "object": "model",
        "created": int(model.get("created") or 0),
        "owned_by": str(model.get("provider", "")),
    }
    obj.update(model.get("meta") or {})
    obj["id"] = model["id"]
    return obj


class Listing:
    """The answers of ``/v1/models`` and ``/v1/models/{id}`` for one catalog load."""

    def __init__(self, models: dict[str, JSON]) -> None:
        self.objects: dict[str, bytes] = {
            model_id: orjson.dumps(model_object(model)) for model_id, model in models.items()
        }
        self.body = b'{"object":"list","data":[' + b",".join(self.objects.values()) + b"]}"


def _endpoint(model: JSON, meta: JSON, route: JSON, pricing: dict[str, JSON]) -> JSON:
    windows: JSON = route.get("windows") or {}
    hour: JSON = windows.get("hour") or {}
    enough = bool(hour.get("enough_data"))
    ttfb = hour.get("p50_ttfb_ms")
    tps = hour.get("p50_tokens_per_second")
    provider_name = str(route.get("provider_name") or route.get("provider", ""))
    return {
        "name": f"{provider_name} | {model['id']}",
        "model_name": meta.get("name", model["id"]),
        "provider_name": provider_name,
        "tag": route.get("provider"),
        "context_length": route.get("context_length"),
        "max_completion_tokens": route.get("max_output_tokens"),
        "max_prompt_tokens": None,
        # The route's own price where it has one, else the model's.
        "pricing": pricing.get(str(route.get("provider"))) or meta.get("pricing", {}),
        "supported_parameters": meta.get("supported_parameters", []),
        "quantization": None,
        "status": 0,
        "uptime_last_1h": hour.get("uptime") if enough else None,
        "latency_last_1h": {"p50": ttfb} if enough and ttfb is not None else None,
        "throughput_last_1h": {"p50": tps} if enough and tps is not None else None,
        "stats": windows or None,
        "data_policy": {
            "trains_on_prompts": route.get("trains_on_prompts"),
            "prompt_retention_days": route.get("prompt_retention_days"),
            "privacy_url": route.get("privacy_url") or None,
        },
        "region": route.get("region") or None,
    }


def _routes_without_figures(model: JSON, meta: JSON) -> list[JSON]:
    """Before the first publication of the figures: the catalog's routes, figures unknown."""
    top: JSON = meta.get("top_provider") or {}
    seen: dict[str, JSON] = {}
    for route in model.get("routes", []):
        provider = str(route.get("provider", ""))
        seen.setdefault(
            provider,
            {
                "provider": provider,
                "upstream_model": route.get("upstream_model"),
                "context_length": top.get("context_length", model.get("context_window")),
                "max_output_tokens": top.get(
                    "max_completion_tokens", model.get("max_output_tokens")
                ),
            },
        )
    return list(seen.values())


def endpoints(model: JSON, figures: list[JSON] | None) -> bytes:
    meta: JSON = model.get("meta") or {}
    obj = model_object(model)
    routes = figures if figures is not None else _routes_without_figures(model, meta)
    pricing: dict[str, JSON] = {}
    for route in model.get("routes", []):
        if route.get("pricing"):
            pricing.setdefault(str(route.get("provider")), route["pricing"])
    return orjson.dumps(
        {
            "data": {
                "id": model["id"],
                "name": obj.get("name", model["id"]),
                "created": obj["created"],
                "description": obj.get("description", ""),
                "architecture": obj.get("architecture"),
                "endpoints": [_endpoint(model, meta, route, pricing) for route in routes],
            }
        }
    )
