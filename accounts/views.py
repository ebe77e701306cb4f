"""The audit log's page and its CSV (issue 15). Whose log is read is decided by
``audit.can_read``; today it is the signed-in user's own account's."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    QueryDict,
    StreamingHttpResponse,
)
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from lib import downloads, htmx

from . import audit, timezones
from .acting import acting
from .forms import AuditFilterForm
from .models import Account, AuditEvent

_FILTER_FIELDS = ("action", "since", "until")


def _readable_account(request: HttpRequest) -> Account:
    """The account whose log this request reads: the one the reader acts for."""
    account = acting(request).account
    if not audit.can_read(request.user, account):
        raise PermissionDenied
    return account


def _filter_query(data: QueryDict) -> str:
    """The filters alone as a query string, for the page links and the CSV link."""
    params = data.copy()
    for name in list(params):
        if name not in _FILTER_FIELDS or not params.get(name):
            del params[name]
    return params.urlencode()


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return "—" if value in (None, "") else str(value)


def describe(details: dict[str, Any]) -> list[str]:
    """The event's details as short lines: a change as "field: old → new"."""
    lines = []
    for name, value in details.items():
        if isinstance(value, dict) and set(value) == {"old", "new"}:
            lines.append(f"{name}: {_value(value['old'])} → {_value(value['new'])}")
        elif isinstance(value, dict):
            lines.append(f"{name}: " + ", ".join(f"{k}={_value(v)}" for k, v in value.items()))
        else:
            lines.append(f"{name}: {_value(value)}")
    return lines


def actor_text(event: AuditEvent) -> str:
    if event.actor_label == AuditEvent.OPERATOR:
        return _("Operator")
    if event.actor_label == AuditEvent.SYSTEM:
        return _("System")
    return event.actor_label


@require_GET
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """The log, newest first; the filters' form by htmx answers with the results alone."""
    account = _readable_account(request)
    zone = timezones.zone_of(request.user, request.COOKIES.get(timezones.BROWSER_COOKIE))
    form = AuditFilterForm(request.GET or None)
    page: audit.Page | None = None
    cursor_error = ""
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        try:
            page = audit.page(account, form.filters(zone), request.GET.get("cursor") or None)
        except audit.BadCursor:
            cursor_error = _("This page link is not valid here. Start again from the newest.")
            status = 400
    rows = [
        {
            "event": event,
            "actor": actor_text(event),
            "details": describe(event.details),
        }
        for event in (page.rows if page else ())
    ]
    context = {
        "nav": "account",
        "form": form,
        "page": page,
        "rows": rows,
        "query": _filter_query(request.GET),
        "zone": zone,
        "cursor_error": cursor_error,
        "paged": bool(request.GET.get("cursor")),
    }
    return htmx.page_or_part(
        request,
        page="accounts/audit.html",
        part="accounts/partials/audit_log.html",
        target="audit-results",
        context=context,
        status=status,
    )


@require_GET
@login_required
def audit_csv(request: HttpRequest) -> HttpResponseBase:
    account = _readable_account(request)
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return downloads.form_errors(form)
    zone = timezones.zone_of(request.user, request.COOKIES.get(timezones.BROWSER_COOKIE))
    return csv_response(account, form.filters(zone))


def csv_response(account: Account, filters: audit.Filters) -> StreamingHttpResponse:
    """The log as a CSV download, streamed as it is read."""
    return downloads.csv_download(audit.csv_lines(account, filters), "audit")
