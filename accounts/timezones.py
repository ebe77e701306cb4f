"""The time zone in which a person's pages count days and hours (issue 14): the one they chose
(``User.time_zone``), else the one their browser reports (``static/js/app.js`` keeps it in the
``tp_tz`` cookie), else UTC."""

from __future__ import annotations

from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

BROWSER_COOKIE = "tp_tz"
UTC = ZoneInfo("UTC")


@cache
def known() -> frozenset[str]:
    return frozenset(available_timezones())


def names() -> list[str]:
    """Every IANA zone this system knows, sorted (the choices of the settings page)."""
    return sorted(known())


def zone(name: str | None) -> ZoneInfo | None:
    """The zone called ``name``, or None if no such zone is known (so never a file path)."""
    if name and name in known():
        return ZoneInfo(name)
    return None


def zone_of(user: Any, browser_hint: str | None = None) -> ZoneInfo:
    chosen = zone(getattr(user, "time_zone", "") or None)
    return chosen or zone(browser_hint) or UTC
