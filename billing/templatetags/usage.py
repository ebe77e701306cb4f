"""Usage on the keys' pages: the keys app lists and edits keys, but what a key spent is
billing's to tell (the keys app cannot import it), so its templates ask through these tags."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django import template
from django.utils import timezone
from django.utils.translation import gettext as _

from keys.models import ApiKey

from ..caps import period_spend
from ..models import DailyUsage, UsageEvent

register = template.Library()


@register.simple_tag
def key_period_spend(key: ApiKey) -> Decimal | None:
    """What the key spent in its cap period (None when it has no cap)."""
    return period_spend(key)


@register.inclusion_tag("billing/partials/key_usage.html")
def key_usage(key: ApiKey) -> dict[str, Any]:
    """The key's daily spend over the last 30 days, and its most recent requests."""
    today = timezone.now().date()
    start = today - timedelta(days=29)
    daily = {(start + timedelta(days=i)).isoformat(): Decimal(0) for i in range(30)}
    for row in DailyUsage.objects.filter(key=key, day__gte=start).values("day", "cost"):
        daily[row["day"].isoformat()] += row["cost"]
    return {
        "chart": {
            "type": "bar",
            "yLabel": "USD",
            "labels": list(daily),
            "datasets": [{"label": _("Spend (USD)"), "data": [str(v) for v in daily.values()]}],
        },
        "events": UsageEvent.objects.filter(key=key).order_by("-started_at")[:50],
    }
