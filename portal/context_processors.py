from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from accounts.acting import acting
from accounts.organizations import memberships_of


def _switcher(request: HttpRequest) -> dict[str, Any]:
    """The accounts the signed-in user can act for: personal first, then each organization."""
    current = acting(request)
    memberships = memberships_of(request.user)
    choices: list[tuple[str, str | None, bool]] = [("personal", None, current.personal)]
    for m in memberships:
        account = m.organization.account
        choices.append((str(account.pk), m.organization.name, account.pk == current.account.pk))
    return {"choices": choices, "current": current}


def site(request: HttpRequest) -> dict[str, Any]:
    context: dict[str, Any] = {
        "relay_base_url": settings.TP_RELAY_BASE_URL,
        "demo_mode": bool(settings.TP_DEMO_UPSTREAM_URL),
    }
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and hasattr(request, "session"):
        # Read only by pages that draw the header: one query for the list, when drawn.
        context["switcher"] = SimpleLazyObject(lambda: _switcher(request))
    return context
