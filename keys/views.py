from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from allauth.account.decorators import reauthentication_required
from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from billing.models import Account, DailyUsage, UsageEvent
from billing.selectors import account_of
from relay import state

from .forms import KeyForm, LimitsForm, RotateForm
from .models import ApiKey, ManagementKey
from .services import (
    issue_key,
    issue_management_key,
    revoke_key,
    revoke_management_key,
    rotate_key,
    update_limits,
)
from .sync import spent_in_period


def _own_key(account: Account, key_id: int) -> ApiKey:
    return get_object_or_404(ApiKey, pk=key_id, account=account)


def _verified(request: HttpRequest) -> bool:
    return EmailAddress.objects.filter(user=request.user, verified=True).exists()


def _spend(key: ApiKey) -> Decimal | None:
    """Spend in the key's cap period (recorded usage), for keys that have a cap."""
    if key.spend_cap is None:
        return None
    nanos = spent_in_period(key, timezone.now().timestamp())[1]
    return Decimal(nanos) / 1_000_000_000


@login_required
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    verified = _verified(request)
    form = KeyForm(request.POST or None)
    secret = None
    created = None
    if request.method == "POST":
        if not verified:
            messages.error(request, _("Verify your email address before creating a key."))
            return redirect("keys")
        if form.is_valid():
            created, secret = issue_key(
                account=account, name=form.cleaned_data["name"], limits=form.limits()
            )
            form = KeyForm()
    keys = list(account.api_keys.select_related("replaced_by"))
    for key in keys:
        key.period_spend = _spend(key)  # type: ignore[attr-defined]
    # The secret is put into this one response and nowhere else (not the session, not a
    # redirect): reloading the page cannot show it again.
    return render(
        request,
        "keys/key_list.html",
        {
            "nav": "keys",
            "form": form,
            "verified": verified,
            "keys": keys,
            "secret": secret,
            "created": created,
            "now": timezone.now(),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    """The key's page; a POST of its limits form (htmx) answers with the form alone."""
    key = _own_key(account_of(request.user), key_id)
    form = LimitsForm.for_key(key, request.POST if request.method == "POST" else None)
    saved = False
    if request.method == "POST" and key.is_active and form.is_valid():
        key = update_limits(key=key, limits=form.limits())
        form = LimitsForm.for_key(key)
        saved = True
    context = {"nav": "keys", "key": key, "form": form, "saved": saved}
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "keys/_limits_form.html", context)
    if saved:
        messages.success(request, _("Limits saved."))
        return redirect("key_detail", key_id=key.pk)
    today = timezone.now().date()
    start = today - timedelta(days=29)
    daily = {(start + timedelta(days=i)).isoformat(): Decimal(0) for i in range(30)}
    for row in DailyUsage.objects.filter(key=key, day__gte=start).values("day", "cost"):
        daily[row["day"].isoformat()] += row["cost"]
    context.update(
        {
            "chart": {
                "type": "bar",
                "yLabel": "USD",
                "labels": list(daily),
                "datasets": [{"label": _("Spend (USD)"), "data": [str(v) for v in daily.values()]}],
            },
            "events": UsageEvent.objects.filter(key=key).order_by("-started_at")[:50],
            "period_spend": _spend(key),
            "period": state.period_bounds(key.spend_cap_period, timezone.now().timestamp())[0],
            "rotate_form": RotateForm(),
        }
    )
    return render(request, "keys/key_detail.html", context)


@login_required
@require_POST
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _own_key(account_of(request.user), key_id)
    revoke_key(key=key)
    messages.success(request, _("Key “%(name)s” revoked.") % {"name": key.name})
    return redirect("keys")


@login_required
@require_POST
def rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    account = account_of(request.user)
    key = _own_key(account, key_id)
    form = RotateForm(request.POST)
    if not key.is_active or not form.is_valid():
        messages.error(request, _("This key cannot be rotated."))
        return redirect("key_detail", key_id=key.pk)
    new, secret = rotate_key(key=key, grace_seconds=form.cleaned_data["grace"])
    key.refresh_from_db()
    keys = list(account.api_keys.select_related("replaced_by"))
    for each in keys:
        each.period_spend = _spend(each)  # type: ignore[attr-defined]
    return render(
        request,
        "keys/key_list.html",
        {
            "nav": "keys",
            "form": KeyForm(),
            "verified": True,
            "keys": keys,
            "secret": secret,
            "created": new,
            "rotated": key,
            "now": timezone.now(),
        },
    )


@login_required
@reauthentication_required
@require_http_methods(["GET", "POST"])
def management_keys(request: HttpRequest) -> HttpResponse:
    """Keys for scripts using the JSON API; sensitive, so the user confirms their password
    (or second factor) first."""
    account = account_of(request.user)
    secret = None
    if request.method == "POST":
        if "revoke" in request.POST:
            key_id = request.POST["revoke"]
            key = get_object_or_404(
                ManagementKey,
                pk=int(key_id) if key_id.isascii() and key_id.isdigit() else 0,
                account=account,
            )
            revoke_management_key(key=key)
            messages.success(request, _("Management key revoked."))
            return redirect("management_keys")
        # PostgreSQL stores no NUL in text: one in a posted name would be a 500.
        name = request.POST.get("name", "").replace("\x00", "").strip()
        if name:
            secret = issue_management_key(account=account, name=name)[1]
    return render(
        request,
        "keys/management_keys.html",
        {"nav": "keys", "keys": account.management_keys.all(), "secret": secret},
    )
