from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from . import timezones
from .models import User


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
