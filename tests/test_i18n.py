"""The portal in five languages: the browser's Accept-Language by default, the switcher's
choice remembered (cookie, and on the user for their mail), numbers and money in the reader's
format but exact, and every page rendering in every language with its <html lang>."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client
from django.urls import NoReverseMatch, get_resolver, reverse
from django.utils import timezone, translation

from accounts.language import in_language_of
from billing import alerts, usage
from billing.accounts import profile_of
from keys.models import ApiKey
from lib.money import usd, usd_text

LANGUAGES = [code for code, _ in settings.LANGUAGES]
HTML_LANG = re.compile(rb'<html lang="([a-z-]+)"')


def html_lang(content: bytes) -> str:
    found = HTML_LANG.search(content)
    assert found, "the page has no <html lang>"
    return found.group(1).decode()


def test_the_browsers_language_is_the_default(db: None) -> None:
    response = Client().get(reverse("home"), HTTP_ACCEPT_LANGUAGE="de-CH,de;q=0.9,en;q=0.5")
    assert html_lang(response.content) == "de"
    assert response["Content-Language"] == "de"
    unknown = Client().get(reverse("home"), HTTP_ACCEPT_LANGUAGE="ja,zh;q=0.8")
    assert html_lang(unknown.content) == "en"


def test_the_switcher_posts_to_set_language_and_the_choice_sticks(db: None) -> None:
    client = Client()
    page = client.get(reverse("models"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    form = re.search(r'<form class="language-form" method="post" action="([^"]+)">', page)
    assert form and form.group(1) == reverse("set_language")
    assert '<label for="language-select">' in page and '<select id="language-select"' in page
    assert "<script" not in page.split('class="language-form"')[1].split("</form>")[0]
    for code, name in [("fr", "Français"), ("de", "Deutsch"), ("es", "Español")]:
        assert f'<option value="{code}" lang="{code}">{name}</option>' in page

    switched = client.post(reverse("set_language"), {"language": "fr", "next": "/models/"})
    assert switched.status_code == 302 and switched["Location"] == "/models/"
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "fr"
    # The cookie outranks the browser's language from now on.
    again = client.get(reverse("models"), HTTP_ACCEPT_LANGUAGE="de")
    assert html_lang(again.content) == "fr"
    assert '<option value="fr" lang="fr" selected>' in again.content.decode()


def test_a_signed_in_users_choice_is_stored_and_follows_them(alice: Any) -> None:
    laptop = Client()
    laptop.force_login(alice)
    laptop.post(reverse("set_language"), {"language": "it", "next": "/dashboard/"}, follow=True)
    alice.refresh_from_db()
    assert alice.language == "it"
    # Another browser of hers without the cookie reads the portal in Italian, whatever it asks.
    phone = Client()
    phone.force_login(alice)
    response = phone.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE="es")
    assert html_lang(response.content) == "it"


def test_a_first_visit_stores_the_language_in_effect(alice: Any) -> None:
    assert alice.language == ""
    client = Client()
    client.force_login(alice)
    client.get(reverse("dashboard"), HTTP_ACCEPT_LANGUAGE="es-MX,es;q=0.9")
    alice.refresh_from_db()
    assert alice.language == "es"


def test_mail_from_the_worker_is_in_the_users_language(alice: Any) -> None:
    """The low-balance alert runs in Celery with no request: it is written in her stored
    language (German money: 4,00 and 5,00)."""
    alice.language = "de"
    alice.save(update_fields=["language"])
    profile = profile_of(alice.account)
    profile.low_balance_threshold = Decimal("5")
    profile.save()
    usage.record_batch(
        [
            {
                "request_id": "req-i18n-1",
                "account": alice.account.pk,
                "key": 0,
                "model": "demo",
                "cost": "6",
                "started_at": timezone.now().timestamp(),
            }
        ]
    )
    with translation.override("en"):
        alerts.check_balance(alice.account.pk)
        assert translation.get_language() == "en"  # the worker's own is left as it was
    (sent,) = [m for m in mail.outbox if "$4,00" in m.body]
    assert "$5,00" in sent.body
    with in_language_of(None):
        assert translation.get_language() == settings.LANGUAGE_CODE


@pytest.mark.parametrize(
    ("language", "value", "shown"),
    [
        ("en", "1234.5", "1,234.50"),
        ("fr", "1234.5", "1\xa0234,50"),
        ("de", "1234567.5", "1.234.567,50"),
        ("it", "0.000012345", "0,000012345"),
        ("es", "-0.10", "-0,10"),
    ],
)
def test_money_is_shown_in_the_readers_format_and_exact(
    language: str, value: str, shown: str
) -> None:
    with translation.override(language):
        assert usd_text(Decimal(value)) == shown
    # What machines read is never localized.
    assert usd(Decimal("1234.5")) == "1234.50"


def named_urls() -> list[str]:
    """Every URL name that reverses without arguments, the admin, the API and files aside."""
    names = sorted(n for n in get_resolver().reverse_dict if isinstance(n, str))
    found = []
    for name in names:
        try:
            path = reverse(name)
        except NoReverseMatch:
            continue
        if not path.startswith(("/admin/", "/api/", "/i18n/", "/healthz", "/favicon")):
            found.append(name)
    return found


def render_everywhere(client: Client) -> dict[str, int]:
    """Each page that renders as HTML in English, in every language: 200 and <html lang>."""
    seen = {}
    for name in named_urls():
        english = client.get(reverse(name), HTTP_ACCEPT_LANGUAGE="en")
        if english.status_code != 200 or "text/html" not in english.get("Content-Type", ""):
            continue
        seen[name] = english.status_code
        for language in LANGUAGES:
            client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
            response = client.get(reverse(name))
            assert response.status_code == 200, (name, language, response.status_code)
            assert html_lang(response.content) == language, (name, language)
        del client.cookies[settings.LANGUAGE_COOKIE_NAME]
    return seen


def test_every_page_renders_in_every_language_for_a_visitor(db: None) -> None:
    seen = render_everywhere(Client())
    assert {"home", "models", "docs", "account_login", "account_signup"} <= set(seen)


def test_every_page_renders_in_every_language_for_a_customer(
    alice: Any, alice_key: str, alice_client: Client
) -> None:
    key = ApiKey.objects.get(account=alice.account)
    usage.record_batch(
        [
            {
                "request_id": "req-i18n-pages",
                "account": alice.account.pk,
                "key": key.pk,
                "model": "demo",
                "cost": "1234.567891",
                "prompt_tokens": 12000,
                "completion_tokens": 3400,
                "started_at": timezone.now().timestamp(),
            }
        ]
    )
    seen = render_everywhere(alice_client)
    assert {"dashboard", "keys", "usage", "billing", "account_email"} <= set(seen)
    alice_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    page = alice_client.get(reverse("usage")).content.decode()
    assert "1\xa0234,567891" in page  # her spend, exact, in French digits
