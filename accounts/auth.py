"""Signing in: allauth's adapter and forms with every entered address in its one stored form
(``accounts.emails``), and the Django admin's login handed to allauth.

Signup and adding an address call the adapter's ``clean_email``. Login, password reset and
the change of an unverified address (verification by code) take the address as typed, so their
forms normalise it first: a look-alike then finds the same account, and counts against the same
per-address rate limit (allauth keys ``login_failed`` and ``reset_password`` on the cleaned
address), rather than opening a fresh allowance with each spelling.
"""

from __future__ import annotations

from allauth.account import forms as allauth_forms
from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.decorators import secure_admin_login
from allauth.account.utils import get_next_redirect_url
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.cache import never_cache

from .emails import normalize_email


class AccountAdapter(DefaultAccountAdapter):
    def clean_email(self, email: str) -> str:
        return normalize_email(super().clean_email(email))


class LoginForm(allauth_forms.LoginForm):
    def clean_login(self) -> str:
        # ACCOUNT_LOGIN_METHODS is {"email"}: the login is an address.
        return normalize_email(super().clean_login())


class ResetPasswordForm(allauth_forms.ResetPasswordForm):
    def clean_email(self) -> str:
        self.cleaned_data["email"] = normalize_email(self.cleaned_data["email"])
        return super().clean_email()


class ChangeEmailForm(allauth_forms.ChangeEmailForm):
    def clean_email(self) -> str:
        self.cleaned_data["email"] = normalize_email(self.cleaned_data["email"])
        return super().clean_email()


def _admin_entry(request: HttpRequest, extra_context: object = None) -> HttpResponse:
    """Where the admin's login URL leads a signed-in member of staff: on to the page they
    asked for. It never takes a password itself, so a session can only come from allauth's
    login, with its rate limits and second factor, also for a member of staff who signs in as
    someone else."""
    return HttpResponseRedirect(get_next_redirect_url(request) or reverse("admin:index"))


# allauth's decorator sends a visitor who is not signed in to allauth's login (with ?next= back
# to the admin page), refuses signed-in users who are not active staff, and lets staff through.
admin_login = never_cache(secure_admin_login(_admin_entry))
