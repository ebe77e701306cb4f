"""What the model and comparison pages show, worked out of an entry (catalog.selectors): the
price types a version sets, the price history as a step chart drawn on the server (inline SVG,
no script), the providers' data policies and the comparison's rows. Prices stay decimals all
the way: the chart's coordinates are computed in Decimal too."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _

from lib.money import usd_text

from .models import PriceVersion, Provider
from .selectors import CAPABILITIES, MODALITY_LABELS, Entry

# The price types of a version: field, label, unit. Token prices are per 1M tokens.
PER_1M = _("per 1M tokens")
PRICE_TYPES: tuple[tuple[str, Any, Any], ...] = (
    ("input", _("Input"), PER_1M),
    ("output", _("Output"), PER_1M),
    ("cached_input", _("Cached input (cache read)"), PER_1M),
    ("cache_write", _("Cache write (5 minutes)"), PER_1M),
    ("cache_write_1h", _("Cache write (1 hour)"), PER_1M),
    ("reasoning", _("Reasoning"), PER_1M),
    ("input_audio", _("Audio input"), PER_1M),
    ("output_audio", _("Audio output"), PER_1M),
    ("request", _("Per request"), _("per request")),
    ("image", _("Per input image"), _("per image")),
    ("audio_second", _("Per second of input audio"), _("per second")),
)
# Per-request, per-image and per-second prices are set when not zero; the others when not empty.
ZERO_MEANS_NONE = frozenset({"request", "image", "audio_second"})


@dataclass(frozen=True, slots=True)
class PriceRow:
    field: str
    label: Any
    unit: Any
    amount: Decimal


def _is_set(price: PriceVersion, name: str) -> bool:
    value = getattr(price, name)
    if value is None:
        return False
    return not (name in ZERO_MEANS_NONE and value == 0)


def price_rows(price: PriceVersion) -> list[PriceRow]:
    """Every price type the version sets."""
    return [
        PriceRow(name, label, unit, getattr(price, name))
        for name, label, unit in PRICE_TYPES
        if _is_set(price, name)
    ]


@dataclass(frozen=True, slots=True)
class Tier:
    above: int
    rows: list[PriceRow]


def tiers(price: PriceVersion) -> list[Tier]:
    """The long-context tiers: above a prompt size, the token prices the tier sets."""
    labels = {name: (label, unit) for name, label, unit in PRICE_TYPES}
    result = []
    for tier in sorted(price.tiers or [], key=lambda t: int(t.get("above", 0))):
        rows = [
            PriceRow(name, *labels[name], Decimal(str(value)))
            for name, value in tier.items()
            if name in labels and value is not None
        ]
        result.append(Tier(above=int(tier.get("above", 0)), rows=rows))
    return result


# ---- the price history chart ----------------------------------------------------------------

WIDTH, HEIGHT = Decimal(640), Decimal(220)
LEFT, RIGHT, TOP, BOTTOM = Decimal(56), Decimal(12), Decimal(12), Decimal(28)
PIXEL = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    label: Any
    points: str  # the SVG polyline's points


@dataclass(frozen=True, slots=True)
class Chart:
    """An SVG's numbers, as strings (never localised: "12,5" is no coordinate)."""

    width: str
    height: str
    series: list[Series]
    top_label: str
    first_label: str
    last_label: str
    plot_left: str
    plot_right: str
    plot_top: str
    plot_bottom: str
    label_x: str
    top_label_y: str
    date_y: str


def _px(value: Decimal) -> str:
    return str(value.quantize(PIXEL, rounding=ROUND_HALF_UP))


def history_chart(versions: list[PriceVersion], now: datetime | None = None) -> Chart | None:
    """A step chart of the input and output prices over the versions (oldest first), each
    price held until the next version and the last one until now."""
    if not versions:
        return None
    ordered = sorted(versions, key=lambda v: v.version)
    now = now or timezone.now()
    start = int(ordered[0].created_at.timestamp())
    end = max(int(now.timestamp()), int(ordered[-1].created_at.timestamp()) + 1)
    highest = max(max(v.input, v.output) for v in ordered) or Decimal(1)
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM

    def x(moment: datetime) -> Decimal:
        return LEFT + span_x * (int(moment.timestamp()) - start) / (end - start)

    def y(amount: Decimal) -> Decimal:
        return TOP + span_y - span_y * amount / highest

    series = []
    for name, label in (("input", _("Input")), ("output", _("Output"))):
        points: list[str] = []
        for i, version in enumerate(ordered):
            amount = y(getattr(version, name))
            until = x(ordered[i + 1].created_at) if i + 1 < len(ordered) else LEFT + span_x
            points.append(f"{_px(x(version.created_at))},{_px(amount)}")
            points.append(f"{_px(until)},{_px(amount)}")
        series.append(Series(name, label, " ".join(points)))
    return Chart(
        width=_px(WIDTH),
        height=_px(HEIGHT),
        series=series,
        top_label=f"${usd_text(highest)}",
        first_label=date_format(ordered[0].created_at, "SHORT_DATE_FORMAT"),
        last_label=date_format(now, "SHORT_DATE_FORMAT"),
        plot_left=_px(LEFT),
        plot_right=_px(LEFT + span_x),
        plot_top=_px(TOP),
        plot_bottom=_px(TOP + span_y),
        label_x=_px(LEFT - 6),
        top_label_y=_px(TOP + 4),
        date_y=_px(HEIGHT - 8),
    )


# ---- the comparison -------------------------------------------------------------------------


def _yes_no(value: bool | None) -> str:
    if value is None:
        return str(_("not known"))
    return str(_("yes")) if value else str(_("no"))


def _number(value: int | None) -> str:
    return f"{value:,}" if value else "—"


def _modalities(values: tuple[str, ...]) -> str:
    return ", ".join(str(MODALITY_LABELS.get(v, v)) for v in values)


def _tiers_text(price: PriceVersion | None) -> str:
    if price is None:
        return "—"
    return ", ".join(f"> {t.above:,}" for t in tiers(price)) or "—"


def _price_cell(price: PriceVersion | None, name: str) -> str:
    return f"${usd_text(getattr(price, name))}" if price and _is_set(price, name) else "—"


def compare_rows(chosen: list[Entry]) -> list[tuple[Any, list[str]]]:
    """The comparison table: one row per field, one cell per model."""
    rows: list[tuple[Any, list[str]]] = [
        (_("ID"), [e.model.id for e in chosen]),
        (_("Author"), [e.model.author or "—" for e in chosen]),
        (_("Providers"), [", ".join(p.name for p in e.providers) for e in chosen]),
        (_("Context (tokens)"), [_number(e.model.context_window) for e in chosen]),
        (_("Max output (tokens)"), [_number(e.model.max_output_tokens) for e in chosen]),
        (_("Input modalities"), [_modalities(e.input_modalities) for e in chosen]),
        (_("Output modalities"), [_modalities(e.output_modalities) for e in chosen]),
    ]
    for value, label in CAPABILITIES:
        rows.append((label, [_yes_no(value in e.capabilities) for e in chosen]))
    rows.append((_("Open weights"), [_yes_no(e.model.open_weights) for e in chosen]))
    rows.append(
        (
            _("Release date"),
            [date_format(d) if (d := e.model.release_date) else "—" for e in chosen],
        )
    )
    rows.append((_("Knowledge cutoff"), [e.model.knowledge_cutoff or "—" for e in chosen]))
    for name, label, unit in PRICE_TYPES:
        cells = [_price_cell(e.price, name) for e in chosen]
        if any(c != "—" for c in cells):
            rows.append((f"{label} ({unit})", cells))
    rows.append((_("Long-context tiers (prompt tokens)"), [_tiers_text(e.price) for e in chosen]))
    rows.append(
        (
            _("Supported parameters"),
            [", ".join(map(str, e.model.supported_parameters)) or "—" for e in chosen],
        )
    )
    rows.append(
        (
            _("Trains on prompts"),
            [", ".join(_training(p) for p in e.providers) for e in chosen],
        )
    )
    rows.append(
        (_("Keeps prompts"), [", ".join(retention(p) for p in e.providers) for e in chosen])
    )
    rows.append(
        (_("Region"), [", ".join(p.region for p in e.providers if p.region) or "—" for e in chosen])
    )
    return rows


def _training(provider: Provider) -> str:
    return f"{provider.name}: {_yes_no(provider.trains_on_prompts)}"


def retention(provider: Provider) -> str:
    days = provider.prompt_retention_days
    if days is None:
        text = str(_("not known"))
    elif days == 0:
        text = str(_("not kept"))
    else:
        text = str(_("%(days)d days")) % {"days": days}
    return f"{provider.name}: {text}"
