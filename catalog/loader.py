"""Loads the catalog data file into the database (idempotent) and publishes it to Redis."""

from __future__ import annotations

import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from . import sync
from .models import Model, PriceVersion, Provider, Route

MODEL_FIELDS = (
    "name",
    "upstream_model",
    "description",
    "context_window",
    "max_output_tokens",
    "function_calling",
    "json_mode",
    "vision",
    "embeddings",
    "open_weights",
    "aliases",
)


def _price(value: Any, where: str) -> Decimal:
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValidationError(f"{where}: not a decimal price: {value!r}") from exc
    if price < 0 or price.as_tuple().exponent < -3:  # type: ignore[operator]
        raise ValidationError(f"{where}: prices are >= 0 with at most 3 decimals per 1M tokens")
    return price


@transaction.atomic
def load(path: Path) -> dict[str, int]:
    data = tomllib.loads(path.read_text())
    counts = {"providers": 0, "models": 0, "prices": 0}
    for slug, spec in data.get("providers", {}).items():
        Provider.objects.update_or_create(
            slug=slug,
            defaults={
                "name": spec["name"],
                "api_shape": spec.get("api_shape", Provider.Shape.OPENAI),
                "base_url": spec["base_url"],
                "website": spec.get("website", ""),
                "options": spec.get("options", {}),
            },
        )
        counts["providers"] += 1
    for order, spec in enumerate(data.get("models", [])):
        model_id = spec["id"]
        defaults = {field: spec[field] for field in MODEL_FIELDS if field in spec}
        defaults["provider"] = Provider.objects.get(slug=spec["provider"])
        defaults["sort_order"] = order
        defaults["active"] = spec.get("active", True)
        model, _ = Model.objects.update_or_create(id=model_id, defaults=defaults)
        counts["models"] += 1
        _routes(model, spec)
        wanted = (
            _price(spec["input"], model_id),
            _price(spec.get("output", "0"), model_id),
            _price(spec["cached_input"], model_id) if "cached_input" in spec else None,
        )
        current = model.price
        if current is None or (current.input, current.output, current.cached_input) != wanted:
            PriceVersion.objects.create(
                model=model,
                version=(current.version + 1) if current else 1,
                input=wanted[0],
                output=wanted[1],
                cached_input=wanted[2],
            )
            counts["prices"] += 1
    transaction.on_commit(sync.publish)
    return counts


def _routes(model: Model, spec: dict[str, Any]) -> None:
    """The file's routes for a model replace the ones in the database; without any, the
    model is reached through its own provider."""
    specs = spec.get("routes") or [
        {"provider": spec["provider"], "upstream_model": spec["upstream_model"]}
    ]
    keep = []
    for route in specs:
        obj, _ = Route.objects.update_or_create(
            model=model,
            provider=Provider.objects.get(slug=route["provider"]),
            upstream_model=route.get("upstream_model", model.upstream_model),
            defaults={
                "priority": int(route.get("priority", 0)),
                "weight": int(route.get("weight", 1)),
                "active": bool(route.get("active", True)),
            },
        )
        keep.append(obj.pk)
    Route.objects.filter(model=model).exclude(pk__in=keep).delete()
