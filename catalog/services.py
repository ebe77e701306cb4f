"""The catalog's writes: providers, models, routes and price versions. The admin calls them (as
the loader shares their rules); each publishes the catalog to the relays after commit, so an
edit reaches every relay within a second (``catalog.sync.publish`` announces "catalog").

A row saved here with values that differ from what it held is marked as the admin's
(``Source.ADMIN``): ``loadcatalog`` keeps it until ``--reset``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models, transaction

from core.secrets import SecretError, looks_encrypted
from lib.secrets import box, encrypt

from . import sync
from .models import MarginRule, Model, PriceVersion, Provider, Route, Source


def _publish_on_commit() -> None:
    transaction.on_commit(sync.publish)


def differs(old: models.Model, new: models.Model, fields: tuple[str, ...]) -> bool:
    """Whether any of ``fields`` (foreign keys by their id) holds another value in ``new``."""
    for name in fields:
        field = type(old)._meta.get_field(name)
        attname = getattr(field, "attname", name)
        if getattr(old, attname) != getattr(new, attname):
            return True
    return False


# Besides the catalog file's fields, those ``importcatalog`` writes: an admin's change to one of
# them marks the row as the admin's too, so that the next import keeps it.
PROVIDER_FIELDS = (
    *Provider.FILE_FIELDS,
    "slug",
    "doc_url",
    "region",
    "trains_on_prompts",
    "prompt_retention_days",
    "privacy_url",
)
MODEL_FIELDS = (
    *Model.FILE_FIELDS,
    "reasoning",
    "structured_outputs",
    "author",
    "family",
    "release_date",
    "knowledge_cutoff",
    "input_modalities",
    "output_modalities",
    "supported_parameters",
    "deprecated",
)


@transaction.atomic
def save_provider(
    *, provider: Provider, api_key: str | None = None, remove_api_key: bool = False
) -> Provider:
    """Saves the provider's fields. ``api_key``: a new key to store (encrypted); ``None`` keeps
    the stored one; ``remove_api_key`` forgets it (the demo upstream answers, in demo mode)."""
    old = Provider.objects.select_for_update().filter(pk=provider.pk).first()
    if old is None or differs(old, provider, PROVIDER_FIELDS):
        provider.source = Source.ADMIN
    if remove_api_key:
        provider.api_key = ""
    elif api_key and api_key.strip():
        provider.api_key = encrypt(api_key.strip())
    elif old is not None:
        provider.api_key = old.api_key  # write-only: what a form held is never written back
    provider.save()
    _publish_on_commit()
    return provider


@transaction.atomic
def save_model(*, model: Model) -> Model:
    """Saves a model. A new one gets a route through its own provider (as a model the catalog
    file gives no routes); the relays serve it once it has a price version too."""
    old = Model.objects.select_for_update().filter(pk=model.pk).first()
    if old is None or differs(old, model, MODEL_FIELDS):
        model.source = Source.ADMIN
    model.save()
    if old is None and not model.routes.exists():
        Route.objects.create(
            model=model,
            provider=model.provider,
            upstream_model=model.upstream_model,
            source=Source.ADMIN,
        )
    _publish_on_commit()
    return model


@transaction.atomic
def set_listed(rows: models.QuerySet[Provider] | models.QuerySet[Model], *, listed: bool) -> int:
    """Lists (or unlists) the providers or models of ``rows``: listed ones are shown in the
    catalog and served. The import never changes this; ``loadcatalog`` keeps it for the models
    of the catalog file, whose listing it also gives, by marking them as the admin's. Returns
    how many changed."""
    ids: list[Any] = list(rows.exclude(active=listed).values_list("pk", flat=True))
    if rows.model is Model:
        changing = Model.objects.filter(pk__in=ids)
        count = changing.filter(import_key__isnull=False).update(active=listed)
        count += changing.filter(import_key__isnull=True).update(active=listed, source=Source.ADMIN)
    else:
        count = Provider.objects.filter(pk__in=ids).update(active=listed)
    _publish_on_commit()
    return count


@transaction.atomic
def save_margin_rule(*, rule: MarginRule) -> MarginRule:
    """Saves a margin rule. Prices follow at the next ``importcatalog`` (as new versions)."""
    rule.save()
    return rule


@transaction.atomic
def delete_margin_rule(*, rule: MarginRule) -> None:
    MarginRule.objects.filter(pk=rule.pk).delete()


@transaction.atomic
def save_route(*, route: Route) -> Route:
    old = Route.objects.select_for_update().filter(pk=route.pk).first()
    if old is None or differs(old, route, Route.FILE_FIELDS):
        route.source = Source.ADMIN
    route.save()
    _publish_on_commit()
    return route


class ListedInFile(ValueError):
    """A route the catalog file lists: switch it off instead (loadcatalog would add it back)."""


class PricedRoute(ValueError):
    """A route with prices of its own: usage keeps them, so switch it off instead."""


@transaction.atomic
def delete_route(*, route: Route) -> None:
    locked = Route.objects.select_for_update().filter(pk=route.pk).first()
    if locked is None:
        return
    if locked.in_file:
        raise ListedInFile(f"{locked} is listed in the catalog file: switch it off instead")
    if locked.prices.exists():
        raise PricedRoute(f"{locked} has prices of its own that usage keeps: switch it off")
    locked.delete()
    _publish_on_commit()


def new_price_version(
    *, model: Model, source: str, route: Route | None = None, **prices: Any
) -> PriceVersion:
    """The next version of ``model``'s price (the previous + 1, counted over the model's own
    prices and its routes' alike, so (model, version) names one row), or, with ``route``, of
    that route's own price for the model; the caller holds the model's row lock and
    publishes. ``prices``: PriceVersion.PRICE_FIELDS (a per-token price left None
    falls back as the field says; ``request``, ``image`` and ``audio_second`` 0 when not
    charged; ``tiers`` empty when there are none), and ``upstream``: what the provider charges
    (imported prices, before the margin rule)."""
    last = model.prices.order_by("-version").values_list("version", flat=True).first()
    wanted = (*PriceVersion.PRICE_FIELDS, "upstream")
    values = {name: prices[name] for name in wanted if name in prices}
    for name in ("request", "image", "audio_second"):
        if values.get(name) is None:
            values[name] = Decimal(0)
    if values.get("tiers") is None:
        values["tiers"] = []
    if route is not None and route.model_id != model.pk:
        raise ValueError(f"{route} is not a route of {model}")
    return PriceVersion.objects.create(
        model=model, route=route, version=(last or 0) + 1, source=source, **values
    )


@transaction.atomic
def add_price_version(
    *, model: Model, input: Decimal, output: Decimal, route: Route | None = None, **prices: Any
) -> PriceVersion:
    """A new current price for ``model`` (the other PriceVersion.PRICE_FIELDS by name), or for
    one of its routes (``route``); older versions stay as they were (usage keeps the version it
    was charged at)."""
    unknown = set(prices) - set(PriceVersion.PRICE_FIELDS)
    if unknown:
        raise TypeError(f"not a price: {', '.join(sorted(unknown))}")
    locked = Model.objects.select_for_update().get(pk=model.pk)
    price = new_price_version(
        model=locked, source=Source.ADMIN, route=route, input=input, output=output, **prices
    )
    _publish_on_commit()
    return price


@transaction.atomic
def rotate_secrets() -> tuple[int, list[str]]:
    """Every stored provider key re-encrypted under the newest key of TP_SECRETS_KEYS (the
    older keys must still be listed, to open them), then the catalog published again. Returns
    how many were re-encrypted and the slugs of those no configured key opens (left as they
    are)."""
    rotated, unopened = 0, []
    for provider in Provider.objects.select_for_update().exclude(api_key="").order_by("slug"):
        token = provider.api_key
        try:
            new = box().rotate(token) if looks_encrypted(token) else encrypt(token)
        except SecretError:
            unopened.append(provider.slug)
            continue
        Provider.objects.filter(pk=provider.pk).update(api_key=new)
        rotated += 1
    _publish_on_commit()
    return rotated, unopened
