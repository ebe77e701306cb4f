from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from . import ledger
from .models import DailyUsage, LedgerEntry, UsageEvent
from .selectors import account_of

CHART_DAYS = 30


def _page(request: HttpRequest, queryset, per_page: int = 50):  # type: ignore[no-untyped-def]
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    today = timezone.now().date()
    start = today - timedelta(days=CHART_DAYS - 1)
    daily: dict[str, Decimal] = {
        (start + timedelta(days=i)).isoformat(): Decimal(0) for i in range(CHART_DAYS)
    }
    for row in DailyUsage.objects.filter(account=account, day__gte=start).values("day", "cost"):
        daily[row["day"].isoformat()] += row["cost"]
    chart = {
        "type": "bar",
        "yLabel": "USD",
        "labels": list(daily),
        "datasets": [{"label": "Spend (USD)", "data": [str(v) for v in daily.values()]}],
    }
    events = (
        UsageEvent.objects.filter(account=account).select_related("key").order_by("-started_at")
    )
    return render(
        request,
        "billing/usage.html",
        {
            "nav": "usage",
            "chart": chart,
            "page": _page(request, events),
            "total_30d": sum(daily.values(), Decimal(0)),
        },
    )


@login_required
def billing(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    entries = LedgerEntry.objects.filter(account=account).order_by("-seq")
    return render(
        request,
        "billing/billing.html",
        {"nav": "billing", "summary": ledger.summary(account), "page": _page(request, entries)},
    )
