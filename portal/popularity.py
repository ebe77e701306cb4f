"""How much each model is used here: requests over the last 30 days from billing's daily
rollups, for the catalog list's "most used here" order. It lives in the portal because the
catalog sits below billing; the list view receives it from the URL configuration."""

from __future__ import annotations

from datetime import timedelta

from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from billing.models import DailyUsage

DAYS = 30
CACHE_KEY = "catalog:requests-by-model"
CACHE_SECONDS = 300  # an order, not a bill: five minutes old is fresh enough


def requests_by_model() -> dict[str, int]:
    """Model id → requests in the last DAYS days, every account's (a few rows per model per
    day and account, read at most once per CACHE_SECONDS)."""
    counts: dict[str, int] | None = cache.get(CACHE_KEY)
    if counts is None:
        since = timezone.now().date() - timedelta(days=DAYS)
        rows = (
            DailyUsage.objects.filter(day__gte=since)
            .values("model_id")
            .annotate(total=Sum("requests"))
            .values_list("model_id", "total")
        )
        counts = {model_id: int(total) for model_id, total in rows}
        cache.set(CACHE_KEY, counts, CACHE_SECONDS)
    return counts
