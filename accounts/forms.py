from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils.translation import gettext_lazy as _

from . import timezones
from .audit import Filters
from .emails import NormalizedEmailField
from .models import AuditEvent, Role, SpendPeriod, User
from .roles import ASSIGNABLE


class TimeZoneForm(forms.ModelForm):  # type: ignore[type-arg]
    """The zone in which the portal counts their days; empty: the browser's, else UTC."""

    time_zone = forms.ChoiceField(
        label=_("Time zone"),
        required=False,
        help_text=_(
            "Days and hours on the activity page, its export and the usage API start at "
            "midnight in this zone."
        ),
    )

    class Meta:
        model = User
        fields = ["time_zone"]

    def __init__(self, *args: Any, browser_zone: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        automatic = (
            _("Automatic: my browser's zone (%(zone)s)") % {"zone": browser_zone}
            if timezones.zone(browser_zone)
            else _("Automatic: my browser's zone, else UTC")
        )
        field: Any = self.fields["time_zone"]
        field.choices = [("", automatic), *((name, name) for name in timezones.names())]


# Bounded so that a day's midnight in any zone is a time the database can hold.
_DAYS = [MinValueValidator(date(2000, 1, 1)), MaxValueValidator(date(2999, 12, 31))]


class AuditFilterForm(forms.Form):
    """The audit log's filters (GET): an action, and whole days in the reader's time zone."""

    action = forms.ChoiceField(
        label=_("Action"),
        required=False,
        choices=[("", _("All actions")), *AuditEvent.Action.choices],
    )
    since = forms.DateField(
        label=_("From"),
        required=False,
        validators=_DAYS,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    until = forms.DateField(
        label=_("To"),
        required=False,
        validators=_DAYS,
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", _("The end of the range is before its start."))
        return data

    def filters(self, zone: tzinfo) -> Filters:
        """The cleaned filters, the days made into the zone's midnights (the end exclusive)."""
        if not self.is_bound:
            return Filters()
        data = self.cleaned_data
        since, until = data.get("since"), data.get("until")
        return Filters(
            action=data.get("action") or "",
            since=datetime.combine(since, time.min, tzinfo=zone) if since else None,
            until=(
                datetime.combine(until + timedelta(days=1), time.min, tzinfo=zone)
                if until
                else None
            ),
        )


# ---- organizations (issue 15) ----------------------------------------------------------------


def _clean_name(value: str) -> str:
    name = value.replace("\x00", "").strip()
    if not name:
        raise forms.ValidationError(_("Enter a name."))
    return name


class OrganizationForm(forms.Form):
    name = forms.CharField(label=_("Organization name"), max_length=100)

    def clean_name(self) -> str:
        return _clean_name(self.cleaned_data["name"])


class InviteForm(forms.Form):
    email = NormalizedEmailField(label=_("Email address"), max_length=254)
    role = forms.ChoiceField(
        label=_("Role"),
        choices=[(r, Role(r).label) for r in ASSIGNABLE],
        initial=Role.MEMBER,
    )


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=[(r, Role(r).label) for r in ASSIGNABLE])


class MemberCapForm(forms.Form):
    spend_cap = forms.DecimalField(
        label=_("Spend cap (USD)"),
        required=False,
        min_value=Decimal(0),
        max_digits=20,
        decimal_places=9,
        help_text=_("Over all of this member's keys. Leave empty for no cap."),
    )
    spend_cap_period = forms.ChoiceField(
        label=_("Cap period"), choices=SpendPeriod.choices, initial=SpendPeriod.MONTH
    )


class TransferForm(forms.Form):
    member = forms.TypedChoiceField(label=_("New owner"), coerce=int)

    def __init__(self, *args: Any, members: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field: Any = self.fields["member"]
        field.choices = members
