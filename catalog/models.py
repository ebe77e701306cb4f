from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _

from core.pricing import TOKEN_PRICES, Price, Tier
from lib.money import MONEY, MaxPlaces
from lib.secrets import EncryptedField


class Source(models.TextChoices):
    """Where a catalog row's current values came from. ``loadcatalog`` writes only rows whose
    values came from the file (and adds what is missing); rows last edited in the admin are
    kept until ``loadcatalog --reset``."""

    FILE = "file", _("the catalog file")
    ADMIN = "admin", _("the admin")


def source_field() -> models.CharField[str, str]:
    return models.CharField(
        _("values from"),
        max_length=10,
        choices=Source.choices,
        default=Source.FILE,
        help_text=_("Values edited in the admin are kept when the catalog file is loaded."),
    )


class Provider(models.Model):
    class Shape(models.TextChoices):
        OPENAI = "openai", _("OpenAI-compatible")
        ANTHROPIC = "anthropic", _("Anthropic Messages")

    # The fields the catalog file gives (see catalog.loader).
    FILE_FIELDS: ClassVar[tuple[str, ...]] = ("name", "api_shape", "base_url", "website", "options")

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    api_shape = models.CharField(max_length=20, choices=Shape.choices, default=Shape.OPENAI)
    base_url = models.URLField(max_length=300)
    # Set in the admin, kept encrypted (TP_SECRETS_KEYS); TP_PROVIDER_<SLUG>_API_KEY overrides it.
    api_key = EncryptedField(_("API key"), blank=True)
    website = models.URLField(blank=True)
    # Per-provider quirks of the API shape, read by the relay (every key is documented in
    # relay/adapters/quirks.py), e.g. {"max_tokens_param": "max_completion_tokens",
    # "rename_params": {"seed": "random_seed"}, "unsupported": {"logprobs": "refuse"}}.
    options = models.JSONField(default=dict, blank=True)
    # Listed: its models are shown in the catalog and served (the operator's choice).
    active = models.BooleanField(_("listed"), default=True)
    doc_url = models.URLField(_("documentation"), blank=True)
    # Data policy, as the provider states it (shown on model pages; routing can filter on it).
    region = models.CharField(
        _("region"), max_length=40, blank=True, help_text=_("Where it processes requests.")
    )
    trains_on_prompts = models.BooleanField(
        _("trains on prompts"), null=True, blank=True, help_text=_("Empty: not known.")
    )
    prompt_retention_days = models.PositiveIntegerField(
        _("keeps prompts (days)"),
        null=True,
        blank=True,
        help_text=_("0: not kept (zero data retention). Empty: not known."),
    )
    privacy_url = models.URLField(_("privacy policy"), blank=True)
    source = source_field()

    def __str__(self) -> str:
        return self.name


class Model(models.Model):
    FILE_FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "provider",
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
        "active",
        "sort_order",
    )

    id = models.CharField(
        primary_key=True,
        max_length=150,
        validators=[
            RegexValidator(
                r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
                _("Letters, digits and . _ : / - only, starting with a letter or digit."),
            )
        ],
    )
    name = models.CharField(max_length=150)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    upstream_model = models.CharField(max_length=150)
    description = models.TextField(blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(default=8192)
    aliases = models.JSONField(default=list, blank=True)
    function_calling = models.BooleanField(default=False)
    json_mode = models.BooleanField(default=False)
    vision = models.BooleanField(default=False)
    embeddings = models.BooleanField(default=False)
    open_weights = models.BooleanField(default=False)
    reasoning = models.BooleanField(default=False)
    structured_outputs = models.BooleanField(_("structured outputs"), default=False)
    # Who made it (the lab), as opposed to who serves it (the provider).
    author = models.CharField(max_length=60, blank=True)
    family = models.CharField(max_length=100, blank=True)
    release_date = models.DateField(null=True, blank=True)
    knowledge_cutoff = models.CharField(max_length=20, blank=True)
    input_modalities = models.JSONField(default=list, blank=True)
    output_modalities = models.JSONField(default=list, blank=True)
    # OpenRouter's names: temperature, top_p, tools, tool_choice, response_format, ...
    supported_parameters = models.JSONField(default=list, blank=True)
    deprecated = models.BooleanField(default=False)
    # Where an imported model came from ("models.dev:<provider>/<model>"): the import upserts by it.
    import_key = models.CharField(
        max_length=200, unique=True, null=True, blank=True, editable=False
    )
    added_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(_("listed"), default=True)
    sort_order = models.PositiveIntegerField(default=100)
    source = source_field()

    class Meta:
        ordering = ["sort_order", "id"]

    def __str__(self) -> str:
        return self.id

    @property
    def price(self) -> PriceVersion | None:
        """The model's own current price (a route's own prices are not the model's)."""
        return self.prices.filter(route=None).order_by("-version").first()


# USD per 1M tokens: up to six decimals (a millionth of a dollar per 1M tokens); the cost
# function rounds a request's total once, up, to the nano-dollar.
PER_TOKENS: list[Callable[[Any], None]] = [MinValueValidator(Decimal(0)), MaxPlaces(6)]


class PriceVersion(models.Model):
    """USD per 1M tokens, and per input image and second of input audio where a model charges
    for them. A change of price adds a version (catalog.services.add_price_version); a version
    is never edited, and usage keeps the one it paid."""

    PRICE_FIELDS: ClassVar[tuple[str, ...]] = (
        "input",
        "output",
        "cached_input",
        "cache_write",
        "cache_write_1h",
        "reasoning",
        "input_audio",
        "output_audio",
        "request",
        "image",
        "audio_second",
        "tiers",
    )

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="prices")
    # A route's own price (a provider that charges differently for the model); empty: the
    # model's. Versions count per model across both, so (model, version) still names one row:
    # what a usage event keeps, and what the worker re-prices it by. A version is never deleted
    # (a later one would take its number): a route with prices of its own is switched off, not
    # deleted (deleting its model deletes them all together).
    route = models.ForeignKey(
        "Route",
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="prices",
        help_text=_("Empty: the model's price. Set: this route's own price for the model."),
    )
    version = models.PositiveIntegerField()
    input = models.DecimalField(
        **MONEY, validators=PER_TOKENS, help_text=_("USD per 1M input tokens.")
    )
    output = models.DecimalField(
        **MONEY, validators=PER_TOKENS, help_text=_("USD per 1M output tokens.")
    )
    cached_input = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=PER_TOKENS,
        help_text=_("USD per 1M cached input tokens (empty: the input price)."),
    )
    cache_write = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=PER_TOKENS,
        help_text=_("USD per 1M tokens written to the prompt cache (5 minutes; empty: input)."),
    )
    cache_write_1h = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=PER_TOKENS,
        help_text=_("USD per 1M tokens written to the 1-hour prompt cache (empty: cache write)."),
    )
    reasoning = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=PER_TOKENS,
        help_text=_("USD per 1M reasoning tokens (empty: the output price)."),
    )
    input_audio = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=PER_TOKENS,
        help_text=_("USD per 1M audio input tokens (empty: the input price)."),
    )
    output_audio = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=PER_TOKENS,
        help_text=_("USD per 1M audio output tokens (empty: the output price)."),
    )
    request = models.DecimalField(
        **MONEY,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text=_("USD per request (0: none)."),
    )
    image = models.DecimalField(
        **MONEY,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text=_("USD per input image (0: none)."),
    )
    audio_second = models.DecimalField(
        **MONEY,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0)), MaxPlaces(6)],
        help_text=_("USD per second of input audio (0: none)."),
    )
    # Long-context tiers: above a prompt size, other token prices for the whole request, e.g.
    # [{"above": 200000, "input": "6", "output": "22.5", "cached_input": "0.6"}] (decimal
    # strings, USD per 1M; a price a tier leaves out is the base one).
    tiers = models.JSONField(default=list, blank=True)
    # What the provider charges, before the margin rule (imported models), for the operator.
    upstream = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    source = source_field()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="price_model_version")
        ]
        ordering = ["model", "-version"]

    def __str__(self) -> str:
        if self.route_id is not None:
            return f"{self.model_id} v{self.version} (route {self.route_id})"
        return f"{self.model_id} v{self.version}"

    def clean(self) -> None:
        """Tiers the cost function can read (a bad one would stop the catalog's publication)."""
        try:
            tiers = [Tier.from_dict(t) for t in self.tiers or []]
        except (AttributeError, KeyError, TypeError, ValueError, ArithmeticError):
            tiers = None
        prices = [getattr(t, n) for t in tiers or [] for n in TOKEN_PRICES]
        if (
            tiers is None
            or not isinstance(self.tiers, list)
            or any(p is not None and p < 0 for p in prices)
        ):
            raise ValidationError(
                {
                    "tiers": _(
                        'A list of tiers such as {"above": 200000, "input": "6", "output": '
                        '"22.5"}: a prompt size in tokens and prices (USD per 1M, not negative).'
                    )
                }
            )

    def as_price(self) -> Price:
        """The pure price the relay and the worker compute costs with."""
        fields = {name: getattr(self, name) for name in self.PRICE_FIELDS}
        return self.price_of(self.version, fields)

    @classmethod
    def price_of(cls, version: int, fields: dict[str, Any]) -> Price:
        """:meth:`as_price` from a row's ``PRICE_FIELDS`` read without the ORM (the usage
        worker's batch reads them in one prepared statement)."""
        return Price(
            version=version,
            input=fields["input"],
            output=fields["output"],
            cached_input=fields["cached_input"],
            cache_write=fields["cache_write"],
            cache_write_1h=fields["cache_write_1h"],
            reasoning=fields["reasoning"],
            input_audio=fields["input_audio"],
            output_audio=fields["output_audio"],
            request=fields["request"],
            image=fields["image"],
            audio_second=fields["audio_second"],
            tiers=tuple(Tier.from_dict(t) for t in fields["tiers"] or ()),
        )


class Route(models.Model):
    """One way to reach a model: the relay tries routes by priority (lower first), spreading
    load by weight within a priority, and moves on when one fails before its first byte."""

    FILE_FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "provider",
        "upstream_model",
        "priority",
        "weight",
        "active",
    )

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="routes")
    upstream_model = models.CharField(max_length=150)
    priority = models.PositiveSmallIntegerField(
        default=0, help_text=_("Lower first; the next priority is tried when these fail.")
    )
    weight = models.PositiveSmallIntegerField(
        default=1, help_text=_("Share of the requests among routes of the same priority.")
    )
    active = models.BooleanField(default=True)
    # What this route's provider allows where it differs from the model's (empty: the model's).
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    source = source_field()
    # Listed by the catalog file at its last load: such a route is switched off rather than
    # deleted (loadcatalog would add it again).
    in_file = models.BooleanField(_("in the catalog file"), default=False, editable=False)

    class Meta:
        ordering = ["model", "priority", "-weight", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "upstream_model"], name="route_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_id} via {self.provider.slug}"


class MarginRule(models.Model):
    """What imported prices are marked up by: a percentage on the provider's own prices, for
    one provider or (provider empty) for all the others. The seed's models in the catalog file
    keep the file's prices."""

    provider = models.OneToOneField(
        Provider,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="margin_rule",
        help_text=_("Empty: every provider without a rule of its own."),
    )
    percent = models.DecimalField(
        _("margin (%)"),
        max_digits=7,
        decimal_places=3,
        validators=[MinValueValidator(Decimal(0))],
    )
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        # One rule per provider and one default (no provider): an index on the provider with
        # the default as 0, which SQLite (make run) enforces too, unlike NULLS NOT DISTINCT.
        constraints = [
            models.UniqueConstraint(
                Coalesce("provider", Value(0)),
                name="margin_one_per_provider",
                violation_error_message=_(
                    "There is already a rule for this provider (or, with no provider, a default)."
                ),
            )
        ]

    def __str__(self) -> str:
        return f"{self.percent}% on {self.provider or _('every provider')}"


class RouteHour(models.Model):
    """One hour of one route's traffic (model × provider), from the usage events the worker
    records (billing.routestats): the figures of the model pages and of the relay's
    ``/v1/models/{id}/endpoints`` (catalog.figures). Every attempt counts, a failed one before
    a failover too. Time to first token and throughput are histograms over the fixed buckets
    of ``catalog.figures`` (a JSON list of counts, so the development SQLite works too), from
    which the median is read."""

    model_id = models.CharField(max_length=150)
    provider = models.CharField(max_length=50)
    hour = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    # Attempts that did not end well, whatever the cause (client errors and 429 included) ...
    errors = models.PositiveIntegerField(default=0)
    # ... and those the upstream is to blame for (5xx, unreachable, timed out, cut off).
    upstream_errors = models.PositiveIntegerField(default=0)
    ttfb = models.JSONField(default=list)  # counts per catalog.figures.TTFB_BUCKETS
    tps = models.JSONField(default=list)  # counts per catalog.figures.TPS_BUCKETS

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_id", "provider", "hour"], name="routehour_unique"
            )
        ]
        indexes = [models.Index(fields=["hour"], name="routehour_hour")]

    def __str__(self) -> str:
        return f"{self.model_id} via {self.provider} at {self.hour:%Y-%m-%d %H}:00"
