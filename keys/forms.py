from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from catalog.models import Model, Provider

from . import byok, validation
from .models import LIMIT_FIELDS, ApiKey, ProviderCredential

# The ``max_price`` entries the form has fields for (the others: the API and the admin).
SHOWN_PRICES = ("prompt", "completion")


def _price_field(label: Any) -> forms.DecimalField:
    return forms.DecimalField(
        label=label, required=False, min_value=Decimal(0), max_digits=15, decimal_places=6
    )


class LimitsForm(forms.Form):
    """A key's limits; every one optional. Also the JSON API's rules (see keys.api)."""

    # Whether ``routing`` is made of the routing_* fields (the portal) or is a field of its own
    # (the admin's JSON, keys.admin).
    structured_routing = True

    allowed_models = forms.MultipleChoiceField(
        label=_("Allowed models"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: every model."),
    )
    allowed_ips = forms.CharField(
        label=_("Allowed IP addresses"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "203.0.113.0/24\n2001:db8::1"}),
        help_text=_("One address or CIDR range per line; empty: any address."),
    )
    expires_at = forms.DateTimeField(
        label=_("Expires (UTC)"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    rpm_limit = forms.IntegerField(
        label=_("Requests per minute"), required=False, min_value=1, max_value=1_000_000
    )
    tpm_limit = forms.IntegerField(
        label=_("Tokens per minute"), required=False, min_value=1, max_value=1_000_000_000
    )
    spend_cap = forms.DecimalField(
        label=_("Spend cap (USD)"),
        required=False,
        min_value=Decimal("0.01"),
        max_digits=15,
        decimal_places=6,
    )
    spend_cap_period = forms.ChoiceField(
        label=_("Cap period"),
        choices=ApiKey.Period.choices,
        initial=ApiKey.Period.MONTH,
        required=False,
    )

    # The key's routing defaults (the provider object of core.routing), field by field; the
    # admin edits the same dict as JSON (keys.admin).
    routing_sort = forms.ChoiceField(
        label=_("Sort providers by"),
        required=False,
        choices=[
            ("", _("The catalog's order")),
            ("price", _("Lowest price")),
            ("throughput", _("Highest throughput")),
            ("latency", _("Lowest latency")),
        ],
    )
    routing_order = forms.CharField(
        label=_("Try these providers first"),
        required=False,
        max_length=1000,
        help_text=_(
            "Provider slugs as the catalog shows them (mistral, openai…), in order, separated "
            "by commas."
        ),
    )
    routing_only = forms.MultipleChoiceField(
        label=_("Use only these providers"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: any provider."),
    )
    routing_ignore = forms.MultipleChoiceField(
        label=_("Never use these providers"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    routing_no_fallbacks = forms.BooleanField(
        label=_("Do not fall back to other providers"),
        required=False,
        help_text=_(
            "Try only the providers listed first, or only the first provider when none are listed."
        ),
    )
    routing_max_prompt = _price_field(_("Maximum input price (USD per 1M tokens)"))
    routing_max_completion = _price_field(_("Maximum output price (USD per 1M tokens)"))
    routing_data_collection = forms.ChoiceField(
        label=_("Providers that may train on prompts"),
        required=False,
        choices=[("", _("Allowed")), ("deny", _("Not allowed"))],
    )
    routing_zdr = forms.BooleanField(
        label=_("Only providers that keep no prompts (zero data retention)"), required=False
    )
    # What the fields above cannot show (set through the API or the admin) and saving keeps.
    routing_kept: dict[str, Any]

    def __init__(self, *args: Any, routing: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [  # type: ignore[attr-defined]
            (m.id, f"{m.name} ({m.id})") for m in Model.objects.filter(active=True)
        ]
        providers = [(p.slug, p.name) for p in Provider.objects.order_by("name")]
        known = {slug for slug, _name in providers}
        routing = routing or {}
        for name in ("routing_only", "routing_ignore"):
            # A provider named before it left the catalog stays listed, so saving keeps it.
            gone = [(slug, slug) for slug in routing.get(name[8:], ()) if slug not in known]
            self.fields[name].choices = providers + gone  # type: ignore[attr-defined]
        prices = routing.get("max_price") or {}
        self.initial.update(
            {
                "routing_sort": routing.get("sort", ""),
                "routing_order": ", ".join(routing.get("order", ())),
                "routing_only": routing.get("only", []),
                "routing_ignore": routing.get("ignore", []),
                "routing_no_fallbacks": routing.get("allow_fallbacks") is False,
                "routing_max_prompt": prices.get("prompt"),
                "routing_max_completion": prices.get("completion"),
                "routing_data_collection": routing.get("data_collection", ""),
                "routing_zdr": bool(routing.get("zdr")),
            }
        )
        self.routing_kept = {
            name: value
            for name, value in {
                "require_parameters": routing.get("require_parameters"),
                "max_price": {k: v for k, v in prices.items() if k not in SHOWN_PRICES},
            }.items()
            if value not in (None, {})
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.structured_routing:
            try:
                data["routing"] = validation.routing(self._routing(data))
            except forms.ValidationError as exc:
                # (only the typed-in order can name a provider the catalog lacks)
                self.add_error("routing_order", exc)
        return data

    def _routing(self, data: dict[str, Any]) -> dict[str, Any]:
        """The provider object the routing fields make (what is left empty is not set)."""
        order = [slug.strip() for slug in (data.get("routing_order") or "").split(",")]
        prices = dict(self.routing_kept.get("max_price", {}))
        for name in SHOWN_PRICES:
            if data.get(f"routing_max_{name}") is not None:
                prices[name] = str(data[f"routing_max_{name}"])
        routing: dict[str, Any] = {
            "order": [slug for slug in order if slug] or None,
            "only": data.get("routing_only") or None,
            "ignore": data.get("routing_ignore") or None,
            "allow_fallbacks": False if data.get("routing_no_fallbacks") else None,
            "sort": data.get("routing_sort") or None,
            "max_price": prices or None,
            "data_collection": data.get("routing_data_collection") or None,
            "zdr": True if data.get("routing_zdr") else None,
            "require_parameters": self.routing_kept.get("require_parameters"),
        }
        return {name: value for name, value in routing.items() if value is not None}

    def clean_allowed_ips(self) -> list[str]:
        return validation.networks(self.cleaned_data["allowed_ips"].replace(",", "\n").splitlines())

    def clean_routing(self) -> dict[str, object]:
        # (the admin's JSON field: keys.admin)
        return validation.routing(self.cleaned_data["routing"])

    def clean_expires_at(self) -> Any:
        return validation.expiry(self.cleaned_data["expires_at"])

    def clean_spend_cap_period(self) -> str:
        return self.cleaned_data["spend_cap_period"] or ApiKey.Period.MONTH

    def limits(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in LIMIT_FIELDS}

    @classmethod
    def for_key(cls, key: ApiKey, data: Any = None) -> LimitsForm:
        initial = {name: getattr(key, name) for name in LIMIT_FIELDS}
        initial["allowed_ips"] = "\n".join(key.allowed_ips or [])
        return cls(data, initial=initial, prefix="limits", routing=key.routing)


class KeyForm(LimitsForm):
    name = forms.CharField(
        label=_("Name"),
        max_length=100,
        help_text=_("Something to recognise it by, e.g. the app or machine that uses it."),
    )
    field_order = ["name"]


class RotateForm(forms.Form):
    grace = forms.TypedChoiceField(
        label=_("Keep the old key working for"),
        coerce=int,
        choices=[
            (0, _("no time: revoke it now")),
            (3600, _("1 hour")),
            (86400, _("1 day")),
            (7 * 86400, _("7 days")),
        ],
        initial=0,
    )


class ProviderKeyForm(forms.Form):
    """An account's own key for a provider (BYOK): added, or replacing the one it has. The key
    is never rendered back (``render_value=False``), also when the form has errors."""

    provider = forms.ModelChoiceField(
        label=_("Provider"),
        queryset=byok.selectable_providers(),
        to_field_name="slug",
        empty_label=None,
    )
    api_key = forms.CharField(
        label=_("API key"),
        max_length=byok.MAX_KEY_LENGTH,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_(
            "Checked with the provider when you save it; shown again only by its last four "
            "characters."
        ),
    )
    mode = forms.ChoiceField(
        label=_("Use it"),
        choices=ProviderCredential.Mode.choices,
        initial=ProviderCredential.Mode.PRIORITISED,
        widget=forms.RadioSelect,
    )

    def clean_api_key(self) -> str:
        try:
            return byok.clean_key(self.cleaned_data["api_key"].replace("\x00", ""))
        except byok.KeyRefused as exc:
            raise forms.ValidationError(exc.message) from None
