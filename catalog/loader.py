"""Loads the catalog data file into the database (idempotent) and publishes it to Redis.

The file and the admin both edit the catalog; each row records where its current values came
from (``source``). A load adds what the database lacks and rewrites only rows whose values came
from the file: a provider, model, route or current price last edited in the admin is kept (and
reported), so admin edits survive ``make run`` restarts. ``reset`` makes the file win: its rows
take the file's values again and a model's routes become the file's. A changed price in the
file becomes a new price version only while the current version came from the file (with
``reset``, whenever the current one came from the admin); a version is never edited.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from . import sync
from .models import Model, PriceVersion, Provider, Route, Source
from .services import new_price_version

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


def _price_value(value: Any, where: str, places: int = 3, unit: str = "per 1M tokens") -> Decimal:
    """A price the cost function applies without rounding: token prices to 3 decimals per 1M
    tokens, an image's to 9 (a nano-dollar), a second of audio's to 6 (a nano-dollar a ms)."""
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValidationError(f"{where}: not a decimal price: {value!r}") from exc
    if not price.is_finite() or price < 0 or price.as_tuple().exponent < -places:  # type: ignore[operator]
        raise ValidationError(f"{where}: prices are >= 0 with at most {places} decimals {unit}")
    return price


@dataclass
class Report:
    providers: int = 0
    models: int = 0
    routes: int = 0
    prices: int = 0  # new price versions
    # Rows last edited in the admin whose values the file would have changed, kept as they are.
    kept: list[str] = field(default_factory=list)


def _apply(obj: Any, values: dict[str, Any]) -> bool:
    """Sets ``values`` (by attribute name) on ``obj``; whether anything changed."""
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed


def _differs(obj: Any, values: dict[str, Any]) -> bool:
    return any(getattr(obj, name) != value for name, value in values.items())


def _write(
    cls: type[Any],
    identity: dict[str, Any],
    values: dict[str, Any],
    *,
    reset: bool,
    report: Report,
    what: str,
) -> Any:
    """Creates the row, rewrites it if its values are the file's (or ``reset``), or keeps an
    admin's edit (reported when the file says otherwise)."""
    obj = cls.objects.select_for_update().filter(**identity).first()
    if obj is None:
        return cls.objects.create(**identity, **values, source=Source.FILE)
    if obj.source == Source.FILE or reset:
        if _apply(obj, values) or obj.source != Source.FILE:
            obj.source = Source.FILE
            obj.save()
    elif _differs(obj, values):
        report.kept.append(what)
    return obj


@transaction.atomic
def load(path: Path, *, reset: bool = False) -> Report:
    data = tomllib.loads(path.read_text())
    report = Report()
    for slug, spec in data.get("providers", {}).items():
        _write(
            Provider,
            {"slug": slug},
            {
                "name": spec["name"],
                "api_shape": spec.get("api_shape", Provider.Shape.OPENAI),
                "base_url": spec["base_url"],
                "website": spec.get("website", ""),
                "options": spec.get("options", {}),
            },
            reset=reset,
            report=report,
            what=f"provider {slug}",
        )
        report.providers += 1
    for order, spec in enumerate(data.get("models", [])):
        model_id = spec["id"]
        values = {name: spec[name] for name in MODEL_FIELDS if name in spec}
        values["provider_id"] = Provider.objects.get(slug=spec["provider"]).pk
        values["sort_order"] = order
        values["active"] = spec.get("active", True)
        model = _write(
            Model,
            {"id": model_id},
            values,
            reset=reset,
            report=report,
            what=f"model {model_id}",
        )
        report.models += 1
        # The model's price first: a new model's is version 1, its routes' own prices after.
        _price(model, spec, reset=reset, report=report)
        _routes(model, spec, reset=reset, report=report)
    transaction.on_commit(sync.publish)
    return report


def _routes(model: Model, spec: dict[str, Any], *, reset: bool, report: Report) -> None:
    """The file's routes for a model (without any, the model is reached through its own
    provider). Routes the file no longer lists go if they were the file's; the admin's stay,
    unless ``reset``."""
    specs = spec.get("routes") or [
        {"provider": spec["provider"], "upstream_model": spec["upstream_model"]}
    ]
    listed = []
    for route_spec in specs:
        provider = Provider.objects.get(slug=route_spec["provider"])
        upstream_model = route_spec.get("upstream_model", model.upstream_model)
        route = _write(
            Route,
            {"model": model, "provider": provider, "upstream_model": upstream_model},
            {
                "priority": int(route_spec.get("priority", 0)),
                "weight": int(route_spec.get("weight", 1)),
                "active": bool(route_spec.get("active", True)),
            },
            reset=reset,
            report=report,
            what=f"route {model.pk} via {provider.slug} ({upstream_model})",
        )
        if not route.in_file:
            Route.objects.filter(pk=route.pk).update(in_file=True)
        if "input" in route_spec:
            # A route priced apart from its model (another provider's rates).
            _price(model, route_spec, reset=reset, report=report, route=route)
        listed.append(route.pk)
        report.routes += 1
    others = Route.objects.filter(model=model).exclude(pk__in=listed)
    # A route with prices of its own is switched off, never deleted (usage keeps its prices).
    priced = others.filter(prices__isnull=False).distinct()
    if reset:
        priced.update(active=False)
        others.exclude(pk__in=priced).delete()
    else:
        priced.filter(source=Source.FILE).update(active=False)
        others.filter(source=Source.FILE).exclude(pk__in=priced).delete()
        others.update(in_file=False)


def _wanted_price(spec: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        "input": _price_value(spec["input"], where),
        "output": _price_value(spec.get("output", "0"), where),
        "cached_input": (
            _price_value(spec["cached_input"], where) if "cached_input" in spec else None
        ),
        "image": _price_value(spec.get("image", "0"), where, 9, "per image"),
        "audio_second": _price_value(spec.get("audio_second", "0"), where, 6, "per second"),
    }


def _price(
    model: Model,
    spec: dict[str, Any],
    *,
    reset: bool,
    report: Report,
    route: Route | None = None,
) -> None:
    """The model's price from its entry, or (``route``) a route's own price from the route's
    entry: a new version where the file's differs from the current one."""
    where = str(model.pk) if route is None else f"{model.pk} via {route.provider.slug}"
    wanted = _wanted_price(spec, where)
    if route is None:
        current: PriceVersion | None = model.price
    else:
        current = route.prices.order_by("-version").first()
    if current is None:
        new = True
    elif current.source == Source.FILE:
        new = _differs(current, wanted)
    elif reset:
        new = True  # from now on the file's: a version of its own, even at the same prices
    else:
        new = False
        if _differs(current, wanted):
            report.kept.append(f"price of {where} (v{current.version})")
    if new:
        new_price_version(model=model, source=Source.FILE, route=route, **wanted)
        report.prices += 1
