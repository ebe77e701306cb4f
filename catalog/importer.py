"""Imports models.dev's catalog (``manage.py importcatalog``): providers from the curated table
(``catalog.upstreams``), their models, one route each, and price versions at the margin rule.

Idempotent, in one transaction, published once after commit. The rules it shares with
``loadcatalog``:

- Rows are upserted: providers by slug, models by ``import_key`` ("models.dev:<provider>/<id>").
  A row last edited in the admin (``Source.ADMIN``) is kept as it is, and reported.
- A changed price (after the margin rule) adds a price version; a version is never edited. A
  current version the admin added is kept.
- Listing (``active``) is the operator's: set on a row the import creates, never changed after.
- The catalog file's providers keep the file's name, API shape, base URL, website and options
  (``loadcatalog`` writes those); the import adds their documentation and data policy.
- A seed model (one the import did not create) that the data also lists by its route is not
  duplicated: its empty metadata is filled in and the data's id becomes one of its aliases; its
  price versions and the fields of the catalog file stay as they are.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction

from . import sync
from .models import MarginRule, Model, PriceVersion, Provider, Route, Source
from .modelsdev import Dataset, Entry, entry, skip_reason
from .services import new_price_version
from .upstreams import Upstream

CONNECTION = ("name", "api_shape", "base_url", "website", "options")
DESCRIPTION = ("doc_url", "region", "trains_on_prompts", "prompt_retention_days", "privacy_url")
# What a seed model takes from the data where it has nothing (the catalog file gives none).
SEED_METADATA = (
    "author",
    "family",
    "release_date",
    "knowledge_cutoff",
    "input_modalities",
    "output_modalities",
    "supported_parameters",
    "reasoning",
    "structured_outputs",
)
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
ID_LENGTH = 150


@dataclass
class Report:
    source: str
    last_updated: str
    providers_added: int = 0
    providers_updated: int = 0
    models_added: int = 0
    models_updated: int = 0
    models_unchanged: int = 0
    seeds_matched: int = 0
    seeds_filled: int = 0
    deprecated: int = 0  # imported models the data now calls deprecated (kept, marked)
    prices: int = 0  # new price versions
    skipped: Counter[str] = field(default_factory=Counter)  # reason → count
    skipped_models: list[str] = field(default_factory=list)  # "provider/id: reason"
    missing: list[str] = field(default_factory=list)  # table providers absent from the data
    kept: list[str] = field(default_factory=list)  # admin edits the data would have changed

    @property
    def changed(self) -> bool:
        return bool(
            self.providers_added
            or self.providers_updated
            or self.models_added
            or self.models_updated
            or self.seeds_filled
            or self.deprecated
            or self.prices
        )


def catalog_file_providers(path: Path) -> dict[str, dict[str, Any]]:
    """The providers the catalog file lists, by slug: their connection settings as
    ``loadcatalog`` writes them (theirs to configure, options included)."""
    if not path.exists():
        return {}
    return {
        slug: {
            "name": spec["name"],
            "api_shape": spec.get("api_shape", Provider.Shape.OPENAI),
            "base_url": spec["base_url"],
            "website": spec.get("website", ""),
            "options": spec.get("options", {}),
        }
        for slug, spec in tomllib.loads(path.read_text()).get("providers", {}).items()
    }


def _differing(obj: Any, values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if getattr(obj, name) != value}


def _set(obj: Any, values: dict[str, Any]) -> bool:
    """Sets ``values`` on ``obj`` and saves it; whether anything changed."""
    changes = _differing(obj, values)
    for name, value in changes.items():
        setattr(obj, name, value)
    if changes:
        obj.save(update_fields=list(changes))
    return bool(changes)


def _provider(upstream: Upstream, *, in_file: dict[str, Any] | None, report: Report) -> Provider:
    """``in_file``: the catalog file's connection settings for it, which win over the table's."""
    connection = in_file or {name: getattr(upstream, name) for name in CONNECTION}
    described = {name: getattr(upstream, name) for name in DESCRIPTION}
    provider = Provider.objects.select_for_update().filter(slug=upstream.slug).first()
    if provider is None:
        report.providers_added += 1
        return Provider.objects.create(
            slug=upstream.slug, **connection, **described, active=True, source=Source.FILE
        )
    values = described if in_file else {**connection, **described}
    if provider.source == Source.ADMIN:
        if _differing(provider, values):
            report.kept.append(f"provider {upstream.slug}")
    elif _set(provider, values):
        report.providers_updated += 1
    return provider


def _margins() -> dict[int | None, Decimal]:
    return dict(MarginRule.objects.values_list("provider_id", "percent"))


def _current_prices(model_ids: list[str]) -> dict[str, PriceVersion]:
    current: dict[str, PriceVersion] = {}
    for price in PriceVersion.objects.filter(model_id__in=model_ids, route=None).order_by(
        "model_id", "-version"
    ):
        current.setdefault(price.model_id, price)
    return current


class Importer:
    """One import in one transaction: see the module's docstring for the rules."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.margins = _margins()
        self.seeds: dict[tuple[str, str], Model] = {}
        for route in Route.objects.filter(model__import_key__isnull=True).select_related(
            "model", "provider"
        ):
            self.seeds.setdefault((route.provider.slug, route.upstream_model), route.model)
        # Every name a request can already give a model by: ids and aliases.
        self.names: dict[str, str | None] = {}
        for model_id, slug, aliases, key in Model.objects.values_list(
            "id", "provider__slug", "aliases", "import_key"
        ):
            self.names[model_id] = key
            self.names.setdefault(f"{slug}/{model_id}", key)
            for alias in aliases or []:
                self.names.setdefault(str(alias), key)

    def skip(self, upstream: Upstream, source_id: str, reason: str) -> None:
        self.report.skipped[reason] += 1
        self.report.skipped_models.append(f"{upstream.source}/{source_id}: {reason}")

    def run(self, upstream: Upstream, provider: Provider, models: dict[str, Any]) -> None:
        entries: list[Entry] = []
        deprecated: list[str] = []
        for source_id, spec in sorted(models.items()):
            model_id = f"{upstream.slug}/{source_id}"
            try:
                reason = skip_reason(spec)
                if reason is None and (len(model_id) > ID_LENGTH or not MODEL_ID.match(model_id)):
                    reason = "an id the catalog cannot take"
                if reason is None:
                    entries.append(entry(upstream, source_id, spec))
            except (ValueError, TypeError, KeyError, AttributeError):
                reason = "an entry that cannot be read (its prices or limits)"
            if reason == "deprecated":
                deprecated.append(f"models.dev:{upstream.source}/{source_id}")
            if reason is not None:
                self.skip(upstream, source_id, reason)
        self.report.deprecated += Model.objects.filter(
            import_key__in=deprecated, deprecated=False, source=Source.FILE
        ).update(deprecated=True)
        existing = {
            model.import_key: model
            for model in Model.objects.select_for_update().filter(
                import_key__in=[e.import_key for e in entries]
            )
        }
        current = _current_prices([model.pk for model in existing.values()])
        percent = self.margins.get(provider.pk, self.margins.get(None, Decimal(0)))
        for item in entries:
            seed = self.seeds.get((upstream.slug, item.upstream_model))
            if seed is not None:
                self.seed(seed, item)
                continue
            model = existing.get(item.import_key)
            if model is None:
                if item.model_id in self.names:
                    self.skip(upstream, item.upstream_model, "its id names another model")
                    continue
                model = self.create(provider, item)
                self.price(model, item, None, percent)
                continue
            updated = self.update(model, provider, item)
            priced = self.price(model, item, current.get(model.pk), percent)
            if updated or priced:
                self.report.models_updated += 1
            else:
                self.report.models_unchanged += 1

    def create(self, provider: Provider, item: Entry) -> Model:
        model = Model.objects.create(
            id=item.model_id,
            provider=provider,
            upstream_model=item.upstream_model,
            import_key=item.import_key,
            active=True,
            source=Source.FILE,
            **item.fields,
        )
        Route.objects.create(
            model=model,
            provider=provider,
            upstream_model=item.upstream_model,
            source=Source.FILE,
        )
        self.names[model.pk] = item.import_key
        self.report.models_added += 1
        return model

    def update(self, model: Model, provider: Provider, item: Entry) -> bool:
        values = {
            **item.fields,
            "provider_id": provider.pk,
            "upstream_model": item.upstream_model,
        }
        if model.source == Source.ADMIN:
            if _differing(model, values):
                self.report.kept.append(f"model {model.pk}")
            return False
        return _set(model, values)

    def seed(self, model: Model, item: Entry) -> None:
        """Fills a seed model's empty metadata and adds the data's id as an alias; its price
        and the catalog file's fields are left alone."""
        self.report.seeds_matched += 1
        if model.source == Source.ADMIN:
            return
        values = {
            name: item.fields[name]
            for name in SEED_METADATA
            if not getattr(model, name) and item.fields[name]
        }
        alias = item.model_id
        implicit = f"{model.provider.slug}/{model.pk}"
        if alias not in (model.aliases or []) and alias not in (implicit, model.pk):
            values["aliases"] = [*(model.aliases or []), alias]
        if values:
            for name, value in values.items():
                setattr(model, name, value)
            model.save(update_fields=list(values))
            self.report.seeds_filled += 1

    def price(
        self, model: Model, item: Entry, current: PriceVersion | None, percent: Decimal
    ) -> bool:
        """Adds a price version when the price (after the margin) differs from the current
        one; whether it did."""
        wanted = item.prices.selling(percent)
        wanted.update({"request": Decimal(0), "image": Decimal(0), "audio_second": Decimal(0)})
        if current is not None:
            if not _differing(current, wanted):
                return False
            if current.source == Source.ADMIN:
                self.report.kept.append(f"price of {model.pk} (v{current.version})")
                return False
        new_price_version(model=model, source=Source.FILE, **wanted)
        self.report.prices += 1
        return True


def import_catalog(
    source: Dataset,
    upstreams: list[Upstream],
    *,
    file_providers: dict[str, dict[str, Any]],
    dry_run: bool = False,
) -> Report:
    """Imports ``upstreams``' models from ``source``; with ``dry_run``, reports what it would
    do and writes nothing."""
    report = Report(source=source.label, last_updated=source.last_updated)
    with transaction.atomic():
        present = []
        for upstream in upstreams:
            data = source.providers.get(upstream.source)
            if not data:
                report.missing.append(upstream.source)
                continue
            in_file = file_providers.get(upstream.slug)
            provider = _provider(upstream, in_file=in_file, report=report)
            present.append((upstream, provider, data.get("models") or {}))
        importer = Importer(report)
        for upstream, provider, models in present:
            importer.run(upstream, provider, models)
        if dry_run:
            transaction.set_rollback(True)
        else:
            transaction.on_commit(sync.publish)
    return report
