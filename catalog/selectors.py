"""Reads of the catalog pages: the listed models with their current prices in a fixed number
of queries (``cards`` for the list, ``entries_by_id`` for a model's page and the comparison),
and the list's filters, facet counts and orderings, done in Python over those rows (at a few
hundred models one pass in memory is faster than a query per facet, and says the same thing
as the filters do, since both use the same predicates)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Exists, OuterRef, Prefetch
from django.utils.translation import gettext_lazy as _

from .models import Model, PriceVersion, Provider, Route
from .sync import provider_endpoint

# The list's capability filter: value, label (a chip on each row says the same).
CAPABILITIES: tuple[tuple[str, Any], ...] = (
    ("tools", _("Tools")),
    ("json", _("JSON mode")),
    ("structured", _("Structured outputs")),
    ("vision", _("Vision")),
    ("reasoning", _("Reasoning")),
    ("embeddings", _("Embeddings")),
)
# Data policies a model meets when every provider serving it states so.
POLICIES: tuple[tuple[str, Any], ...] = (
    ("no_training", _("Does not train on prompts")),
    ("zero_retention", _("Keeps no prompts (zero retention)")),
)
MODALITY_LABELS: dict[str, Any] = {
    "text": _("Text"),
    "image": _("Image"),
    "audio": _("Audio"),
    "video": _("Video"),
    "file": _("File"),
    "pdf": _("PDF"),
    "embeddings": _("Embeddings"),
}
# The filters a model can fail; "several of" filters (provider, author, region) count their
# options over the models that pass every *other* filter, the "all of" ones over the matches.
ANY_OF = ("provider", "author", "region")


@dataclass(slots=True)
class Entry:
    """One listed model as its page and the comparison show it."""

    model: Model
    price: PriceVersion | None
    versions: list[PriceVersion]
    providers: list[Provider]
    routes: list[Route]
    # A route's own current price by route id (routes not in it are charged ``price``).
    route_prices: dict[int, PriceVersion]
    demo: bool
    capabilities: frozenset[str]
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]


def listed_models() -> Any:
    """The listed models (listed themselves, by a listed provider) as model instances, every
    price version newest first and their active routes through listed providers: three
    queries, for the pages of one to a few models (the list reads ``cards``)."""
    return (
        Model.objects.filter(active=True, provider__active=True)
        .select_related("provider")
        .prefetch_related(
            Prefetch("prices", queryset=PriceVersion.objects.order_by("model_id", "-version")),
            Prefetch(
                "routes",
                queryset=Route.objects.filter(active=True, provider__active=True).select_related(
                    "provider"
                ),
            ),
        )
    )


def _input_modalities(given: list[Any], vision: bool) -> tuple[str, ...]:
    if given:
        return tuple(str(m) for m in given)
    return ("text", "image") if vision else ("text",)


def _output_modalities(given: list[Any], embeddings: bool) -> tuple[str, ...]:
    if given:
        return tuple(str(m) for m in given)
    return ("embeddings",) if embeddings else ("text",)


def _capabilities(flags: Mapping[str, bool], inputs: tuple[str, ...]) -> frozenset[str]:
    """From the model's flags: function_calling, json_mode, structured_outputs, vision,
    reasoning, embeddings."""
    held = {
        "tools": flags["function_calling"],
        "json": flags["json_mode"],
        "structured": flags["structured_outputs"],
        "vision": flags["vision"] or "image" in inputs,
        "reasoning": flags["reasoning"],
        "embeddings": flags["embeddings"],
    }
    return frozenset(name for name, on in held.items() if on)


CAPABILITY_FLAGS = (
    "function_calling",
    "json_mode",
    "structured_outputs",
    "vision",
    "reasoning",
    "embeddings",
)


def _policies(providers: list[Provider]) -> frozenset[str]:
    held = set()
    if providers and all(p.trains_on_prompts is False for p in providers):
        held.add("no_training")
    if providers and all(p.prompt_retention_days == 0 for p in providers):
        held.add("zero_retention")
    return frozenset(held)


def entry_of(model: Model, demo_of: Callable[[Provider], bool]) -> Entry:
    """An entry from a model fetched by ``listed_models`` (no further query)."""
    every = list(model.prices.all())
    versions = [v for v in every if v.route_id is None]
    routes = list(model.routes.all())
    # Each route's own current price, where it has one (newest first, so the first seen).
    route_prices: dict[int, PriceVersion] = {}
    for version in every:
        if version.route_id is not None:
            route_prices.setdefault(version.route_id, version)
    providers: list[Provider] = []
    for route in routes:
        if route.provider not in providers:
            providers.append(route.provider)
    inputs = _input_modalities(model.input_modalities, model.vision)
    flags = {name: getattr(model, name) for name in CAPABILITY_FLAGS}
    return Entry(
        model=model,
        price=versions[0] if versions else None,
        versions=versions,
        providers=providers,
        routes=routes,
        route_prices=route_prices,
        demo=all(demo_of(p) for p in providers),
        capabilities=_capabilities(flags, inputs),
        input_modalities=inputs,
        output_modalities=_output_modalities(model.output_modalities, model.embeddings),
    )


def demo_checker() -> Callable[[Provider], bool]:
    """Whether a provider is answered by the demo upstream, asked once per provider."""
    seen: dict[int, bool] = {}

    def demo(provider: Provider) -> bool:
        if provider.pk not in seen:
            seen[provider.pk] = provider_endpoint(provider)[2]
        return seen[provider.pk]

    return demo


def entries(queryset: Any) -> list[Entry]:
    """The served ones among the models fetched by ``listed_models``: those with a price and a
    route (as the relay's catalog; catalog.sync), the others cannot be used."""
    demo = demo_checker()
    found = [entry_of(model, demo) for model in queryset]
    return [e for e in found if e.price is not None and e.routes]


# What a model id can be (catalog.models.Model.id's validator): anything else is no model's,
# and is not sent to the database (a NUL byte, say, which PostgreSQL refuses outright).
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,149}")


def entries_by_id(ids: Iterable[str]) -> dict[str, Entry]:
    wanted = [i for i in dict.fromkeys(ids) if MODEL_ID.fullmatch(i)]
    if not wanted:
        return {}
    return {e.model.id: e for e in entries(listed_models().filter(id__in=wanted))}


def listed_names() -> list[tuple[str, str]]:
    """(id, name) of every served listed model, for pickers."""
    served = Route.objects.filter(model=OuterRef("pk"), active=True, provider__active=True)
    return list(
        Model.objects.filter(active=True, provider__active=True, prices__isnull=False)
        .filter(Exists(served))
        .distinct()
        .order_by("id")
        .values_list("id", "name")
    )


# ---- the list: cards, filters, facet counts, orderings -----------------------------------------


@dataclass(slots=True)
class Card:
    """One row of the list: what it shows, filters, counts and sorts by. Read as plain values
    (no model instances, no prefetch machinery): the list reads every listed model on each
    request, and at 500 models the ORM's per-instance work would be most of the page's time."""

    id: str
    name: str
    author: str
    description: str
    context_window: int | None
    sort_order: int
    release_date: date | None
    added_at: datetime
    open_weights: bool
    embeddings: bool
    input: Decimal  # the current price version's, USD per 1M tokens
    output: Decimal
    providers: list[Provider]
    demo: bool
    capabilities: frozenset[str]
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    regions: frozenset[str]
    policies: frozenset[str]
    provider_slugs: frozenset[str]
    text: str = field(repr=False)
    # Set by the list view for the rows of the page it shows (see catalog.views).
    url: str = ""
    summary: str = ""
    chips: tuple[str, ...] = ()
    context_text: str = "—"
    input_text: str = "—"
    output_text: str = "—"


@dataclass(frozen=True, slots=True)
class _Serving:
    providers: list[Provider]
    demo: bool
    regions: frozenset[str]
    policies: frozenset[str]
    slugs: frozenset[str]


CARD_FIELDS = (
    "id",
    "name",
    "author",
    "description",
    "context_window",
    "sort_order",
    "release_date",
    "added_at",
    "open_weights",
    "input_modalities",
    "output_modalities",
    *CAPABILITY_FLAGS,
)


def cards() -> list[Card]:
    """Every served listed model (a price, a route through a listed provider) as a card, in
    four small queries: the listed providers, the models, the price versions' two main figures
    and the active routes."""
    providers = {p.pk: p for p in Provider.objects.filter(active=True)}
    rows = (
        Model.objects.filter(active=True, provider__active=True)
        .order_by()
        .values_list(*CARD_FIELDS)
    )
    # The current version's prices: every version's two figures, the highest version kept (a
    # subquery per model costs more than these few small rows).
    prices: dict[str, tuple[int, Decimal, Decimal]] = {}
    # (A route's own price is not the model's: only the model's own versions.)
    versions = PriceVersion.objects.filter(model__active=True, route=None).order_by()
    for model_id, version, price_in, price_out in versions.values_list(
        "model_id", "version", "input", "output"
    ):
        if model_id not in prices or prices[model_id][0] < version:
            prices[model_id] = (version, price_in, price_out)
    served: dict[str, list[int]] = {}
    routes = Route.objects.filter(active=True, provider__active=True).order_by(
        "model_id", "priority", "-weight", "pk"
    )
    for model_id, provider_id in routes.values_list("model_id", "provider_id"):
        serving = served.setdefault(model_id, [])
        if provider_id not in serving:
            serving.append(provider_id)
    demo = demo_checker()
    # What follows from who serves a model, worked out once per set of providers (a few
    # dozen sets for hundreds of models).
    by_set: dict[tuple[int, ...], _Serving] = {}

    def serving_of(pks: tuple[int, ...]) -> _Serving:
        if pks not in by_set:
            by = [providers[pk] for pk in pks]
            by_set[pks] = _Serving(
                providers=by,
                demo=all(demo(p) for p in by),
                regions=frozenset(p.region for p in by if p.region),
                policies=_policies(by),
                slugs=frozenset(p.slug for p in by),
            )
        return by_set[pks]

    result = []
    for row in rows:
        values = dict(zip(CARD_FIELDS, row, strict=True))
        price = prices.get(values["id"])
        if price is None or values["id"] not in served:
            continue  # not served: no price or no route (as in the relay's catalog)
        by = serving_of(tuple(served[values["id"]]))
        inputs = _input_modalities(values["input_modalities"], values["vision"])
        result.append(
            Card(
                id=values["id"],
                name=values["name"],
                author=values["author"],
                description=values["description"],
                context_window=values["context_window"],
                sort_order=values["sort_order"],
                release_date=values["release_date"],
                added_at=values["added_at"],
                open_weights=values["open_weights"],
                embeddings=values["embeddings"],
                input=price[1],
                output=price[2],
                providers=by.providers,
                demo=by.demo,
                capabilities=_capabilities(values, inputs),
                input_modalities=inputs,
                output_modalities=_output_modalities(
                    values["output_modalities"], values["embeddings"]
                ),
                regions=by.regions,
                policies=by.policies,
                provider_slugs=by.slugs,
                text=" ".join(
                    (values["id"], values["name"], values["author"], values["description"])
                ).casefold(),
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class Query:
    """What the list is asked for (catalog.forms.ListQuery's cleaned data)."""

    q: str = ""
    provider: tuple[str, ...] = ()
    author: tuple[str, ...] = ()
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    capability: tuple[str, ...] = ()
    open_weights: bool = False
    min_context: int = 0
    max_input: Decimal | None = None
    max_output: Decimal | None = None
    policy: tuple[str, ...] = ()
    region: tuple[str, ...] = ()
    sort: str = ""


def _predicates(query: Query) -> dict[str, Callable[[Card], bool]]:
    """The filters the query sets, by name: each says whether an entry passes it."""
    tests: dict[str, Callable[[Card], bool]] = {}
    if terms := query.q.casefold().split():
        tests["q"] = lambda e: all(t in e.text for t in terms)
    if query.provider:
        wanted = frozenset(query.provider)
        tests["provider"] = lambda e: not wanted.isdisjoint(e.provider_slugs)
    if query.author:
        authors = frozenset(query.author)
        tests["author"] = lambda e: e.author in authors
    if query.input:
        inputs = frozenset(query.input)
        tests["input"] = lambda e: inputs.issubset(e.input_modalities)
    if query.output:
        outputs = frozenset(query.output)
        tests["output"] = lambda e: outputs.issubset(e.output_modalities)
    if query.capability:
        capabilities = frozenset(query.capability)
        tests["capability"] = lambda e: capabilities <= e.capabilities
    if query.open_weights:
        tests["open_weights"] = lambda e: e.open_weights
    if query.min_context:
        least = query.min_context
        tests["min_context"] = lambda e: (e.context_window or 0) >= least
    if query.max_input is not None:
        most_in = query.max_input
        tests["max_input"] = lambda e: e.input <= most_in
    if query.max_output is not None:
        most_out = query.max_output
        tests["max_output"] = lambda e: e.output <= most_out
    if query.policy:
        policies = frozenset(query.policy)
        tests["policy"] = lambda e: policies <= e.policies
    if query.region:
        regions = frozenset(query.region)
        tests["region"] = lambda e: not regions.isdisjoint(e.regions)
    return tests


@dataclass(slots=True)
class Result:
    matches: list[Card]
    # Facet counts: filter name → option value → how many models choosing it would give.
    counts: dict[str, Counter[str]]


def search(all_cards: list[Card], query: Query) -> Result:
    """The entries the query matches, and the counts for each option of each filter."""
    tests = _predicates(query)
    matches: list[Card] = []
    near: dict[str, list[Card]] = {name: [] for name in ANY_OF}
    for entry in all_cards:
        failed = [name for name, test in tests.items() if not test(entry)]
        if not failed:
            matches.append(entry)
            for name in ANY_OF:
                near[name].append(entry)
        elif len(failed) == 1 and failed[0] in near:
            near[failed[0]].append(entry)
    counts: dict[str, Counter[str]] = {
        "provider": Counter(s for e in near["provider"] for s in e.provider_slugs),
        "author": Counter(e.author for e in near["author"] if e.author),
        "region": Counter(r for e in near["region"] for r in e.regions),
        "input": Counter(m for e in matches for m in set(e.input_modalities)),
        "output": Counter(m for e in matches for m in set(e.output_modalities)),
        "capability": Counter(c for e in matches for c in e.capabilities),
        "policy": Counter(p for e in matches for p in e.policies),
        "open_weights": Counter("yes" for e in matches if e.open_weights),
    }
    return Result(matches=matches, counts=counts)


SORTS: tuple[tuple[str, Any], ...] = (
    ("", _("Catalog order")),
    ("price", _("Price: low to high (input, then output)")),
    ("-price", _("Price: high to low (input, then output)")),
    ("context", _("Context: largest first")),
    ("newest", _("Newest first")),
    ("used", _("Most used here (30 days)")),
)
_EPOCH = datetime.min.date()


def ordered(
    matches: list[Card], sort: str, usage_counts: Mapping[str, int] | None = None
) -> list[Card]:
    """The matches in the order asked for (ties: the catalog's order, or the id for price)."""
    if sort in ("price", "-price"):
        priced = sorted(matches, key=lambda c: c.id)
        priced.sort(key=lambda c: (c.input, c.output), reverse=sort == "-price")
        return priced
    result = sorted(matches, key=lambda c: (c.sort_order, c.id))
    if sort == "context":
        result.sort(key=lambda c: c.context_window or 0, reverse=True)
    elif sort == "newest":
        result.sort(key=lambda c: (c.release_date or _EPOCH, c.added_at), reverse=True)
    elif sort == "used":
        used = usage_counts or {}
        result.sort(key=lambda c: used.get(c.id, 0), reverse=True)
    return result
