"""The request log's pages: the log (filters, keyset pages, a request found by its id), one
request's page, and the log as CSV. Every query is the signed-in user's account's
(``billing.requestlog``); another account's request is a 404."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from accounts import roles
from accounts.acting import acting, needs
from accounts.models import Account
from keys.selectors import usage_keys
from lib import downloads, htmx

from . import requestlog
from .forms import RequestLogForm
from .models import DailyUsage

# The reader's time zone: accounts.User.time_zone where the project has it, else UTC.
_FILTER_FIELDS = ("key", "model", "status", "streamed", "since", "until", "min_cost")


PER_TOKENS = gettext_lazy("per 1M tokens")
LINE_LABELS = {
    "input": (gettext_lazy("Input"), PER_TOKENS),
    "cached_input": (gettext_lazy("Cached input"), PER_TOKENS),
    "cache_write": (gettext_lazy("Cache writes (5 minutes)"), PER_TOKENS),
    "cache_write_1h": (gettext_lazy("Cache writes (1 hour)"), PER_TOKENS),
    "input_audio": (gettext_lazy("Input audio"), PER_TOKENS),
    "output": (gettext_lazy("Output"), PER_TOKENS),
    "reasoning": (gettext_lazy("Reasoning"), PER_TOKENS),
    "output_audio": (gettext_lazy("Output audio"), PER_TOKENS),
    "request": (gettext_lazy("Per request"), gettext_lazy("per request")),
    "image": (gettext_lazy("Images"), gettext_lazy("per image")),
    "audio_second": (gettext_lazy("Audio (milliseconds)"), gettext_lazy("per second")),
}


def reader_zone(user: Any) -> tzinfo:
    name = getattr(user, "time_zone", "") or ""
    try:
        return ZoneInfo(name) if name else UTC
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError; "../x" a ValueError
        return UTC


def _scoped(request: HttpRequest) -> tuple[Account, tuple[int, ...] | None]:
    """The acting account, and the keys whose usage the reader's role shows (None: all)."""
    current = acting(request)
    return current.account, usage_keys(current, request.user)


def _key_choices(account: Account, keys: tuple[int, ...] | None) -> list[tuple[int, str]]:
    return [
        (key.pk, key.name if key.is_active else _("%(name)s (revoked)") % {"name": key.name})
        for key in (
            account.api_keys.all() if keys is None else account.api_keys.filter(pk__in=keys)
        ).order_by("name", "pk")
    ]


def _models_used(account: Account) -> list[str]:
    """For the model filter's suggestions: from the daily rollups, a few rows, never raw."""
    return list(
        DailyUsage.objects.filter(account=account)
        .order_by("model_id")
        .values_list("model_id", flat=True)
        .distinct()
    )


def _filter_query(data: QueryDict) -> str:
    """The filters alone as a query string, for the cursor links and the CSV link."""
    params = data.copy()
    for name in list(params):
        if name not in _FILTER_FIELDS or not params.get(name):
            del params[name]
    return params.urlencode()


@require_GET
@login_required
@needs(roles.USAGE_OWN)
def usage_requests(request: HttpRequest) -> HttpResponse:
    account, keys = _scoped(request)
    zone = reader_zone(request.user)
    find = request.GET.get("find", "").strip()
    find_error = ""
    if find:
        event = requestlog.find(account, find, keys)
        if event is not None:
            return redirect("usage_request", request_id=event.request_id)
        find_error = _("No request with this id in your account.")
    form = RequestLogForm(request.GET or None, keys=_key_choices(account, keys))
    page: requestlog.Page | None = None
    cursor_error = ""
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        filters = replace(form.filters(zone) if form.is_bound else requestlog.Filters(), keys=keys)
        try:
            page = requestlog.page(account, filters, request.GET.get("cursor") or None)
        except requestlog.BadCursor:
            cursor_error = _("This page link is not valid here. Start again from the newest.")
            status = 400
    query = _filter_query(request.GET)
    context = {
        "nav": "usage",
        "form": form,
        "page": page,
        "query": query,
        "zone": zone,
        "models_used": _models_used(account),
        "find": find,
        "find_error": find_error,
        "cursor_error": cursor_error,
    }
    return htmx.page_or_part(
        request,
        page="billing/requests.html",
        part="billing/partials/request_log.html",
        target="log-results",
        context=context,
        status=status,
    )


@require_GET
@login_required
@needs(roles.USAGE_OWN)
def usage_request(request: HttpRequest, request_id: str) -> HttpResponse:
    account, keys = _scoped(request)
    event = requestlog.find(account, request_id, keys)
    if event is None:
        raise Http404
    cost_lines = requestlog.cost_lines(event)
    shown = [
        {
            "kind": line.kind,
            "label": LINE_LABELS[line.kind][0],
            "unit": LINE_LABELS[line.kind][1],
            "quantity": line.quantity,
            "rate": line.rate,
            "amount": line.amount,
        }
        for line in cost_lines or ()
    ]
    return render(
        request,
        "billing/request.html",
        {
            "nav": "usage",
            "event": event,
            "zone": reader_zone(request.user),
            "lines": shown if cost_lines is not None else None,
            "lines_total": requestlog.lines_total(cost_lines) if cost_lines is not None else None,
            "log_url": reverse("usage_requests"),
        },
    )


@require_GET
@login_required
@needs(roles.USAGE_OWN)
def usage_requests_csv(request: HttpRequest) -> HttpResponseBase:
    account, keys = _scoped(request)
    form = RequestLogForm(request.GET, keys=_key_choices(account, keys))
    if not form.is_valid():
        return downloads.form_errors(form)
    return csv_response(account, replace(form.filters(reader_zone(request.user)), keys=keys))


def csv_response(account: Account, filters: requestlog.Filters) -> StreamingHttpResponse:
    """The log as a CSV download, streamed as it is read."""
    return downloads.csv_download(requestlog.csv_lines(account, filters), "requests")
