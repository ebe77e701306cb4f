from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from .models import BillingProfile
from .topups import TopupError, enabled_providers, validate_amount

CENT = Decimal("0.01")


def _money_field(**kwargs: Any) -> forms.DecimalField:
    return forms.DecimalField(
        max_digits=11, decimal_places=2, min_value=Decimal(0), localize=False, **kwargs
    )


class TopupForm(forms.Form):
    """Step one: how much and how. The server validates everything again at step two."""

    preset = forms.TypedChoiceField(
        label=_("Amount"),
        coerce=Decimal,
        required=False,
        widget=forms.RadioSelect,
        empty_value=None,
    )
    custom = _money_field(
        label=_("Other amount (USD)"),
        required=False,
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal"}),
    )
    provider = forms.ChoiceField(label=_("Pay by"), widget=forms.RadioSelect)
    save_card = forms.BooleanField(label=_("Save the card for automatic top-ups"), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._choices(
            "preset", [(str(p), f"${p.quantize(CENT)}") for p in settings.TP_TOPUP_PRESETS]
        )
        self.fields["custom"].help_text = _("Minimum $%(min)s.") % {
            "min": settings.TP_TOPUP_MINIMUM.quantize(CENT)
        }
        self._choices("provider", [(p.identifier, p.verbose_name) for p in enabled_providers()])

    def _choices(self, name: str, choices: list[tuple[str, Any]]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ChoiceField)  # noqa: S101 - narrows a declared field for mypy
        field.choices = choices

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        amount = data.get("custom") or data.get("preset")
        if amount is None:
            raise forms.ValidationError(_("Choose an amount or enter one."))
        try:
            data["amount"] = validate_amount(Decimal(amount))
        except TopupError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class ConfirmTopupForm(forms.Form):
    """Step two: the quote the customer saw, submitted again and checked again."""

    amount = _money_field()
    provider = forms.ChoiceField()
    save_card = forms.BooleanField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["provider"]
        assert isinstance(field, forms.ChoiceField)  # noqa: S101 - narrows a declared field for mypy
        field.choices = [(p.identifier, p.identifier) for p in enabled_providers()]

    def clean_amount(self) -> Decimal:
        try:
            return validate_amount(self.cleaned_data["amount"])
        except TopupError as exc:
            raise forms.ValidationError(str(exc)) from None


class VoucherForm(forms.Form):
    code = forms.CharField(
        label=_("Voucher code"),
        max_length=40,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )


class BillingDetailsForm(forms.ModelForm):
    class Meta:
        model = BillingProfile
        fields = [
            "name",
            "company",
            "address_line1",
            "address_line2",
            "postal_code",
            "city",
            "country",
            "vat_id",
        ]
        help_texts = {"vat_id": _("Optional. Printed on your receipts.")}


class AlertsForm(forms.ModelForm):
    low_balance_threshold = _money_field(
        label=_("Email me when my available balance falls below (USD)"),
        required=False,
        help_text=_("Leave empty for no email. Sent once each time the balance crosses it."),
    )
    auto_topup_threshold = _money_field(
        label=_("When the available balance falls below (USD)"), required=False
    )
    auto_topup_amount = _money_field(label=_("Add this much (USD)"), required=False)

    class Meta:
        model = BillingProfile
        fields = [
            "low_balance_threshold",
            "auto_topup_enabled",
            "auto_topup_threshold",
            "auto_topup_amount",
        ]
        labels = {"auto_topup_enabled": _("Top up automatically with my saved card")}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("auto_topup_enabled"):
            if not self.instance.has_saved_card:
                raise forms.ValidationError(
                    _("Save a card first: pay a top-up by card with “Save the card” ticked.")
                )
            if data.get("auto_topup_threshold") is None:
                self.add_error("auto_topup_threshold", _("Say below which balance to top up."))
            amount = data.get("auto_topup_amount")
            if amount is None:
                self.add_error("auto_topup_amount", _("Say how much to add."))
            else:
                try:
                    validate_amount(amount)
                except TopupError as exc:
                    self.add_error("auto_topup_amount", str(exc))
        return data

    def save(self, commit: bool = True) -> BillingProfile:
        profile = super().save(commit=False)
        if "low_balance_threshold" in self.changed_data:
            profile.low_balance_notified = False  # a new threshold, a new crossing
        if profile.auto_topup_enabled:
            # Switching it on again starts a fresh count of failures.
            profile.auto_topup_failures = 0
        if commit:
            profile.save()
        return profile
