from __future__ import annotations

from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from billing.models import Account
from billing.selectors import account_of

from .forms import KeyForm
from .models import ApiKey
from .services import issue_key, revoke_key


def _own_key(account: Account, key_id: int) -> ApiKey:
    return get_object_or_404(ApiKey, pk=key_id, account=account)


@login_required
@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    account = account_of(request.user)
    verified = EmailAddress.objects.filter(user=request.user, verified=True).exists()
    form = KeyForm(request.POST or None)
    secret = None
    created = None
    if request.method == "POST":
        if not verified:
            messages.error(request, _("Verify your email address before creating a key."))
            return redirect("keys")
        if form.is_valid():
            created, secret = issue_key(account=account, name=form.cleaned_data["name"])
            form = KeyForm()
    # The secret is put into this one response and nowhere else (not the session, not a
    # redirect): reloading the page cannot show it again.
    return render(
        request,
        "keys/key_list.html",
        {
            "nav": "keys",
            "form": form,
            "verified": verified,
            "keys": account.api_keys.all(),
            "secret": secret,
            "created": created,
        },
    )


@login_required
@require_POST
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _own_key(account_of(request.user), key_id)
    revoke_key(key=key)
    messages.success(request, _("Key “%(name)s” revoked.") % {"name": key.name})
    return redirect("keys")
