"""The Django admin's login is the portal's (allauth's): staff pass the same rate limits and
the same second factor as everyone, and the admin's own form takes no password at all."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, hotp_value
from django.test import Client
from django.urls import reverse
from playwright.sync_api import Page, expect

from .conftest import PASSWORD

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ADMIN = "/admin/"


def totp_code(secret: str = SECRET) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


@pytest.fixture
def root(make_user: Any) -> Any:
    """Another superuser, with an authenticator app (the operator has no second factor)."""
    user = make_user("root@example.com", staff=True)
    TOTP.activate(user, SECRET)
    return user


def signed_in_user(client: Client) -> Any:
    return client.session.get("_auth_user_id")


def admin_login_by_password(client: Client, email: str, password: str = PASSWORD) -> None:
    """What the admin's own login form posts."""
    client.post(
        reverse("admin:login"),
        {"username": email, "password": password, "next": ADMIN},
    )


def portal_login(
    client: Client, email: str, password: str = PASSWORD, next_url: str = ADMIN
) -> Any:
    return client.post(
        f"{reverse('account_login')}?next={next_url}", {"login": email, "password": password}
    )


def test_the_admins_own_login_form_signs_no_one_in(root: Any, operator: Any) -> None:
    # With a second factor or without: a password alone is never enough.
    for user in (root, operator):
        client = Client()
        admin_login_by_password(client, user.email)
        assert signed_in_user(client) is None
        assert client.get(ADMIN).status_code == 302


def test_the_admin_sends_visitors_to_the_portals_login_and_back(root: Any) -> None:
    client = Client()
    to_admin_login = client.get(ADMIN)
    assert to_admin_login.status_code == 302
    to_login = client.get(to_admin_login["Location"])
    assert to_login.status_code == 302
    path, query = urlsplit(to_login["Location"])[2:4]
    assert path == reverse("account_login") and parse_qs(query) == {"next": [ADMIN]}
    assert client.get(to_login["Location"]).status_code == 200


def test_staff_with_an_authenticator_pass_its_stage_before_the_admin(root: Any) -> None:
    client = Client()
    response = portal_login(client, root.email)
    assert response.status_code == 302 and response["Location"] == reverse("mfa_authenticate")
    assert signed_in_user(client) is None and client.get(ADMIN).status_code == 302

    wrong = client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert wrong.status_code == 200 and signed_in_user(client) is None

    response = client.post(reverse("mfa_authenticate"), {"code": totp_code()})
    assert response.status_code == 302 and response["Location"] == ADMIN
    page = client.get(ADMIN)
    assert page.status_code == 200 and "Site administration" in page.content.decode()


def test_next_brings_staff_back_to_the_admin_page_they_asked_for(operator: Any) -> None:
    client = Client()
    users = reverse("admin:accounts_user_changelist")
    to_admin_login = client.get(users)["Location"]
    to_login = client.get(to_admin_login)["Location"]
    response = client.post(to_login, {"login": operator.email, "password": PASSWORD})
    assert response["Location"] == users
    assert client.get(users).status_code == 200
    # Signed in, the admin's login URL sends staff on to where they were going, or the index.
    assert client.get(f"{reverse('admin:login')}?next={users}")["Location"] == users
    assert client.get(reverse("admin:login"))["Location"] == ADMIN
    assert client.get(f"{reverse('admin:login')}?next=https://evil.example/")["Location"] == ADMIN


def test_signed_in_staff_cannot_become_other_staff_by_password_at_the_admins_login(
    root: Any, operator: Any
) -> None:
    client = Client()
    portal_login(client, operator.email)
    assert signed_in_user(client) == str(operator.pk)
    admin_login_by_password(client, root.email)  # root has a second factor: no way round it
    assert signed_in_user(client) == str(operator.pk)


def test_a_signed_in_user_who_is_not_staff_gets_no_admin(alice: Any) -> None:
    client = Client()
    portal_login(client, alice.email, next_url="/dashboard/")
    assert signed_in_user(client) == str(alice.pk)
    to_admin_login = client.get(ADMIN)
    assert to_admin_login.status_code == 302
    assert client.get(to_admin_login["Location"]).status_code == 403
    assert client.get(reverse("admin:accounts_user_changelist")).status_code == 302


def the_login_the_admin_leads_to(client: Client) -> str:
    url = ADMIN
    while (response := client.get(url)).status_code == 302:
        url = response["Location"]
    assert response.status_code == 200
    return url


def test_failed_admin_logins_are_throttled_like_the_portals(operator: Any) -> None:
    client = Client()
    login = the_login_the_admin_leads_to(client)

    def attempt(password: str) -> Any:
        # The field names of both forms, so that this is a fair test of whichever one it is.
        data = {
            "login": operator.email,
            "username": operator.email,
            "password": password,
            "next": ADMIN,
        }
        return client.post(login, data)

    failures = [attempt("wrong").status_code for _ in range(6)]
    assert set(failures) <= {200, 429}, failures
    response = attempt(PASSWORD)  # the right password, too late
    assert response.status_code in (200, 429)
    assert response.status_code == 429 or "Too many failed login attempts" in (
        response.content.decode()
    )
    assert signed_in_user(client) is None and client.get(ADMIN).status_code == 302


def test_the_throttle_counts_per_address_however_the_address_is_spelt(operator: Any) -> None:
    # Each spelling folds to operator@example.com (fullwidth letters and dot in the domain), and
    # none equals another in lower case: were the limit keyed on the input, each would start
    # afresh.
    spellings = [
        "operator@ｅxample.com",
        "operator@eｘample.com",
        "operator@exａmple.com",
        "operator@example．com",
    ]
    for spelling in spellings * 2:
        portal_login(Client(), spelling, "wrong")  # a new session each time: only the address
    client = Client()
    response = portal_login(client, "operator@examｐle.com")
    assert response.status_code in (200, 429) and signed_in_user(client) is None


# ---- in Chromium --------------------------------------------------------------------------


@pytest.mark.browser
def test_staff_reach_the_admin_in_a_browser_through_the_second_factor(
    page: Page, live_server: Any, root: Any, alice: Any
) -> None:
    base = live_server.url
    page.goto(f"{base}/admin/accounts/user/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=(/|%2F)admin"))
    page.fill("input[name=login]", root.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.fill("input[name=code]", totp_code())
    page.locator("main form button[type=submit]").click()

    # The standard admin, usable by its labels: the user list, a user, a search.
    expect(page).to_have_url(re.compile(r"/admin/accounts/user/$"))
    expect(page.get_by_role("link", name="alice@example.com")).to_be_visible()
    page.fill("#searchbar", "alice")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="alice@example.com").click()
    expect(page.get_by_label("Email address")).to_have_value("alice@example.com")
    page.get_by_role("link", name="Home").first.click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()


@pytest.mark.browser
def test_a_user_who_is_not_staff_is_refused_the_admin_in_a_browser(
    page: Page, live_server: Any, alice: Any
) -> None:
    base = live_server.url
    page.goto(f"{base}/admin/")
    page.fill("input[name=login]", alice.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page.locator("body")).to_contain_text(re.compile("403|Forbidden", re.I))
    page.goto(f"{base}/admin/accounts/user/")
    expect(page.locator("body")).not_to_contain_text("alice@example.com")
