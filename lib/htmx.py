"""Pages that htmx swaps a part of: one answer for the whole page and for the part."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers


def wants_part(request: HttpRequest, target: str) -> bool:
    """An htmx request for the element ``target`` only (a history restore wants the whole
    page: the browser lost it)."""
    headers = request.headers
    return (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Target") == target
        and "HX-History-Restore-Request" not in headers
    )


def page_or_part(
    request: HttpRequest,
    *,
    page: str,
    part: str,
    target: str,
    context: dict[str, Any],
    status: int = 200,
) -> HttpResponse:
    """``part`` (the template of the element ``target``) for htmx's swap of it, else
    ``page``; varying by the headers that choose, so a cache never serves one for the other."""
    template = part if wants_part(request, target) else page
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response
