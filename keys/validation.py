"""Rules for key limits shared by the key forms and the JSON API."""

from __future__ import annotations

import ipaddress
from datetime import datetime

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

from catalog.models import Model, Provider
from core import routing as core_routing

MAX_NETWORKS = 100


def networks(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        value = str(value).strip()
        if not value:
            continue
        try:
            cleaned.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ValidationError(
                _("“%(value)s” is not an IP address or CIDR range."), params={"value": value[:60]}
            ) from None
    if len(cleaned) > MAX_NETWORKS:
        raise ValidationError(_("At most %(n)d entries."), params={"n": MAX_NETWORKS})
    return cleaned


def models(values: list[str]) -> list[str]:
    known = set(Model.objects.filter(active=True).values_list("id", flat=True))
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValidationError(
            _("Unknown model: %(model)s."), params={"model": str(unknown[0])[:100]}
        )
    return list(dict.fromkeys(values))


def routing(value: object) -> dict[str, object]:
    """A key's routing defaults: the relay's own rules for a request's ``provider`` object
    (core.routing), and providers the catalog has. Empty (or null): none."""
    if value in (None, "", {}):
        return {}
    try:
        parsed = core_routing.parse(value, where="routing")
    except core_routing.PreferenceError as exc:
        raise ValidationError(exc.message) from None
    named = {slug for name in core_routing.SLUG_LISTS for slug in parsed.get(name, ())}
    unknown = sorted(
        named - set(Provider.objects.filter(slug__in=named).values_list("slug", flat=True))
    )
    if unknown:
        raise ValidationError(
            _("Unknown provider: %(provider)s."), params={"provider": unknown[0][:100]}
        )
    return parsed


def expiry(value: datetime | None) -> datetime | None:
    if value is not None and value <= timezone.now():
        raise ValidationError(_("The expiry must be in the future."))
    return value
