from __future__ import annotations

from datetime import timedelta

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import audit, roles
from accounts.acting import acting
from accounts.emails import lookup_key
from accounts.forms import TimeZoneForm
from accounts.models import User
from accounts.organizations import OrganizationError
from accounts.selectors import account_of
from accounts.timezones import BROWSER_COOKIE, zone_of
from billing import ledger
from billing.models import DailyUsage, UsageEvent
from catalog.models import Model
from keys.selectors import usage_keys, visible_keys

from . import account as account_service


def _example_model() -> str:
    example = Model.objects.filter(active=True, embeddings=False).order_by("sort_order").first()
    return example.id if example else "mistral-large-2"


def _user(request: HttpRequest) -> User:
    """The signed-in user of a view behind login_required."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"nav": "home", "example_model": _example_model()})


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The acting account at a glance; in an organization, what the role shows: the balance to
    those who handle money, usage and keys to those who see them (a member: their own)."""
    current = acting(request)
    account = current.account
    keys = usage_keys(current, request.user)
    today = timezone.now().date()
    daily = DailyUsage.objects.filter(account=account)
    recent = UsageEvent.objects.filter(account=account)
    if keys is not None:
        daily = daily.filter(key_id__in=keys)
        recent = recent.filter(key_id__in=keys)
    month = daily.filter(day__gte=today.replace(day=1)).aggregate(
        cost=Sum("cost"), requests=Sum("requests")
    )
    week = daily.filter(day__gt=today - timedelta(days=7))
    sees_usage = current.can(roles.USAGE_OWN)
    return render(
        request,
        "portal/dashboard.html",
        {
            "nav": "dashboard",
            "acting": current,
            "sees_balance": current.can(roles.BILLING) or current.can(roles.USAGE_ALL),
            "sees_usage": sees_usage,
            "summary": ledger.summary(account),
            "month_cost": month["cost"] or 0,
            "month_requests": month["requests"] or 0,
            "week_requests": week.aggregate(n=Sum("requests"))["n"] or 0,
            "active_keys": visible_keys(current, request.user).filter(status="active").count(),
            "recent": recent.select_related("key").order_by("-started_at")[:5]
            if sees_usage
            else [],
        },
    )


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def favicon(request: HttpRequest) -> HttpResponse:
    return redirect(static("favicon.svg"), permanent=True)


@login_required
def account_data(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    return render(
        request,
        "portal/account_data.html",
        {"nav": "account", "summary": ledger.summary(account)},
    )


@login_required
@reauthentication_required
def account_export(request: HttpRequest) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        account_service.export(_user(request)), content_type="application/json"
    )
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="tokenpapa-export-{stamp}.json"'
    return response


@login_required
@reauthentication_required
@require_POST
def account_delete(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if lookup_key(request.POST.get("confirm", "")) != lookup_key(user.email):
        messages.error(request, _("Type your email address to confirm the deletion."))
        return redirect("account_data")
    try:
        account_service.delete(user)
    except OrganizationError as error:
        messages.error(request, str(error))
        return redirect("account_data")
    logout(request)
    messages.success(request, _("Your account is deleted and every key is revoked."))
    return redirect("home")


@login_required
def account_time_zone(request: HttpRequest) -> HttpResponse:
    """Their time zone for the activity page, the export and the usage API (issue 14)."""
    user = _user(request)
    browser_zone = request.COOKIES.get(BROWSER_COOKIE, "")
    form = TimeZoneForm(request.POST or None, instance=user, browser_zone=browser_zone)
    if request.method == "POST":
        if form.is_valid():
            before = User.objects.values_list("time_zone", flat=True).get(pk=user.pk)
            form.save()
            if user.time_zone != before:
                audit.record(
                    account=account_of(user),
                    action=audit.Action.TIME_ZONE_CHANGED,
                    request=request,
                    target=user.time_zone,
                    details=audit.changes({"time_zone": before}, {"time_zone": user.time_zone}),
                )
            messages.success(request, _("Time zone saved."))
            return redirect("account_time_zone")
        status = 400
    else:
        status = 200
    return render(
        request,
        "portal/time_zone.html",
        {"nav": "account", "form": form, "zone": zone_of(user, browser_zone).key},
        status=status,
    )
