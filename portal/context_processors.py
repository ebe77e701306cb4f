from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict[str, Any]:
    return {
        "relay_base_url": settings.TP_RELAY_BASE_URL,
        "demo_mode": bool(settings.TP_DEMO_UPSTREAM_URL),
    }
