from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils.translation import gettext_lazy as _

from keys.models import ApiKey

from . import activity
from .models import BillingProfile, UsageEvent
from .requestlog import Filters
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


STREAMED_CHOICES = [("", _("Any")), ("yes", _("Streamed")), ("no", _("Not streamed"))]


class RequestLogForm(forms.Form):
    """The request log's filters (GET). Dates are whole days in the reader's time zone."""

    key = forms.TypedChoiceField(label=_("Key"), required=False, coerce=int, empty_value=None)
    model = forms.CharField(
        label=_("Model"),
        required=False,
        max_length=150,
        widget=forms.TextInput(
            attrs={"list": "models-used", "autocomplete": "off", "spellcheck": "false"}
        ),
    )
    status = forms.ChoiceField(label=_("Status"), required=False)
    streamed = forms.ChoiceField(label=_("Streamed"), required=False, choices=STREAMED_CHOICES)
    # Bounded so that a day's midnight in any zone is a time the database can hold.
    since = forms.DateField(
        label=_("From"),
        required=False,
        validators=[MinValueValidator(date(2000, 1, 1)), MaxValueValidator(date(2999, 12, 31))],
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    until = forms.DateField(
        label=_("To"),
        required=False,
        validators=[MinValueValidator(date(2000, 1, 1)), MaxValueValidator(date(2999, 12, 31))],
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    min_cost = forms.DecimalField(
        label=_("Minimum cost (USD)"),
        required=False,
        min_value=Decimal(0),
        max_digits=20,
        decimal_places=9,
        localize=False,
        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
    )

    def __init__(self, *args: Any, keys: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = self.fields["key"]
        status = self.fields["status"]
        assert isinstance(key, forms.ChoiceField) and isinstance(status, forms.ChoiceField)  # noqa: S101 - narrows for mypy
        key.choices = [("", _("All keys")), *keys]
        status.choices = [("", _("Any")), *UsageEvent.Status.choices]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", _("The end of the range is before its start."))
        return data

    def filters(self, zone: tzinfo) -> Filters:
        """The cleaned filters, the days made into the zone's midnights (the end exclusive)."""
        data = self.cleaned_data
        since, until = data.get("since"), data.get("until")
        streamed = {"yes": True, "no": False}.get(data.get("streamed") or "")
        return Filters(
            key=data.get("key"),
            model=(data.get("model") or "").strip(),
            status=data.get("status") or "",
            streamed=streamed,
            since=datetime.combine(since, time.min, tzinfo=zone) if since else None,
            until=(
                datetime.combine(until + timedelta(days=1), time.min, tzinfo=zone)
                if until
                else None
            ),
            min_cost=data.get("min_cost"),
        )


class ActivityForm(forms.Form):
    """The activity page's (and its export's) range and filters, from the query string. Bad
    values are form errors, never a server error; ``from`` and ``to`` are dates in the reader's
    zone, both included."""

    DAYS = {"7d": 7, "30d": 30, "90d": 90}

    range = forms.ChoiceField(
        label=_("Range"),
        required=False,
        choices=[
            ("24h", _("Last 24 hours")),
            ("7d", _("Last 7 days")),
            ("30d", _("Last 30 days")),
            ("90d", _("Last 90 days")),
            ("custom", _("Custom dates")),
        ],
    )
    group_by = forms.ChoiceField(
        label=_("Group by"),
        required=False,
        choices=[
            ("model", _("Model")),
            ("key", _("Key")),
            ("provider", _("Provider")),
            ("none", _("Nothing")),
        ],
    )
    key = forms.TypedChoiceField(label=_("Key"), required=False, coerce=int, empty_value=None)
    model = forms.CharField(label=_("Model"), required=False, max_length=150)
    granularity = forms.ChoiceField(
        label=_("Rows by"),
        required=False,
        choices=[("day", _("Day")), ("hour", _("Hour"))],
    )

    def __init__(
        self,
        *args: Any,
        account: Any,
        zone: Any,
        now: Any,
        keys: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        """``keys``: only these keys are offered (a member's own), None all the account's."""
        super().__init__(*args, **kwargs)
        self.zone = zone
        self.now = now
        date_input = {"type": "date"}
        # "from" is a Python keyword: the two date fields are added here under their URL names.
        self.fields["from"] = forms.DateField(
            label=_("From"), required=False, widget=forms.DateInput(date_input, format="%Y-%m-%d")
        )
        self.fields["to"] = forms.DateField(
            label=_("To"), required=False, widget=forms.DateInput(date_input, format="%Y-%m-%d")
        )
        shown = account.api_keys.all() if keys is None else account.api_keys.filter(pk__in=keys)
        choices = shown.order_by("name", "pk").values_list("pk", "name", "status")
        statuses = dict(ApiKey.Status.choices)
        key_field: Any = self.fields["key"]
        key_field.choices = [("", _("All keys"))] + [
            (pk, name if status == ApiKey.Status.ACTIVE else f"{name} ({statuses[status]})")
            for pk, name, status in choices
        ]
        self.order_fields(["range", "from", "to", "group_by", "key", "model", "granularity"])

    def clean_model(self) -> str | None:
        value: str = self.cleaned_data.get("model") or ""
        return value.strip() or None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        first, last = data.get("from"), data.get("to")
        chosen = data.get("range") or ("custom" if first or last else "30d")
        data["range"] = chosen
        data["group_by"] = data.get("group_by") or "model"
        data["granularity"] = data.get("granularity") or "day"
        today = self.now.astimezone(self.zone).date()
        if chosen == "custom":
            if not first or not last:
                raise forms.ValidationError(_("Give both dates of a custom range."))
            if first > last:
                raise forms.ValidationError(_("The first date is after the last."))
            if (last - first).days + 1 > activity.MAX_DAYS:
                raise forms.ValidationError(
                    _("A range is at most %(days)d days long."), params={"days": activity.MAX_DAYS}
                )
            if first.year < 2000 or last > today + timedelta(days=1):
                raise forms.ValidationError(_("Choose dates between 2000 and today."))
        return data

    def period(self) -> activity.Period:
        data = self.cleaned_data
        chosen = data["range"]
        today = self.now.astimezone(self.zone).date()
        if chosen == "24h":
            return activity.last_hours(self.now, self.zone)
        if chosen == "custom":
            first, last = data["from"], data["to"]
        else:
            last = today
            first = today - timedelta(days=self.DAYS[chosen] - 1)
        return activity.days(first, last, self.zone, data["granularity"])

    def scope(self, account: Any, keys: tuple[int, ...] | None = None) -> activity.Scope:
        return activity.Scope(
            account, self.cleaned_data["key"], self.cleaned_data["model"], keys=keys
        )
