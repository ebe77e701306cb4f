"""Which account a signed-in user is acting for (issue 15): their personal account or one of
their organizations', chosen by the switcher on every page and kept in the session. Pages and
API calls take the account from here and ask ``roles`` whether the role allows what they do.

A user taken out of an organization is back on their personal account at their next request:
the session holds only the account's id, and the membership is checked every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.translation import gettext as _

from . import roles
from .models import Account, Membership, Organization, Role
from .selectors import account_of

SESSION_KEY = "tp_account"


@dataclass(frozen=True)
class Acting:
    account: Account
    role: str
    membership: Membership | None = None

    @property
    def organization(self) -> Organization | None:
        return self.membership.organization if self.membership is not None else None

    @property
    def personal(self) -> bool:
        return self.membership is None

    def can(self, capability: str) -> bool:
        return roles.allows(self.role, capability)


def _membership(user: Any, account_id: Any) -> Membership | None:
    try:
        account_id = int(account_id)
    except (TypeError, ValueError):
        return None
    return (
        Membership.objects.select_related("organization__account")
        .filter(user_id=user.pk, organization__account__id=account_id)
        .first()
    )


def acting(request: HttpRequest) -> Acting:
    """The account the request's user acts for (computed once per request)."""
    cached: Acting | None = getattr(request, "_tp_acting", None)
    if cached is not None:
        return cached
    user = request.user
    found: Acting | None = None
    chosen = request.session.get(SESSION_KEY)
    if chosen is not None:
        membership = _membership(user, chosen)
        if membership is not None:
            found = Acting(membership.organization.account, membership.role, membership)
        else:  # no longer a member, or a stale id: back to the personal account
            request.session.pop(SESSION_KEY, None)
    if found is None:
        found = Acting(account_of(user), Role.OWNER)
    request._tp_acting = found  # type: ignore[attr-defined]
    return found


def switch(request: HttpRequest, account_id: Any) -> bool:
    """Acts for ``account_id`` from now on: the user's personal account (any id of theirs that
    is no organization's, or "personal") or an organization's they belong to."""
    if account_id in ("", "personal", None) or str(account_id) == str(account_of(request.user).pk):
        request.session.pop(SESSION_KEY, None)
    elif _membership(request.user, account_id) is not None:
        request.session[SESSION_KEY] = int(account_id)
    else:
        return False
    if hasattr(request, "_tp_acting"):
        del request._tp_acting
    return True


def forbidden(request: HttpRequest) -> HttpResponse:
    """The page for a role that does not allow what was asked (403)."""
    current = acting(request)
    return render(
        request,
        "accounts/forbidden.html",
        {
            "account_name": current.account.name,
            "role": Role(current.role).label,
            "message": _("Your role in %(account)s does not allow this page.")
            % {"account": current.account.name},
        },
        status=403,
    )


View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def needs(*capabilities: str) -> Callable[[View], View]:
    """A view that needs one of ``capabilities`` in the acting account (after login_required)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            current = acting(request)
            if not any(current.can(c) for c in capabilities):
                return forbidden(request)
            return view(request, *args, **kwargs)

        return cast(View, wrapped)

    return decorate


def for_api(request: Any) -> Acting:
    """The acting account of an API call (DRF's request): a management key's own account,
    with its maker's role there; or the session's choice, as for pages."""
    key = getattr(request, "auth", None)
    account = getattr(key, "account", None)
    if isinstance(account, Account):
        role = roles.role_in(request.user, account) or ""
        membership = None
        if account.organization_id is not None:
            membership = (
                Membership.objects.select_related("organization__account")
                .filter(organization_id=account.organization_id, user_id=request.user.pk)
                .first()
            )
        return Acting(account, role, membership)
    return acting(request)
