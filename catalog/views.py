from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import Model
from .sync import provider_endpoint


def model_list(request: HttpRequest) -> HttpResponse:
    models = list(
        Model.objects.filter(active=True).select_related("provider").prefetch_related("prices")
    )
    rows = []
    for model in models:
        prices = sorted(model.prices.all(), key=lambda p: p.version, reverse=True)
        rows.append(
            {
                "model": model,
                "price": prices[0] if prices else None,
                "demo": provider_endpoint(model.provider)[2],
            }
        )
    return render(request, "catalog/models.html", {"nav": "models", "rows": rows})
