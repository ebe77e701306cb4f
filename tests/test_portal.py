"""Portal pages: accounts, keys, usage, billing, catalog and docs, with named users who have
different rights (alice owns, bob is another customer)."""

from __future__ import annotations

from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse

from keys.models import ApiKey
from keys.services import issue_key

from .conftest import PASSWORD, credit


def test_it_signs_up_with_email_only_and_mails_a_verification_link(transactional_db: None) -> None:
    response = Client().post(
        reverse("account_signup"),
        {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(email="new@example.com")
    assert not hasattr(user, "username") or user.username is None
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1
    assert "/accounts/confirm-email/" in mail.outbox[0].body


def test_signup_with_an_existing_email_does_not_reveal_it(alice: Any) -> None:
    fresh = Client().post(
        reverse("account_signup"),
        {"email": "someone-new@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    taken = Client().post(
        reverse("account_signup"),
        {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert taken.status_code == fresh.status_code == 302
    assert taken["Location"] == fresh["Location"]
    assert get_user_model().objects.filter(email="alice@example.com").count() == 1


def test_password_reset_answers_the_same_for_unknown_emails(alice: Any) -> None:
    known = Client().post(reverse("account_reset_password"), {"email": "alice@example.com"})
    unknown = Client().post(reverse("account_reset_password"), {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]


def test_an_unverified_user_cannot_sign_in(transactional_db: None) -> None:
    Client().post(
        reverse("account_signup"),
        {"email": "late@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    client = Client()
    response = client.post(
        reverse("account_login"), {"login": "late@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.get(reverse("keys")).status_code == 302  # still anonymous


def test_an_unverified_user_cannot_create_a_key(make_user: Any) -> None:
    user = make_user("unverified@example.com")
    EmailAddress.objects.filter(user=user).update(verified=False)
    client = Client()
    client.force_login(user)
    client.post(reverse("keys"), {"name": "nope"})
    assert not ApiKey.objects.filter(account__user=user).exists()


def test_it_shows_a_new_key_once(alice_client: Client, alice: Any) -> None:
    response = alice_client.post(reverse("keys"), {"name": "laptop"})
    key = ApiKey.objects.get(account=alice.account)
    body = response.content.decode()
    secret = body.split('data-testid="new-key">')[1].split("<")[0]
    assert secret.startswith("tp-sk-") and secret.endswith(key.last4)
    again = alice_client.get(reverse("keys")).content.decode()
    assert secret not in again
    assert key.masked in again


def test_bob_cannot_revoke_alices_key(alice: Any, bob: Any) -> None:
    key, _ = issue_key(account=alice.account, name="laptop")
    client = Client()
    client.force_login(bob)
    assert client.post(reverse("key_revoke", args=[key.pk])).status_code == 404
    key.refresh_from_db()
    assert key.is_active
    assert key.masked not in client.get(reverse("keys")).content.decode()


def test_revoke_is_post_only(alice_client: Client, alice: Any) -> None:
    key, _ = issue_key(account=alice.account, name="laptop")
    assert alice_client.get(reverse("key_revoke", args=[key.pk])).status_code == 405
    key.refresh_from_db()
    assert key.is_active


def test_pages_render_for_a_signed_in_user(alice_client: Client, alice: Any) -> None:
    credit(alice, "3.5")  # on top of her $10
    pages = ("dashboard", "keys", "usage", "billing", "models", "docs", "home", "account_email")
    for name in pages:
        response = alice_client.get(reverse(name))
        assert response.status_code == 200, name
    assert "13.50" in alice_client.get(reverse("dashboard")).content.decode()
    assert "13.50" in alice_client.get(reverse("billing")).content.decode()


def test_private_pages_need_a_sign_in(transactional_db: None) -> None:
    for name in ("dashboard", "keys", "usage", "billing"):
        response = Client().get(reverse(name))
        assert response.status_code == 302
        assert reverse("account_login") in response["Location"]


def test_the_models_page_lists_the_catalog_with_prices(catalog: None) -> None:
    body = Client().get(reverse("models")).content.decode()
    for model_id, price in (
        ("mistral-large-2", "$2.00"),
        ("mistral-small", "$0.20"),
        ("mistral-embed", "$0.10"),
        ("codestral", "$1.50"),
        ("gpt-4o", "$10.00"),
        ("deepseek-v4-flash", "$0.28"),
        ("claude-sonnet-4", "$15.00"),
    ):
        assert model_id in body
        assert price in body
    assert "demo" in body  # every model is served by the demo upstream in this set-up


def test_the_docs_show_this_deployments_base_url(settings: Any, transactional_db: None) -> None:
    settings.TP_RELAY_BASE_URL = "https://relay.example.test/v1"
    body = Client().get(reverse("docs_page", args=["quickstart"])).content.decode()
    assert '"https://relay.example.test/v1"' in body  # OpenAI(base_url=...)
    assert "https://relay.example.test/v1/chat/completions" in body  # the curl sample


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/usage/?page=abc", None),
        ("/billing/?page=-1", None),
        ("/usage/?page=99999999999999999999", None),
        ("/keys/", {"name": ""}),
        ("/keys/", {"name": "x" * 5000}),
        ("/keys/", {"unexpected": "field"}),
    ],
)
def test_malformed_input_never_answers_500(alice_client: Client, url: str, data: Any) -> None:
    response = alice_client.post(url, data) if data is not None else alice_client.get(url)
    assert response.status_code < 500


def test_malformed_account_forms_never_answer_500(transactional_db: None) -> None:
    client = Client()
    for url, data in (
        (reverse("account_signup"), {"email": "not-an-email", "password1": "x", "password2": "y"}),
        (reverse("account_login"), {"login": "\x00", "password": ""}),
        (reverse("account_reset_password"), {"email": "a" * 500}),
    ):
        assert client.post(url, data).status_code < 500
    assert client.get("/accounts/confirm-email/garbage-key/").status_code < 500
