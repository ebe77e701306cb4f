"""The catalog in the admin: every write goes through catalog.services, which publishes the
catalog to the relays after commit. Price versions are added, never edited; a provider's API
key is write-only; what the admin edits is kept when the catalog file is loaded again."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters

from . import services
from .health import route_health
from .models import MarginRule, Model, PriceVersion, Provider, Route

PRICE_COLUMNS = ("version", *PriceVersion.PRICE_FIELDS, "source", "created_at")


class ProviderForm(forms.ModelForm):
    # Declared for their scheme: an address typed without one is an https one.
    base_url = forms.URLField(
        label=_("Base URL"),
        max_length=300,
        assume_scheme="https",
        help_text=_("The provider's API, e.g. https://api.mistral.ai/v1"),
    )
    website = forms.URLField(label=_("Website"), required=False, assume_scheme="https")
    new_api_key = forms.CharField(
        label=_("API key"),
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Leave empty to keep the current key."),
    )
    remove_api_key = forms.BooleanField(label=_("Remove the stored key"), required=False)

    doc_url = forms.URLField(label=_("Documentation"), required=False, assume_scheme="https")
    privacy_url = forms.URLField(label=_("Privacy policy"), required=False, assume_scheme="https")

    class Meta:
        model = Provider
        fields = [
            "slug",
            "name",
            "active",
            "api_shape",
            "base_url",
            "website",
            "options",
            "doc_url",
            "region",
            "trains_on_prompts",
            "prompt_retention_days",
            "privacy_url",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("new_api_key") and data.get("remove_api_key"):
            raise forms.ValidationError(_("Give a new API key or remove the stored one, not both."))
        return data


def env_key_name(provider: Provider) -> str:
    return f"TP_PROVIDER_{provider.slug.upper().replace('-', '_')}_API_KEY"


def _listing(
    admin_: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], listed: bool
) -> None:
    count = services.set_listed(queryset, listed=listed)
    message = gettext("Listed: %(count)d.") if listed else gettext("Unlisted: %(count)d.")
    admin_.message_user(request, message % {"count": count}, messages.SUCCESS)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = (
        "slug",
        "name",
        "active",
        "api_shape",
        "base_url",
        "region",
        "api_key_stored",
        "source",
    )
    list_editable = ("active",)
    list_filter = ("active", "api_shape", "region", "source")
    search_fields = ("slug", "name")
    readonly_fields = ("api_key_stored", "source")
    actions = ["list_providers", "unlist_providers"]
    fieldsets = (
        (
            None,
            {"fields": ("slug", "name", "active", "api_shape", "base_url", "website", "options")},
        ),
        (_("API key"), {"fields": ("api_key_stored", "new_api_key", "remove_api_key")}),
        (
            _("Documentation and data policy"),
            {
                "fields": (
                    "doc_url",
                    "region",
                    "trains_on_prompts",
                    "prompt_retention_days",
                    "privacy_url",
                )
            },
        ),
        (_("Origin"), {"fields": ("source",)}),
    )

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> Any:
        # Only the editable column (Django would build every field, URLs included).
        return super().get_changelist_form(request, fields=self.list_editable, **kwargs)

    @admin.action(description=_("List selected providers"))
    def list_providers(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        _listing(self, request, queryset, True)

    @admin.action(description=_("Unlist selected providers"))
    def unlist_providers(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        _listing(self, request, queryset, False)

    @admin.display(description=_("API key stored"))
    def api_key_stored(self, obj: Provider) -> str:
        stored = gettext("yes") if obj.pk and obj.api_key else gettext("no")
        name = env_key_name(obj) if obj.slug else ""
        if name and os.environ.get(name):
            return gettext("%(stored)s (%(name)s is set and used instead)") % {
                "stored": stored,
                "name": name,
            }
        return stored

    # A key typed into the form never reaches an error report.
    @method_decorator(sensitive_post_parameters("new_api_key"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(*args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        services.save_provider(
            provider=obj,
            api_key=form.cleaned_data.get("new_api_key") or None,
            remove_api_key=bool(form.cleaned_data.get("remove_api_key")),
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PriceInline(admin.TabularInline):
    """The model's price versions, newest first; a new one is added, never edited."""

    model = PriceVersion
    fields = ("route", *PRICE_COLUMNS)
    readonly_fields = ("route", *PRICE_COLUMNS)
    extra = 0
    can_delete = False
    verbose_name = _("price version")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def add_price_version_url(model: Model) -> str:
    return f"{reverse('admin:catalog_priceversion_add')}?{urlencode({'model': model.pk})}"


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    # The change page has an "Add a price version" button beside History.
    change_form_template = "admin/catalog/model/change_form.html"
    list_display = (
        "id",
        "name",
        "provider",
        "upstream_model",
        "context_window",
        "author",
        "current_price",
        "active",
        "source",
    )
    list_filter = ("provider", "author", "active", "open_weights", "deprecated", "source")
    search_fields = ("id", "name", "upstream_model", "author")
    inlines = [PriceInline]
    actions = ["add_price_version", "list_models", "unlist_models"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Model]:
        return super().get_queryset(request).select_related("provider").prefetch_related("prices")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # The id is what keys, usage and clients name the model by.
        return ("id", "source") if obj else ("source",)

    @admin.display(description=_("current price (USD per 1M tokens in / out)"))
    def current_price(self, obj: Model) -> str:
        prices = sorted(
            (p for p in obj.prices.all() if p.route_id is None), key=lambda p: p.version
        )
        if not prices:
            return "-"
        price = prices[-1]
        return f"v{price.version}: {price.input.normalize():f} / {price.output.normalize():f}"

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        services.save_model(model=obj)
        if not obj.prices.filter(route=None).exists():
            self.message_user(
                request,
                gettext("Add a price version: the relays serve a model once it has a price."),
                messages.WARNING,
            )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Switch a model off instead (active): usage and keys keep naming it.
        return False

    @admin.action(description=_("List selected models"))
    def list_models(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        _listing(self, request, queryset, True)

    @admin.action(description=_("Unlist selected models"))
    def unlist_models(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        _listing(self, request, queryset, False)

    @admin.action(description=_("Add a price version"))
    def add_price_version(
        self, request: HttpRequest, queryset: QuerySet[Model]
    ) -> HttpResponse | None:
        models = list(queryset[:2])
        if len(models) != 1:
            self.message_user(
                request, gettext("Select one model to add a price version to."), messages.WARNING
            )
            return None
        return HttpResponseRedirect(add_price_version_url(models[0]))


class PriceVersionForm(forms.ModelForm):
    class Meta:
        model = PriceVersion
        fields = ["model", "route", *PriceVersion.PRICE_FIELDS]

    def clean(self) -> dict[str, Any] | None:
        data = super().clean() or {}
        route, model = data.get("route"), data.get("model")
        if route is not None and model is not None and route.model_id != model.pk:
            self.add_error("route", gettext("Choose a route of this model, or none."))
        return data


@admin.register(PriceVersion)
class PriceVersionAdmin(admin.ModelAdmin):
    """Add-only: the new version is the previous + 1, and the relays charge it from the next
    request. Opened from a model (its page's button or the list's action), with the model and
    its current prices filled in."""

    form = PriceVersionForm
    list_display = ("model", "route", *PRICE_COLUMNS)
    list_filter = ("source", "model")
    search_fields = ("model__id",)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        model = Model.objects.filter(pk=request.GET.get("model") or None).first()
        current = model.price if model else None
        if current is not None:
            for name in PriceVersion.PRICE_FIELDS:
                value = getattr(current, name)
                if isinstance(value, Decimal):
                    initial[name] = f"{value.normalize():f}"
                else:
                    initial[name] = "" if value is None else value
        return initial

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"show_save_and_continue": False, "show_save_and_add_another": False}
        return super().add_view(request, form_url, {**extra, **(extra_context or {})})

    def save_model(self, request: HttpRequest, obj: PriceVersion, form: Any, change: bool) -> None:
        data = form.cleaned_data
        added = services.add_price_version(
            model=data["model"],
            route=data.get("route"),
            **{name: data[name] for name in PriceVersion.PRICE_FIELDS},
        )
        obj.pk, obj.version, obj.created_at = added.pk, added.version, added.created_at

    def response_post_save_add(
        self, request: HttpRequest, obj: PriceVersion
    ) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:catalog_model_change", args=[obj.model_id]))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RouteForm(forms.ModelForm):
    class Meta:
        model = Route
        fields = ["model", "provider", "upstream_model", "priority", "weight", "active"]


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    """Routes of the catalog file are switched off (active) rather than deleted: the next
    ``loadcatalog`` would add a deleted one back, while a switched-off one stays off."""

    form = RouteForm
    list_display = (
        "model",
        "provider",
        "upstream_model",
        "priority",
        "weight",
        "active",
        "source",
        "in_file",
        "health",
    )
    list_filter = ("active", "provider", "source", "in_file")
    list_select_related = ("provider",)
    search_fields = ("model__id", "provider__slug", "upstream_model")
    readonly_fields = ("source", "in_file", "health")

    @admin.display(description=_("Health"))
    def health(self, obj: Route) -> str:
        """The route's circuit breaker as the relays share it (see catalog.health)."""
        if obj.pk is None:
            return "—"
        return route_health(obj).text

    def save_model(self, request: HttpRequest, obj: Route, form: Any, change: bool) -> None:
        services.save_route(route=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and (obj.in_file or obj.prices.exists()):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Route) -> None:
        services.delete_route(route=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Route]) -> None:
        kept, priced = [], []
        for route in queryset:
            try:
                services.delete_route(route=route)
            except services.ListedInFile:
                kept.append(str(route))
            except services.PricedRoute:
                priced.append(str(route))
        if priced:
            self.message_user(
                request,
                gettext(
                    "Not deleted, as usage keeps their own prices (switch them off instead): %s"
                )
                % ", ".join(priced),
                messages.WARNING,
            )
        if kept:
            self.message_user(
                request,
                gettext("Not deleted, as the catalog file lists them (switch them off instead): %s")
                % ", ".join(kept),
                messages.WARNING,
            )


@admin.register(MarginRule)
class MarginRuleAdmin(admin.ModelAdmin):
    """What imported prices are marked up by; ``importcatalog`` adds the new price versions."""

    list_display = ("__str__", "provider", "percent", "note")
    list_select_related = ("provider",)

    def save_model(self, request: HttpRequest, obj: MarginRule, form: Any, change: bool) -> None:
        services.save_margin_rule(rule=obj)
        self.message_user(
            request,
            gettext("Run manage.py importcatalog to price the imported models at this margin."),
            messages.INFO,
        )

    def delete_model(self, request: HttpRequest, obj: MarginRule) -> None:
        services.delete_margin_rule(rule=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MarginRule]) -> None:
        for rule in queryset:
            services.delete_margin_rule(rule=rule)
