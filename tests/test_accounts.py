"""Accounts: sessions, re-authentication, email change, data export and deletion, security
headers and production settings."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from billing.models import LedgerEntry
from keys.models import ApiKey
from keys.services import issue_key

from .conftest import PASSWORD, ROOT, reauthenticated, signed_in
from .test_keys import redis_record


def test_a_new_session_id_at_login(alice: Any) -> None:
    client = Client()
    client.get(reverse("account_login"))
    before = client.session.session_key
    client.post(reverse("account_login"), {"login": alice.email, "password": PASSWORD})
    assert client.session.session_key != before


def test_sessions_are_listed_and_the_others_can_be_ended(alice: Any) -> None:
    laptop = signed_in(alice)
    phone = signed_in(alice)
    page = laptop.get(reverse("usersessions_list"))
    assert page.status_code == 200
    laptop.post(reverse("usersessions_list"))  # "sign out the other sessions"
    assert phone.get(reverse("dashboard")).status_code == 302
    assert laptop.get(reverse("dashboard")).status_code == 200


def test_bob_sees_only_his_own_sessions(alice: Any, bob: Any) -> None:
    signed_in(alice)
    body = signed_in(bob).get(reverse("usersessions_list")).content.decode()
    assert body.count("<tr") <= 2  # the header row and bob's one session


def test_changing_the_password_ends_the_other_sessions(alice: Any) -> None:
    here = reauthenticated(signed_in(alice))
    elsewhere = signed_in(alice)
    new = "another long passphrase 42"
    response = here.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": new, "password2": new},
    )
    assert response.status_code == 302
    assert here.get(reverse("dashboard")).status_code == 200
    assert elsewhere.get(reverse("dashboard")).status_code == 302


def test_changing_the_email_asks_for_the_password_and_verifies_the_new_address(alice: Any) -> None:
    from django.core import mail

    client = signed_in(alice)
    response = client.post(
        reverse("account_email"), {"action_add": "", "email": "alice@new.example"}
    )
    assert response.status_code == 302 and "reauthenticate" in response["Location"]
    reauthenticated(client)
    client.post(reverse("account_email"), {"action_add": "", "email": "alice@new.example"})
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"  # unchanged until the new address is verified
    assert any("alice@new.example" in m.to for m in mail.outbox)
    assert not EmailAddress.objects.get(email="alice@new.example").verified


def test_export_needs_a_fresh_password_and_holds_no_secret(alice: Any, catalog: None) -> None:
    key, secret = issue_key(account=alice.account, name="laptop")
    client = signed_in(alice)
    assert "reauthenticate" in client.get(reverse("account_export"))["Location"]
    reauthenticated(client)
    response = client.get(reverse("account_export"))
    assert response["Content-Disposition"].startswith("attachment")
    raw = b"".join(response.streaming_content).decode()
    data = json.loads(raw)
    assert data["account"]["email"] == "alice@example.com"
    assert data["account"]["balance"] == "10.000000000"
    assert data["api_keys"][0]["name"] == "laptop"
    assert [e["amount"] for e in data["ledger"]] == ["10.000000000"]
    assert data["usage"] == []
    assert secret not in raw and key.digest not in raw


def test_bob_cannot_export_alices_data(alice: Any, bob: Any) -> None:
    client = reauthenticated(signed_in(bob))
    raw = b"".join(client.get(reverse("account_export")).streaming_content).decode()
    assert "alice@example.com" not in raw and "10.000000000" not in raw  # her balance, her credit
    assert json.loads(raw)["ledger"] == []


def test_deleting_an_account_revokes_keys_erases_data_and_keeps_the_ledger(
    alice: Any, catalog: None, redis_client: Any
) -> None:
    key, _ = issue_key(account=alice.account, name="laptop")
    client = signed_in(alice)
    page = client.get(reverse("account_data")).content.decode()
    assert "$10.00" in page  # the balance is shown before confirming
    reauthenticated(client)
    assert (
        client.post(reverse("account_delete"), {"confirm": "wrong@example.com"}).status_code == 302
    )
    assert get_user_model().objects.get(pk=alice.pk).email == "alice@example.com"
    client.post(reverse("account_delete"), {"confirm": "alice@example.com"})
    user = get_user_model().objects.get(pk=alice.pk)
    assert (
        user.email != "alice@example.com" and not user.is_active and not user.has_usable_password()
    )
    assert not EmailAddress.objects.filter(user=user).exists()
    key.refresh_from_db()
    assert key.status == ApiKey.Status.REVOKED and redis_record(redis_client, key) is None
    assert LedgerEntry.objects.filter(account=alice.account).count() == 1
    # The audit log keeps the account's history but no longer names her or where she was.
    events = AuditEvent.objects.filter(account=alice.account)
    assert events.filter(action="key.revoked", actor=user).exists()
    assert not events.filter(actor_label="alice@example.com").exists()
    assert not events.filter(actor=user).exclude(network="").exists()
    assert client.get(reverse("dashboard")).status_code == 302
    assert (
        Client()
        .post(reverse("account_login"), {"login": "alice@example.com", "password": PASSWORD})
        .status_code
        == 200
    )


def test_account_deletion_is_post_only(alice: Any) -> None:
    client = reauthenticated(signed_in(alice))
    assert client.get(reverse("account_delete")).status_code == 405
    assert get_user_model().objects.get(pk=alice.pk).is_active


def test_every_page_sends_the_security_headers(alice: Any) -> None:
    client = signed_in(alice)
    for url in (
        "/",
        "/models/",
        "/docs/",
        "/dashboard/",
        "/keys/",
        reverse("account_login"),
        "/api/docs/",
    ):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp, url
        assert "frame-ancestors 'none'" in csp
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"


def test_failed_logins_are_rate_limited(alice: Any) -> None:
    client = Client()
    login = reverse("account_login")
    for _ in range(6):
        client.post(login, {"login": "alice@example.com", "password": "wrong"})
    # Even the right password is refused for a while now.
    response = client.post(login, {"login": "alice@example.com", "password": PASSWORD})
    assert response.status_code in (200, 429)
    assert client.get(reverse("dashboard")).status_code == 302


def test_password_reset_is_rate_limited(alice: Any) -> None:
    client = Client()
    reset = reverse("account_reset_password")
    statuses = [client.post(reset, {"email": "alice@example.com"}).status_code for _ in range(8)]
    assert 429 in statuses


def test_signup_is_rate_limited(transactional_db: None) -> None:
    client = Client()
    statuses = [
        client.post(
            reverse("account_signup"),
            {"email": f"s{i}@example.com", "password1": PASSWORD, "password2": PASSWORD},
        ).status_code
        for i in range(25)
    ]
    assert 429 in statuses


def test_check_deploy_is_clean_with_production_settings(tmp_path: Any) -> None:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "TP_KEY_PEPPER": secrets.token_urlsafe(32),
        "TP_SECRETS_KEYS": "eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXk=",  # 32 bytes of "y"
        "ALLOWED_HOSTS": "portal.example.com",
        "TP_VAR_DIR": str(tmp_path),
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for the browser tests only
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_secrets(tmp_path: Any) -> None:
    env = {**os.environ, "DEBUG": "0", "TP_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    env.pop("TP_KEY_PEPPER", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_a_new_key_secret_is_not_in_cookies(alice: Any, catalog: None) -> None:
    client = signed_in(alice)
    response = client.post(reverse("keys"), {"name": "cookie-check"})
    secret = response.content.decode().split('data-testid="new-key">')[1].split("<")[0]
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert all(secret not in morsel.value for morsel in client.cookies.values())
