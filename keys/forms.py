from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from catalog.models import Model

from . import byok, validation
from .models import LIMIT_FIELDS, ApiKey, ProviderCredential


class LimitsForm(forms.Form):
    """A key's limits; every one optional. Also the JSON API's rules (see keys.api)."""

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

    routing = forms.JSONField(
        label=_("Routing preferences"),
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": '{"sort": "price", "data_collection": "deny"}'}
        ),
        help_text=_(
            "Defaults for the provider object of each request (order, only, ignore, "
            "allow_fallbacks, sort, max_price, data_collection, zdr), as JSON; a request's "
            "own fields override them. Empty: none."
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [  # type: ignore[attr-defined]
            (m.id, f"{m.name} ({m.id})") for m in Model.objects.filter(active=True)
        ]

    def clean_allowed_ips(self) -> list[str]:
        return validation.networks(self.cleaned_data["allowed_ips"].replace(",", "\n").splitlines())

    def clean_routing(self) -> dict[str, object]:
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
        return cls(data, initial=initial, prefix="limits")


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
