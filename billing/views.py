from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from decimal import Decimal
from html import escape
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import audit, roles
from accounts.acting import acting, needs
from accounts.models import Account
from accounts.timezones import BROWSER_COOKIE, zone_of
from keys.selectors import usage_keys
from lib.money import text_formatter, usd

from . import activity, alerts, ledger, receipts, topups, vouchers
from .accounts import SIGNUP_REFERENCE, profile_of
from .forms import (
    ActivityForm,
    AlertsForm,
    BillingDetailsForm,
    ConfirmTopupForm,
    TopupForm,
    VoucherForm,
)
from .models import LedgerEntry, Payment, Voucher
from .providers.base import ProviderError

log = logging.getLogger(__name__)


def _page(request: HttpRequest, queryset, per_page: int = 50):  # type: ignore[no-untyped-def]
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def _payment(request: HttpRequest, uuid: Any) -> Payment:
    """The signed-in user's own payment, or 404."""
    return get_object_or_404(Payment, uuid=uuid, account=acting(request).account)


CHART_SERIES = 9  # groups drawn one by one in the chart; the rest stack as "Other"


def _activity_form(
    request: HttpRequest, account: Account, keys: tuple[int, ...] | None
) -> ActivityForm:
    """The range and filters of the query string (30 days by model when none), in the reader's
    time zone."""
    zone = zone_of(request.user, request.COOKIES.get(BROWSER_COOKIE))
    return ActivityForm(request.GET, account=account, zone=zone, now=timezone.now(), keys=keys)


def _query(request: HttpRequest, **changes: Any) -> str:
    """The current query string with ``changes`` (None drops a parameter)."""
    query = request.GET.copy()
    for name, value in changes.items():
        query.pop(name, None)
        if value is not None:
            query[name] = str(value)
    return query.urlencode()


def _chart(report: activity.Report) -> dict[str, Any]:
    """Spend by bucket, stacked by group (the table alternative holds the same figures)."""
    datasets = [
        {
            "label": group["label"] or _("Spend (USD)"),
            "data": [str(b["by_group"][i]) for b in report.buckets],
        }
        for i, group in enumerate(report.groups[:CHART_SERIES])
    ]
    if len(report.groups) > CHART_SERIES:
        datasets.append(
            {
                "label": _("Other"),
                "data": [
                    str(sum(b["by_group"][CHART_SERIES:], Decimal(0))) for b in report.buckets
                ],
            }
        )
    return {
        "type": "bar",
        "stacked": True,
        "yLabel": "USD",
        "labels": list(report.period.labels),
        "datasets": datasets,
    }


def _figure_columns() -> list[tuple[str, str, str]]:
    """(figure, test id, label) of the activity page's figures, in their order."""
    return [
        ("cost", "spend", _("Spend")),
        ("requests", "requests", _("Requests")),
        ("errors", "errors", _("Errors")),
        ("prompt_tokens", "input-tokens", _("Input tokens")),
        ("completion_tokens", "output-tokens", _("Output tokens")),
        ("cached_tokens", "cached-tokens", _("Cached tokens")),
        ("reasoning_tokens", "reasoning-tokens", _("Reasoning tokens")),
    ]


@login_required
@needs(roles.USAGE_OWN)
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    """The activity page (issue 14): spend, tokens and requests over a range in the reader's
    zone, against the period before, stacked by model, key or provider, narrowed by key and
    model. Read from the rollups only (billing.activity). An organization's member sees their
    own keys' usage alone."""
    current = acting(request)
    account = current.account
    keys = usage_keys(current, request.user)
    form = _activity_form(request, account, keys)
    status = 200
    if form.is_valid():
        shown = form
    else:
        # The errors are shown above the default figures (30 days, all keys and models).
        status = 400
        shown = ActivityForm({}, account=account, zone=form.zone, now=form.now, keys=keys)
        shown.is_valid()
    data = shown.cleaned_data
    if data["range"] != "24h":
        data["granularity"] = "day"
    report = activity.report(
        shown.scope(account, keys), shown.period(), data["group_by"], unknown=_("Unknown")
    )
    key_name = activity.key_names(account).get(data["key"]) if data["key"] else None
    # Figures are formatted here, with the language's separators read once: a 90-day table has
    # some two thousand of them.
    text = text_formatter()
    stats = _figure_columns()
    if report.totals["byok"] or report.previous["byok"]:
        # Only where the account's own provider keys served requests (BYOK), beside the count
        # of all requests.
        stats.insert(2, ("byok", "byok-requests", _("Requests with your own provider keys")))
    figures = [
        {
            "testid": testid,
            "label": label,
            "money": name == "cost",
            "value": text(report.totals[name]),
            "plain": str(report.totals[name]),
            "previous": text(report.previous[name]),
            "change": report.changes[name],
        }
        for name, testid, label in stats
    ]
    columns = _figure_columns()
    grouped = report.group_by != "none"
    table = [
        {
            "label": bucket["label"],
            "plain": usd(bucket["figures"]["cost"]),
            # A row's figure cells at once: a 90-day table by model has some 1,700 of them,
            # too many for format_html (10 ms a page). Every value is escaped; the test ids
            # are this module's constants.
            "cells": mark_safe(  # noqa: S308
                "".join(
                    f'<td class="num" data-figure="{testid}">{escape(value)}</td>'
                    for testid, value in [
                        (testid, text(bucket["figures"][name])) for name, testid, _l in columns
                    ]
                    + ([("group-spend", text(c)) for c in bucket["by_group"]] if grouped else [])
                )
            ),
        }
        for bucket in report.buckets
    ]
    totals = [(testid, text(report.totals[name])) for name, testid, _l in columns]
    breakdowns = []
    for title, rows, testid, dim, param in (
        (_("By model"), report.by_model, "by-model", "model", "model"),
        (_("By key"), report.by_key, "by-key", "key", "key"),
    ):
        shown_rows = [
            {
                "label": row["label"],
                # Drill-down: a row narrows everything to its model or key.
                "url": "?" + _query(request, **{param: row["value"]})
                if row["value"] is not None
                else "",
                "spend": text(row["figures"]["cost"]),
                "plain": usd(row["figures"]["cost"]),
                "requests": text(row["figures"]["requests"]),
                "errors": text(row["figures"]["errors"]),
                "tokens_in": text(row["figures"]["prompt_tokens"]),
                "tokens_out": text(row["figures"]["completion_tokens"]),
            }
            for row in rows
        ]
        breakdowns.append((title, shown_rows, testid, dim))
    return render(
        request,
        "billing/usage.html",
        {
            "nav": "usage",
            "form": form,
            "data": data,
            "report": report,
            "figures": figures,
            "table": table,
            "totals": totals,
            "total_plain": usd(report.totals["cost"]),
            "chart": _chart(report),
            "breakdowns": breakdowns,
            "zone": shown.zone.key,
            "key_name": key_name,
            "query": _query(request),
            "clear_key": _query(request, key=None),
            "clear_model": _query(request, model=None),
        },
        status=status,
    )


@login_required
@needs(roles.USAGE_OWN)
@require_GET
def usage_export(request: HttpRequest) -> HttpResponseBase:
    """The rollups of the selected range and filters as CSV, by day (or ``granularity=hour``)
    × key × model × provider, money as exact decimal strings; streamed, the header first."""
    current = acting(request)
    account = current.account
    keys = usage_keys(current, request.user)
    form = _activity_form(request, account, keys)
    if not form.is_valid():
        return HttpResponse(
            "\n".join(str(m) for errors in form.errors.values() for m in errors),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    scope, period = form.scope(account, keys), form.period()
    bucket = "hour" if period.granularity == "hour" else "day"

    def lines() -> Iterator[str]:
        # The header alone first, so that the download starts before the rollups are read;
        # then the rows a thousand at a time.
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(
            [bucket, "key_id", "key_name", "model", "provider", *activity.FIGURES[:-1], "cost_usd"]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        for n, row in enumerate(activity.export_rows(scope, period), start=1):
            row[-1] = usd(row[-1])
            writer.writerow(row)
            if n % 1000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    first = period.labels[0][:10] if period.labels else ""
    last = period.labels[-1][:10] if period.labels else ""
    response["Content-Disposition"] = f'attachment; filename="usage-{first}-{last}-{bucket}.csv"'
    return response


def _ledger_rows(entries: list[LedgerEntry]) -> list[dict[str, Any]]:
    """Each entry with what it refers to, as words and (where there is one) a link."""
    uuids = [e.reference.split(":", 1)[1] for e in entries if e.reference.startswith("payment:")]
    by_uuid = {str(p.uuid): p for p in Payment.objects.filter(uuid__in=uuids)}
    voucher_ids = [
        e.reference.split(":", 1)[1] for e in entries if e.reference.startswith("voucher:")
    ]
    by_voucher = {str(v.pk): v for v in Voucher.objects.filter(pk__in=voucher_ids)}
    rows = []
    for entry in entries:
        kind, _sep, ident = entry.reference.partition(":")
        label, url = entry.note or entry.reference, ""
        if kind == "payment" and ident in by_uuid:
            payment = by_uuid[ident]
            label = entry.note or payment.receipt_number
            url = reverse("billing_payment", args=[payment.uuid])
        elif kind == "voucher" and ident in by_voucher:
            label = _("Voucher %(code)s") % {"code": "…" + by_voucher[ident].code[-4:]}
        elif kind == "usage":
            label = _("Usage: %(what)s") % {"what": ident}
            url = reverse("usage")
        elif entry.reference == SIGNUP_REFERENCE:
            label = _("Signup credit")
        elif entry.reference == "operator":
            label = entry.note or _("Operator adjustment")
        rows.append({"entry": entry, "label": label, "url": url})
    return rows


def _billing_context(request: HttpRequest, account: Account, **extra: Any) -> dict[str, Any]:
    entries = LedgerEntry.objects.filter(account=account).order_by("-seq")
    page = _page(request, entries)
    recent: QuerySet[Payment] = Payment.objects.filter(account=account).order_by("-created_at")
    return {
        "nav": "billing",
        "summary": ledger.summary(account),
        "page": page,
        "rows": _ledger_rows(list(page.object_list)),
        "payments": recent[:10],
        "flagged": recent.filter(status=Payment.Status.NEEDS_REVIEW),
        "profile": profile_of(account),
        "providers": [
            {"p": p, "rule": p.fee_rule(), "simulated": p.is_simulated}
            for p in topups.enabled_providers()
        ],
        "form": extra.pop("form", None) or TopupForm(),
        "voucher_form": extra.pop("voucher_form", None) or VoucherForm(),
        **extra,
    }


@login_required
@needs(roles.BILLING)
def billing(request: HttpRequest) -> HttpResponse:
    account = acting(request).account
    return render(request, "billing/billing.html", _billing_context(request, account))


@login_required
@needs(roles.BILLING)
@require_POST
def topup(request: HttpRequest) -> HttpResponse:
    """Step one posted: show exactly what will be charged before anything happens."""
    account = acting(request).account
    form = TopupForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "billing/billing.html",
            _billing_context(request, account, form=form),
            status=400,
        )
    quote = topups.quote(form.cleaned_data["provider"], form.cleaned_data["amount"])
    save_card = form.cleaned_data["save_card"] and quote["provider"].supports_off_session
    response = render(
        request,
        "billing/topup_confirm.html",
        {
            "nav": "billing",
            "quote": quote,
            "save_card": save_card,
            "rule": quote["provider"].fee_rule(),
            "form": ConfirmTopupForm(
                initial={
                    "amount": quote["amount"],
                    "provider": quote["provider"].identifier,
                    "save_card": save_card,
                }
            ),
        },
    )
    # The form below posts here and is redirected to the provider's page: browsers apply the
    # CSP's form-action to that redirect too.
    response._csp_update = {"form-action": quote["provider"].checkout_origins()}  # type: ignore[attr-defined]
    return response


@login_required
@needs(roles.BILLING)
@require_POST
def topup_start(request: HttpRequest) -> HttpResponse:
    """Step two: create the payment at the provider and send the customer there."""
    account = acting(request).account
    form = ConfirmTopupForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("That top-up could not start. Choose the amount again."))
        return redirect("billing")
    try:
        payment = topups.start_topup(
            account=account,
            provider_id=form.cleaned_data["provider"],
            amount=form.cleaned_data["amount"],
            save_card=form.cleaned_data["save_card"],
            return_url=lambda p: request.build_absolute_uri(
                reverse("billing_payment_return", args=[p.uuid])
            ),
            cancel_url=lambda p: request.build_absolute_uri(
                reverse("billing_payment_cancel", args=[p.uuid])
            ),
        )
    except topups.TopupError as exc:
        messages.error(request, str(exc))
        return redirect("billing")
    return redirect(payment.checkout_url)


@login_required
@needs(roles.BILLING)
@require_GET
def payment_return(request: HttpRequest, uuid: Any) -> HttpResponse:
    """Back from the provider. Whatever the query string says, we ask the provider. A GET,
    because providers redirect so; it only applies what the provider itself says about this
    payment of the signed-in user's, which a link elsewhere cannot change (cancelling is a
    POST, see ``payment_cancel``)."""
    payment = _payment(request, uuid)
    try:
        query = {name: str(value) for name, value in request.GET.items()}
        topups.returned(payment, query)
    except ProviderError as exc:
        log.warning("return from %s for %s: %s", payment.provider, payment.uuid, exc)
        messages.warning(
            request, _("We could not reach the payment provider yet; this page updates itself.")
        )
    return redirect("billing_payment", uuid=payment.uuid)


@login_required
@needs(roles.BILLING)
@require_http_methods(["GET", "POST"])
def payment_cancel(request: HttpRequest, uuid: Any) -> HttpResponse:
    """Where the provider sends a customer who gave up. Providers arrive by GET, and so could
    a link on any other site: the GET only shows where the payment stands and offers the
    cancellation as a form; the POST (CSRF-checked) cancels."""
    payment = _payment(request, uuid)
    if request.method == "POST":
        try:
            payment = topups.cancel(payment)
        except ProviderError as exc:
            log.warning("cancel at %s for %s: %s", payment.provider, payment.uuid, exc)
            messages.warning(
                request, _("We could not reach the payment provider; try again in a moment.")
            )
            return redirect("billing_payment_cancel", uuid=payment.uuid)
        if payment.status == Payment.Status.CANCELED:
            messages.info(request, _("The top-up was canceled. Nothing was charged."))
            return redirect("billing")
        messages.info(
            request,
            _(
                "This top-up is still open at the payment provider, so it was not canceled; "
                "anything paid to it is credited."
            ),
        )
        return redirect("billing_payment", uuid=payment.uuid)
    return render(
        request,
        "billing/payment_cancel.html",
        {
            "nav": "billing",
            "payment": payment,
            "can_cancel": payment.status == Payment.Status.CREATED,
        },
    )


@login_required
@needs(roles.BILLING)
def payment_detail(request: HttpRequest, uuid: Any) -> HttpResponse:
    payment = _payment(request, uuid)
    if request.method == "POST" and payment.is_open:
        try:
            topups.sync(payment)
        except ProviderError as exc:
            log.warning("checking %s at %s: %s", payment.uuid, payment.provider, exc)
        return redirect("billing_payment", uuid=payment.uuid)
    return render(
        request,
        "billing/payment.html",
        {
            "nav": "billing",
            "payment": payment,
            "adjustments": payment.adjustments.order_by("created_at"),
            "refresh": payment.is_open,
        },
    )


@login_required
@needs(roles.BILLING)
@require_GET
def receipt(request: HttpRequest, uuid: Any) -> HttpResponse:
    payment = _payment(request, uuid)
    if payment.status != Payment.Status.CONFIRMED:
        raise Http404("no receipt for an unpaid top-up")
    return render(request, "billing/receipt.html", receipts.context(payment))


@login_required
@needs(roles.BILLING)
@require_GET
def receipt_pdf(request: HttpRequest, uuid: Any) -> HttpResponse:
    payment = _payment(request, uuid)
    if payment.status != Payment.Status.CONFIRMED:
        raise Http404("no receipt for an unpaid top-up")
    response = HttpResponse(receipts.pdf(payment), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="receipt-{payment.receipt_number}.pdf"'
    return response


@login_required
@needs(roles.BILLING)
@require_POST
def redeem_voucher(request: HttpRequest) -> HttpResponse:
    account = acting(request).account
    form = VoucherForm(request.POST)
    if form.is_valid():
        try:
            voucher = vouchers.redeem(
                account=account, code=form.cleaned_data["code"], **audit.origin(request)
            )
        except vouchers.VoucherError as exc:
            form.add_error("code", str(exc))
        else:
            messages.success(
                request, _("Voucher redeemed: $%(amount)s added.") % {"amount": voucher.amount}
            )
            return redirect("billing")
    return render(
        request,
        "billing/billing.html",
        _billing_context(request, account, voucher_form=form),
        status=400,
    )


@login_required
@needs(roles.BILLING)
def billing_settings(request: HttpRequest) -> HttpResponse:
    account = acting(request).account
    profile = profile_of(account)
    details = BillingDetailsForm(instance=profile, prefix="details")
    alerts_form = AlertsForm(instance=profile, prefix="alerts")
    status = 200
    if request.method == "POST":
        which = request.POST.get("form")
        if which == "details":
            details = BillingDetailsForm(request.POST, instance=profile, prefix="details")
            if details.is_valid():
                details.save()
                messages.success(request, _("Billing details saved."))
                return redirect("billing_settings")
        elif which == "alerts":
            alerts_form = AlertsForm(request.POST, instance=profile, prefix="alerts")
            if alerts_form.is_valid():
                alerts_form.save()
                alerts.after_debit([account.pk])  # act on the new thresholds now
                messages.success(request, _("Balance settings saved."))
                return redirect("billing_settings")
        elif which == "forget_card":
            type(profile).objects.filter(pk=profile.pk).update(
                stripe_payment_method_id="", card_brand="", card_last4="", auto_topup_enabled=False
            )
            messages.success(request, _("The saved card was removed; auto top-up is off."))
            return redirect("billing_settings")
        status = 400
    return render(
        request,
        "billing/settings.html",
        {
            "nav": "billing",
            "profile": profile,
            "details": details,
            "alerts_form": alerts_form,
            "max_failures": settings.TP_AUTO_TOPUP_MAX_FAILURES,
        },
        status=status,
    )
