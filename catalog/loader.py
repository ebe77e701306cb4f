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


def _price(value: Any, where: str, places: int = 3, unit: str = "per 1M tokens") -> Decimal:
    """A price the cost function applies without rounding: token prices to 3 decimals per 1M
    tokens, an image's to 9 (a nano-dollar), a second of audio's to 6 (a nano-dollar a ms)."""
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValidationError(f"{where}: not a decimal price: {value!r}") from exc
    if not price.is_finite() or price < 0 or price.as_tuple().exponent < -places:  # type: ignore[operator]
        raise ValidationError(f"{where}: prices are >= 0 with at most {places} decimals {unit}")
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
        wanted = {
            "input": _price(spec["input"], model_id),
            "output": _price(spec.get("output", "0"), model_id),
            "cached_input": (
                _price(spec["cached_input"], model_id) if "cached_input" in spec else None
            ),
            "image": _price(spec.get("image", "0"), model_id, 9, "per image"),
            "audio_second": _price(spec.get("audio_second", "0"), model_id, 6, "per second"),
        }
        current = model.price
        if current is None or any(getattr(current, f) != v for f, v in wanted.items()):
            PriceVersion.objects.create(
                model=model, version=(current.version + 1) if current else 1, **wanted
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
