from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils.translation import gettext_lazy as _

from core.pricing import Price
from lib.money import MONEY


class Provider(models.Model):
    class Shape(models.TextChoices):
        OPENAI = "openai", _("OpenAI-compatible")
        ANTHROPIC = "anthropic", _("Anthropic Messages")

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    api_shape = models.CharField(max_length=20, choices=Shape.choices, default=Shape.OPENAI)
    base_url = models.URLField(max_length=300)
    # Operators may keep a key here; TP_PROVIDER_<SLUG>_API_KEY overrides it.
    api_key = models.CharField(max_length=300, blank=True)
    website = models.URLField(blank=True)
    # Per-provider quirks of the API shape, read by the relay's adapter, e.g.
    # {"send_stream_options": false, "drop_params": ["seed"], "rename_params": {"a": "b"}}.
    options = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name


class Model(models.Model):
    id = models.SlugField(primary_key=True, max_length=100)
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
    active = models.BooleanField(default=True)
    sort_order = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["sort_order", "id"]

    def __str__(self) -> str:
        return self.id

    @property
    def price(self) -> PriceVersion | None:
        return self.prices.order_by("-version").first()


class PriceVersion(models.Model):
    """USD per 1M tokens, and per input image and second of input audio where a model charges
    for them. A change of price adds a version; usage keeps the one it paid."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="prices")
    version = models.PositiveIntegerField()
    input = models.DecimalField(**MONEY)
    output = models.DecimalField(**MONEY)
    cached_input = models.DecimalField(**MONEY, null=True, blank=True)
    image = models.DecimalField(
        **MONEY, default=Decimal(0), help_text=_("USD per input image (0: none).")
    )
    audio_second = models.DecimalField(
        **MONEY, default=Decimal(0), help_text=_("USD per second of input audio (0: none).")
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="price_model_version")
        ]
        ordering = ["model", "-version"]

    def __str__(self) -> str:
        return f"{self.model_id} v{self.version}"

    def as_price(self) -> Price:
        """The pure price the relay and the worker compute costs with."""
        return Price(
            version=self.version,
            input=self.input,
            output=self.output,
            cached_input=self.cached_input if self.cached_input is not None else self.input,
            image=self.image,
            audio_second=self.audio_second,
        )


class Route(models.Model):
    """One way to reach a model: the relay tries routes by priority (lower first), spreading
    load by weight within a priority, and moves on when one fails before its first byte."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="routes")
    upstream_model = models.CharField(max_length=150)
    priority = models.PositiveSmallIntegerField(default=0)
    weight = models.PositiveSmallIntegerField(default=1)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["model", "priority", "-weight", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "upstream_model"], name="route_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_id} via {self.provider.slug}"
