from __future__ import annotations

from allauth.account.decorators import reauthentication_required
from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts import audit, roles
from accounts.acting import acting, needs
from accounts.models import Account
from core import state
from lib.htmx import page_or_part, wants_part

from . import byok
from .forms import KeyForm, LimitsForm, ProviderKeyForm, RotateForm
from .models import ApiKey, ProviderCredential
from .selectors import visible_keys
from .services import (
    issue_key,
    issue_management_key,
    revoke_key,
    revoke_management_key,
    rotate_key,
    update_limits,
)


def _own_key(request: HttpRequest, key_id: int) -> ApiKey:
    return get_object_or_404(visible_keys(acting(request), request.user), pk=key_id)


def _verified(request: HttpRequest) -> bool:
    return EmailAddress.objects.filter(user=request.user, verified=True).exists()


@login_required
@needs(roles.KEYS_OWN)
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    current = acting(request)
    account = current.account
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
                account=account,
                name=form.cleaned_data["name"],
                limits=form.limits(),
                **audit.origin(request),
            )
            form = KeyForm()
    keys = list(visible_keys(current, request.user).select_related("replaced_by", "created_by"))
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
            "show_makers": not current.personal,
        },
    )


@login_required
@needs(roles.KEYS_OWN)
@require_http_methods(["GET", "POST"])
def key_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    """The key's page; a POST of its limits form (htmx) answers with the form alone."""
    key = _own_key(request, key_id)
    form = LimitsForm.for_key(key, request.POST if request.method == "POST" else None)
    saved = False
    if request.method == "POST" and key.is_active and form.is_valid():
        key = update_limits(key=key, limits=form.limits(), **audit.origin(request))
        form = LimitsForm.for_key(key)
        saved = True
    context = {"nav": "keys", "key": key, "form": form, "saved": saved}
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "keys/_limits_form.html", context)
    if saved:
        messages.success(request, _("Limits saved."))
        return redirect("key_detail", key_id=key.pk)
    context.update(
        {
            "period": state.period_bounds(key.spend_cap_period, timezone.now().timestamp())[0],
            "rotate_form": RotateForm(),
        }
    )
    return render(request, "keys/key_detail.html", context)


@login_required
@needs(roles.KEYS_OWN)
@require_POST
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _own_key(request, key_id)
    revoke_key(key=key, **audit.origin(request))
    messages.success(request, _("Key “%(name)s” revoked.") % {"name": key.name})
    return redirect("keys")


@login_required
@needs(roles.KEYS_OWN)
@require_POST
def rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    current = acting(request)
    key = _own_key(request, key_id)
    form = RotateForm(request.POST)
    if not key.is_active or not form.is_valid():
        messages.error(request, _("This key cannot be rotated."))
        return redirect("key_detail", key_id=key.pk)
    new, secret = rotate_key(
        key=key, grace_seconds=form.cleaned_data["grace"], **audit.origin(request)
    )
    key.refresh_from_db()
    keys = list(visible_keys(current, request.user).select_related("replaced_by", "created_by"))
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
            "show_makers": not current.personal,
        },
    )


@login_required
@needs(roles.KEYS_ALL, roles.BILLING)
@reauthentication_required
@require_http_methods(["GET", "POST"])
def management_keys(request: HttpRequest) -> HttpResponse:
    """Keys for scripts using the JSON API; sensitive, so the user confirms their password
    (or second factor) first. In an organization a key acts with its maker's role, and each
    maker sees and revokes their own (the owner and admins: all of them)."""
    current = acting(request)
    account = current.account
    shown = account.management_keys.all()
    if not current.can(roles.KEYS_ALL):
        shown = shown.filter(created_by_id=request.user.pk)
    secret = None
    if request.method == "POST":
        if "revoke" in request.POST:
            key_id = request.POST["revoke"]
            key = get_object_or_404(
                shown, pk=int(key_id) if key_id.isascii() and key_id.isdigit() else 0
            )
            revoke_management_key(key=key, **audit.origin(request))
            messages.success(request, _("Management key revoked."))
            return redirect("management_keys")
        # PostgreSQL stores no NUL in text: one in a posted name would be a 500.
        name = request.POST.get("name", "").replace("\x00", "").strip()
        if name:
            secret = issue_management_key(account=account, name=name, **audit.origin(request))[1]
    return render(
        request,
        "keys/management_keys.html",
        {"nav": "keys", "keys": shown.select_related("created_by"), "secret": secret},
    )


def _manageable(request: HttpRequest) -> Account:
    """The account whose provider keys the signed-in user manages (a 403 for one who may
    not)."""
    account = acting(request).account
    if not byok.can_manage(request.user, account):
        raise PermissionDenied
    return account


@sensitive_post_parameters("api_key")
@login_required
@require_http_methods(["GET", "POST"])
def provider_keys(request: HttpRequest) -> HttpResponse:
    """The account's own provider keys (BYOK): add or replace one (checked with the provider
    first), remove one. htmx swaps the section alone; without it the whole page."""
    account = _manageable(request)
    form = ProviderKeyForm()
    saved: ProviderCredential | None = None
    replaced = False
    if request.method == "POST" and "remove" in request.POST:
        raw = request.POST["remove"]
        credential = get_object_or_404(
            ProviderCredential,
            pk=int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 12 else 0,
            account=account,
        )
        byok.remove_credential(credential=credential, **audit.origin(request))
        if not wants_part(request, "provider-keys"):
            messages.success(request, _("Provider key removed."))
            return redirect("provider_keys")
    elif request.method == "POST":
        form = ProviderKeyForm(request.POST)
        if form.is_valid():
            try:
                saved, replaced = byok.save_credential(
                    account=account,
                    provider=form.cleaned_data["provider"],
                    api_key=form.cleaned_data["api_key"],
                    mode=form.cleaned_data["mode"],
                    **audit.origin(request),
                )
            except byok.KeyRefused as exc:
                form.add_error("api_key", exc.message)
            else:
                form = ProviderKeyForm()
    credentials = account.provider_credentials.select_related("provider", "added_by")
    return page_or_part(
        request,
        page="keys/provider_keys.html",
        part="keys/_provider_keys.html",
        target="provider-keys",
        context={
            "nav": "keys",
            "form": form,
            "credentials": list(credentials),
            "saved": saved,
            "replaced": replaced,
            "fee_percent": format(settings.TP_BYOK_FEE_PERCENT.normalize(), "f"),
        },
    )
