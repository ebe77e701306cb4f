"""The catalog pages: the list, a model's page and the comparison. Each is a GET whose URL holds
the whole state; htmx asks the same view for the fragment it swaps (the results, the cost)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.pricing import cost
from lib import htmx
from lib.money import usd_text

from .figures import route_figures
from .forms import CostQuery, ListQuery
from .pages import compare_rows, history_chart, price_rows, tiers
from .selectors import (
    CAPABILITIES,
    MODALITY_LABELS,
    POLICIES,
    SORTS,
    Card,
    Entry,
    cards,
    entries_by_id,
    listed_names,
    ordered,
    search,
)

PAGE_SIZE = 50
COMPARE_MAX = 4
# Where the "most used here" ordering reads its figures: a function the URL configuration
# passes in (portal wires billing's daily rollups), since the catalog sits below billing.
UsageCounts = Callable[[], Mapping[str, int]]
MODALITY_ORDER = ("text", "image", "audio", "video", "file", "pdf", "embeddings")


def _rendered(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _options(
    name: str, values: list[tuple[str, str]], chosen: tuple[str, ...], counts: Mapping[str, int]
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"f-{name}-{i}",
            "value": value,
            "label": label,
            "count": counts.get(value, 0),
            "checked": value in chosen,
        }
        for i, (value, label) in enumerate(values)
    ]


CHIPS = (
    ("tools", gettext_lazy("tools")),
    ("json", gettext_lazy("JSON")),
    ("structured", gettext_lazy("structured")),
    ("vision", gettext_lazy("vision")),
    ("reasoning", gettext_lazy("reasoning")),
    ("embeddings", gettext_lazy("embeddings")),
)
SUMMARY_CHARS = 110


def _dress(rows: Iterable[Card]) -> None:
    """What the rows of the shown page print, worked out here rather than by template tags
    on every row (the list's budget is 50 ms at 500 models)."""
    prefix = reverse("models")
    chips = [(value, str(label)) for value, label in CHIPS]
    open_weights = str(_("open weights"))
    for card in rows:
        card.url = f"{prefix}{card.id}/"  # ids hold only [A-Za-z0-9._:/-]: nothing to quote
        text = card.description
        card.summary = text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
        card.chips = tuple(label for value, label in chips if value in card.capabilities) + (
            (open_weights,) if card.open_weights else ()
        )
        if card.context_window:
            card.context_text = number_format(card.context_window, force_grouping=True)
        card.input_text = f"${usd_text(card.input)}"
        if not card.embeddings:
            card.output_text = f"${usd_text(card.output)}"


def model_list(request: HttpRequest, usage_counts: UsageCounts | None = None) -> HttpResponse:
    everything = cards()
    providers = {p.slug: p.name for c in everything for p in c.providers}
    authors = sorted({c.author for c in everything if c.author}, key=str.casefold)
    present = {m for e in everything for m in (*e.input_modalities, *e.output_modalities)}
    modalities = [m for m in MODALITY_ORDER if m in present] + sorted(
        present.difference(MODALITY_ORDER)
    )
    regions = sorted({r for e in everything for r in e.regions})
    form = ListQuery(
        request.GET,
        providers=providers,
        authors=authors,
        modalities=modalities,
        regions=regions,
    )
    query = form.query()
    result = search(everything, query)
    used = usage_counts() if query.sort == "used" and usage_counts is not None else None
    page = Paginator(ordered(result.matches, query.sort, used), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    _dress(page.object_list)
    params = request.GET.copy()
    params.pop("page", None)
    modality_labels = [(m, str(MODALITY_LABELS.get(m, m))) for m in modalities]
    counts = result.counts
    facets = [
        {
            "name": "provider",
            "legend": _("Provider"),
            "options": _options(
                "provider",
                sorted(providers.items(), key=lambda kv: kv[1].casefold()),
                query.provider,
                counts["provider"],
            ),
        },
        {
            "name": "author",
            "legend": _("Author"),
            "options": _options(
                "author", [(a, a) for a in authors], query.author, counts["author"]
            ),
        },
        {
            "name": "capability",
            "legend": _("Capabilities"),
            "options": _options(
                "capability",
                [(v, str(label)) for v, label in CAPABILITIES],
                query.capability,
                counts["capability"],
            ),
        },
        {
            "name": "input",
            "legend": _("Input modality"),
            "options": _options("input", modality_labels, query.input, counts["input"]),
        },
        {
            "name": "output",
            "legend": _("Output modality"),
            "options": _options("output", modality_labels, query.output, counts["output"]),
        },
        {
            "name": "policy",
            "legend": _("Data policy (every provider serving it)"),
            "options": _options(
                "policy",
                [(v, str(label)) for v, label in POLICIES],
                query.policy,
                counts["policy"],
            ),
        },
        {
            "name": "region",
            "legend": _("Hosting region"),
            "options": _options(
                "region", [(r, r) for r in regions], query.region, counts["region"]
            ),
        },
    ]
    context = {
        "nav": "models",
        "form": form,
        "query": query,
        "page": page,
        "total": len(result.matches),
        "listed": len(everything),
        "facets": [f for f in facets if f["options"]],
        "open_weights_count": counts["open_weights"]["yes"],
        "sorts": SORTS,
        "contexts": form.fields["min_context"].choices,  # type: ignore[attr-defined]
        "page_query": params.urlencode(),
    }
    return htmx.page_or_part(
        request,
        page="catalog/models.html",
        part="catalog/partials/model_results.html",
        target="catalog-results",
        context=context,
    )


def _listed(model_id: str) -> Entry:
    entry = entries_by_id([model_id]).get(model_id)
    if entry is None:
        raise Http404(_("No listed model has this id."))
    return entry


def _cost_of(entry: Entry, form: CostQuery) -> dict[str, Any] | None:
    """One request's exact cost, and a thousand's, by the one cost function."""
    if entry.price is None:
        return None
    if form.is_bound:
        if not form.is_valid():
            return None
        counts = form.cleaned_data
    else:
        counts = {name: field.initial for name, field in form.fields.items()}
    cached = counts.get("cached_tokens") or 0
    one = cost(
        entry.price.as_price(),
        prompt_tokens=counts["input_tokens"] + cached,
        completion_tokens=counts["output_tokens"],
        cached_tokens=cached,
    )
    return {"one": one, "thousand": one * 1000, "counts": counts}


def _route_prices(entry: Entry) -> list[dict[str, Any]]:
    """Each provider's price for the model, where a route has one of its own (else nothing:
    one price for every provider is the model's, shown above)."""
    if not entry.route_prices or entry.price is None:
        return []
    rows: list[dict[str, Any]] = []
    for route in entry.routes:
        slug = route.provider.slug
        if any(row["slug"] == slug for row in rows):
            continue
        price = entry.route_prices.get(route.pk, entry.price)
        rows.append({"slug": slug, "name": route.provider.name, "price": price})
    return rows


def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    entry = _listed(model_id)
    form = CostQuery(request.GET if "input_tokens" in request.GET else None)
    context: dict[str, Any] = {
        "nav": "models",
        "entry": entry,
        "model": entry.model,
        "price": entry.price,
        "cost_form": form,
        "cost": _cost_of(entry, form),
    }
    if htmx.wants_part(request, "cost-result"):
        return _rendered(request, "catalog/partials/cost.html", context)
    context.update(
        {
            "price_rows": price_rows(entry.price) if entry.price else [],
            "tiers": tiers(entry.price) if entry.price else [],
            "versions": entry.versions,
            "chart": history_chart(entry.versions),
            "route_figures": route_figures(entry.model),
            "route_prices": _route_prices(entry),
            "capabilities": [label for v, label in CAPABILITIES if v in entry.capabilities],
            "input_modalities": [MODALITY_LABELS.get(m, m) for m in entry.input_modalities],
            "output_modalities": [MODALITY_LABELS.get(m, m) for m in entry.output_modalities],
            "relay_root_url": settings.TP_RELAY_BASE_URL.removesuffix("/v1"),
        }
    )
    return _rendered(request, "catalog/model_detail.html", context)


def compare(request: HttpRequest) -> HttpResponse:
    # The ids asked for, in order, once each (a hand-edited address may hold many: a few more
    # than can be shown are looked at, so that the page can say which ones it left out).
    asked = list(dict.fromkeys(i.strip() for i in request.GET.getlist("ids") if i.strip()))
    asked = asked[: COMPARE_MAX * 2]
    found = entries_by_id(asked)
    chosen = [found[i] for i in asked if i in found][:COMPARE_MAX]
    unknown = [i for i in asked if i not in found]
    slots = [e.model.id for e in chosen] + [""] * (COMPARE_MAX - len(chosen))
    context = {
        "nav": "models",
        "chosen": chosen,
        "rows": compare_rows(chosen) if len(chosen) >= 2 else [],
        "unknown": unknown,
        "dropped": len([i for i in asked if i in found]) > COMPARE_MAX,
        "slots": slots,
        "all_models": listed_names(),
        "compare_max": COMPARE_MAX,
    }
    return _rendered(request, "catalog/compare.html", context)
