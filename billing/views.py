from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Account
from accounts.selectors import account_of

from . import alerts, ledger, receipts, topups, vouchers
from .accounts import SIGNUP_REFERENCE, profile_of
from .forms import AlertsForm, BillingDetailsForm, ConfirmTopupForm, TopupForm, VoucherForm
from .models import DailyUsage, LedgerEntry, Payment, UsageEvent, Voucher
from .providers.base import ProviderError

log = logging.getLogger(__name__)

CHART_DAYS = 30


def _page(request: HttpRequest, queryset, per_page: int = 50):  # type: ignore[no-untyped-def]
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def _payment(request: HttpRequest, uuid: Any) -> Payment:
    """The signed-in user's own payment, or 404."""
    return get_object_or_404(Payment, uuid=uuid, account=account_of(request.user))


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
def billing(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    return render(request, "billing/billing.html", _billing_context(request, account))


@login_required
@require_POST
def topup(request: HttpRequest) -> HttpResponse:
    """Step one posted: show exactly what will be charged before anything happens."""
    account = account_of(request.user)
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
@require_POST
def topup_start(request: HttpRequest) -> HttpResponse:
    """Step two: create the payment at the provider and send the customer there."""
    account = account_of(request.user)
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
@require_GET
def receipt(request: HttpRequest, uuid: Any) -> HttpResponse:
    payment = _payment(request, uuid)
    if payment.status != Payment.Status.CONFIRMED:
        raise Http404("no receipt for an unpaid top-up")
    return render(request, "billing/receipt.html", receipts.context(payment))


@login_required
@require_GET
def receipt_pdf(request: HttpRequest, uuid: Any) -> HttpResponse:
    payment = _payment(request, uuid)
    if payment.status != Payment.Status.CONFIRMED:
        raise Http404("no receipt for an unpaid top-up")
    response = HttpResponse(receipts.pdf(payment), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="receipt-{payment.receipt_number}.pdf"'
    return response


@login_required
@require_POST
def redeem_voucher(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    form = VoucherForm(request.POST)
    if form.is_valid():
        try:
            voucher = vouchers.redeem(account=account, code=form.cleaned_data["code"])
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
def billing_settings(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
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
