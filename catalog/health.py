"""Route health as the relays see it: each route's circuit breaker, read from Redis (the
relay writes it; keys and states in :mod:`core.state`, behaviour in ``relay.breaker``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext, ngettext

from core import state
from lib.redis import client

from .models import Route

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class RouteHealth:
    state: str  # CLOSED, OPEN or HALF_OPEN (open, its cool-down over: the next request probes)
    failures: int  # upstream errors in a row
    open_until: datetime | None

    @property
    def text(self) -> str:
        if self.state == OPEN and self.open_until is not None:
            until = timezone.localtime(self.open_until).strftime("%H:%M:%S")
            label = gettext("open until %(time)s") % {"time": until}
        elif self.state == HALF_OPEN:
            label = gettext("half-open")
        else:
            label = gettext("closed")
        if not self.failures:
            return label
        return ngettext(
            "%(label)s, %(count)d failure in a row",
            "%(label)s, %(count)d failures in a row",
            self.failures,
        ) % {"label": label, "count": self.failures}


def parse(raw: str | None, now: float) -> RouteHealth:
    """A breaker's stored JSON (absent: closed, nothing failed)."""
    if not raw:
        return RouteHealth(CLOSED, 0, None)
    data = json.loads(raw)
    failures = int(data.get("f", 0))
    until_ms = int(data.get("u", 0))
    if not until_ms:
        return RouteHealth(CLOSED, failures, None)
    until = datetime.fromtimestamp(until_ms / 1000, tz=UTC)
    return RouteHealth(OPEN if now < until_ms / 1000 else HALF_OPEN, failures, until)


def route_health(route: Route) -> RouteHealth:
    raw = client().hget(
        state.BREAKERS,
        state.route_id(route.model_id, route.provider.slug, route.upstream_model),
    )
    return parse(raw if isinstance(raw, str) else None, time.time())


def open_routes(model_id: str) -> set[str]:
    """Slugs of the model's providers whose route is open (or half-open) now."""
    prefix = f"{model_id}|"
    names = client().hkeys(state.BREAKERS_OPEN)
    return {str(n)[len(prefix) :].split("|", 1)[0] for n in names if str(n).startswith(prefix)}


def prune(snapshot: dict[str, Any]) -> int:
    """Forgets the breakers of routes the published catalog no longer serves (a deleted or
    unlisted route, a renamed upstream model), so that none lingers in the relays' view or
    comes back open if the route does; returns how many. Both hashes share one hash slot."""
    live = {
        state.route_id(model_id, route["provider"], route["upstream_model"])
        for model_id, model in snapshot.get("models", {}).items()
        for route in model.get("routes", [])
    }
    r = client()
    gone = [name for name in r.hkeys(state.BREAKERS) if str(name) not in live]
    gone += [name for name in r.hkeys(state.BREAKERS_OPEN) if str(name) not in live]
    if not gone:
        return 0
    pipe = r.pipeline(transaction=True)
    pipe.hdel(state.BREAKERS, *gone)
    pipe.hdel(state.BREAKERS_OPEN, *gone)
    pipe.execute()
    return len(set(gone))
