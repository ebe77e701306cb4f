"""Which language a person reads the portal and their mail in.

On the page, the language cookie (set by the switcher through Django's ``set_language``) wins,
then the language stored on the signed-in user, then the browser's Accept-Language (Django's
LocaleMiddleware). The language in effect for a signed-in user is stored on the user, so that
mail sent later from the worker (low balance, auto top-up, leaked keys) is written in it:
``in_language_of(user)`` around the sending.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation

from .models import User


def supported(code: str | None) -> str:
    """``code`` if it is one of the portal's languages (a regional variant folds to its
    language), else ``""``."""
    if not code:
        return ""
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return ""


def in_language_of(user: User | None) -> AbstractContextManager[None]:
    """Translations active in ``user``'s stored language (the site's default language when they
    have none) for the length of a ``with`` block."""
    code = supported(user.language if user is not None else "") or settings.LANGUAGE_CODE
    return translation.override(code)


class UserLanguageMiddleware:
    """After AuthenticationMiddleware: a signed-in user without a language cookie reads the
    portal in their stored language; otherwise the language in effect (the cookie's, or the
    browser's when nothing was stored yet) becomes their stored one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if isinstance(user, User):
            self._apply(request, user)
        return self.get_response(request)

    @staticmethod
    def _apply(request: HttpRequest, user: User) -> None:
        chosen = supported(request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME))
        stored = supported(user.language)
        if not chosen and stored:
            translation.activate(stored)
            request.LANGUAGE_CODE = stored
            return
        current = chosen or supported(getattr(request, "LANGUAGE_CODE", ""))
        if current and current != user.language:
            User.objects.filter(pk=user.pk).update(language=current)
            user.language = current
