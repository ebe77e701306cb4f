"""Organizations (issue 15): a shared balance, roles, invitations, members' keys and caps.

alice owns "Acme"; bob is a member, carol does its billing, dave is an outsider. Each can do
exactly what the role allows, on every page and API endpoint of the organization."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from django.core import mail, signing
from django.core.management import call_command
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from accounts import organizations, roles
from accounts.models import Account, AuditEvent, Invitation, Membership, Role
from billing import ledger
from billing.models import LedgerEntry, UsageEvent
from keys.models import ApiKey, ManagementKey
from keys.services import issue_key, issue_management_key

from .conftest import relay_redis, wait_until
from .test_holds import hold_of
from .test_relay import post


@pytest.fixture
def carol(make_user: Any) -> Any:
    return make_user("carol@example.com")


@pytest.fixture
def dave(make_user: Any) -> Any:
    return make_user("dave@example.com")


def join(organization: Any, user: Any, role: str, inviter: Any) -> Membership:
    invitation = organizations.invite(
        organization=organization, email=user.email, role=role, actor=inviter
    )
    return organizations.accept(invitation=invitation, user=user)


@pytest.fixture
def acme(alice: Any, bob: Any, carol: Any) -> Any:
    organization = organizations.create(owner=alice, name="Acme")
    join(organization, bob, Role.MEMBER, alice)
    join(organization, carol, Role.BILLING, alice)
    return organization


def acting_for(user: Any, organization: Any) -> Client:
    client = Client()
    client.force_login(user)
    response = client.post(
        reverse("switch_account"), {"account": organization.account.pk, "next": "/dashboard/"}
    )
    assert response.status_code == 302
    return client


# ---- making one, and what it starts with ---------------------------------------------------


def test_an_organization_has_its_own_empty_account_and_one_owner(
    acme: Any, alice: Any, settings: Any
) -> None:
    account = acme.account
    assert account.user_id is None and account.organization_id == acme.pk
    assert ledger.balance(account) == 0
    assert not LedgerEntry.objects.filter(account=account).exists()
    assert list(acme.memberships.filter(role=Role.OWNER).values_list("user", flat=True)) == [
        alice.pk
    ]
    assert roles.role_in(alice, account) == Role.OWNER
    assert roles.role_in(alice, alice.account) == Role.OWNER


def test_no_signup_credit_is_minted_by_making_organizations(alice: Any, settings: Any) -> None:
    settings.TP_SIGNUP_CREDIT = Decimal("1.50")
    organization = organizations.create(owner=alice, name="Free money?")
    assert ledger.balance(organization.account) == 0


def test_the_page_makes_one_and_the_switcher_acts_for_it(alice_client: Client) -> None:
    response = alice_client.post(reverse("organizations"), {"name": "  Widgets  "})
    assert response.status_code == 302
    account = Account.objects.get(organization__name="Widgets")
    page = alice_client.get(reverse("dashboard")).content.decode()
    assert 'id="account-switch"' in page
    assert re.search(rf'<option value="{account.pk}" selected>Widgets</option>', page)
    alice_client.post(reverse("switch_account"), {"account": "personal", "next": "/dashboard/"})
    page = alice_client.get(reverse("dashboard")).content.decode()
    assert re.search(r'<option value="personal" selected>', page)


def test_a_blank_name_is_a_form_error(alice_client: Client) -> None:
    response = alice_client.post(reverse("organizations"), {"name": "   "})
    assert response.status_code == 400
    assert not Account.objects.filter(organization__isnull=False).exists()


def test_an_outsider_cannot_switch_to_it(acme: Any, dave: Any) -> None:
    client = Client()
    client.force_login(dave)
    client.post(reverse("switch_account"), {"account": acme.account.pk, "next": "/dashboard/"})
    assert client.session.get("tp_account") is None
    assert client.get(reverse("organization", args=[acme.pk])).status_code == 404


def test_an_unsafe_next_is_not_followed(alice_client: Client) -> None:
    response = alice_client.post(
        reverse("switch_account"), {"account": "personal", "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("dashboard")


# ---- the roles, page by page -----------------------------------------------------------------

ALLOWED = {"alice": 200, "bob": 200, "carol": 200}


def _pages(acme: Any, alice_key: ApiKey, bob_key: ApiKey) -> list[tuple[str, dict[str, int]]]:
    return [
        (reverse("dashboard"), ALLOWED),
        (reverse("keys"), {"alice": 200, "bob": 200, "carol": 403}),
        (reverse("key_detail", args=[alice_key.pk]), {"alice": 200, "bob": 404, "carol": 403}),
        (reverse("key_detail", args=[bob_key.pk]), {"alice": 200, "bob": 200, "carol": 403}),
        (reverse("usage"), {"alice": 200, "bob": 200, "carol": 403}),
        (reverse("usage_requests"), {"alice": 200, "bob": 200, "carol": 403}),
        (reverse("usage_export"), {"alice": 200, "bob": 200, "carol": 403}),
        (reverse("usage_requests_csv"), {"alice": 200, "bob": 200, "carol": 403}),
        (reverse("billing"), {"alice": 200, "bob": 403, "carol": 200}),
        (reverse("billing_settings"), {"alice": 200, "bob": 403, "carol": 200}),
        (reverse("audit_log"), {"alice": 200, "bob": 403, "carol": 403}),
        (reverse("audit_csv"), {"alice": 200, "bob": 403, "carol": 403}),
        (reverse("organization", args=[acme.pk]), ALLOWED),
        (reverse("provider_keys"), {"alice": 200, "bob": 403, "carol": 403}),
    ]


def test_each_role_opens_exactly_its_pages(acme: Any, alice: Any, bob: Any, carol: Any) -> None:
    alice_key, _ = issue_key(account=acme.account, name="alice's", actor=alice)
    bob_key, _ = issue_key(account=acme.account, name="bob's", actor=bob)
    clients = {
        name: acting_for(user, acme)
        for name, user in (("alice", alice), ("bob", bob), ("carol", carol))
    }
    for url, expected in _pages(acme, alice_key, bob_key):
        for name, status in expected.items():
            got = clients[name].get(url).status_code
            assert got == status, (url, name, got)


def test_the_dashboard_shows_what_the_role_sees(
    acme: Any, alice: Any, bob: Any, carol: Any
) -> None:
    ledger.adjust(account=acme.account, amount=Decimal("12.34"))
    pages = {
        name: acting_for(user, acme).get(reverse("dashboard")).content.decode()
        for name, user in (("alice", alice), ("bob", bob), ("carol", carol))
    }
    assert 'data-testid="balance">$12.34' in pages["alice"]
    assert 'data-testid="balance">$12.34' in pages["carol"]
    assert 'data-testid="balance"' not in pages["bob"]
    assert "Acme" in pages["bob"]


def test_only_the_owner_and_admins_manage_members(
    acme: Any, alice: Any, bob: Any, carol: Any, dave: Any
) -> None:
    url = reverse("organization", args=[acme.pk])
    invite = {"action": "invite", "email": "erin@example.com", "role": "member"}
    for user in (bob, carol):
        client = acting_for(user, acme)
        page = client.get(url).content.decode()
        assert 'data-testid="members"' not in page
        assert client.post(url, invite).status_code == 403
        bob_membership = acme.memberships.get(user=bob)
        assert (
            client.post(url, {"action": "remove", "member": bob_membership.pk}).status_code == 403
        )
        assert (
            client.post(url, {"action": "transfer", "member": bob_membership.pk}).status_code == 403
        )
    outsider = Client()
    outsider.force_login(dave)
    assert outsider.post(url, invite).status_code == 404
    assert not Invitation.objects.filter(email="erin@example.com").exists()

    owner = acting_for(alice, acme)
    assert 'data-testid="members"' in owner.get(url).content.decode()
    assert owner.post(url, invite).status_code == 302
    assert Invitation.objects.filter(email="erin@example.com", status="pending").exists()
    # An admin manages members too (but not the owner's settings).
    organizations.change_role(
        membership=acme.memberships.get(user=bob), role=Role.ADMIN, actor=alice
    )
    admin = acting_for(bob, acme)
    carol_membership = acme.memberships.get(user=carol)
    response = admin.post(
        url,
        {
            "action": "cap",
            "member": carol_membership.pk,
            f"c{carol_membership.pk}-spend_cap": "5",
            f"c{carol_membership.pk}-spend_cap_period": "month",
        },
    )
    assert response.status_code == 302
    assert acme.memberships.get(user=carol).spend_cap == Decimal(5)
    assert admin.post(url, {"action": "rename", "name": "Mine"}).status_code == 403


def test_bad_member_forms_are_400s_not_500s(acme: Any, alice: Any, bob: Any) -> None:
    url = reverse("organization", args=[acme.pk])
    owner = acting_for(alice, acme)
    bob_m = acme.memberships.get(user=bob)
    for data in (
        {"action": "invite", "email": "not an address", "role": "member"},
        {"action": "invite", "email": "x@example.com", "role": "owner"},
        {
            "action": "cap",
            "member": bob_m.pk,
            f"c{bob_m.pk}-spend_cap": "-1",
            f"c{bob_m.pk}-spend_cap_period": "month",
        },
        {
            "action": "cap",
            "member": bob_m.pk,
            f"c{bob_m.pk}-spend_cap": "abc",
            f"c{bob_m.pk}-spend_cap_period": "month",
        },
        {"action": "role", "member": bob_m.pk, f"m{bob_m.pk}-role": "owner"},
        {"action": "rename", "name": "\x00"},
        {"action": "transfer", "member": "999999"},
    ):
        assert owner.post(url, data).status_code == 400, data
    assert owner.post(url, {"action": "remove", "member": "x"}).status_code == 404
    assert acme.memberships.get(user=bob).role == Role.MEMBER


# ---- the roles, endpoint by endpoint ---------------------------------------------------------


def test_each_role_calls_exactly_its_endpoints(
    acme: Any, alice: Any, bob: Any, carol: Any, dave: Any
) -> None:
    alice_key, _ = issue_key(account=acme.account, name="alice's", actor=alice)
    bob_key, _ = issue_key(account=acme.account, name="bob's", actor=bob)
    clients = {
        name: acting_for(user, acme)
        for name, user in (("alice", alice), ("bob", bob), ("carol", carol))
    }
    expected = {
        "/api/v1/keys/": {"alice": 200, "bob": 200, "carol": 403},
        f"/api/v1/keys/{alice_key.pk}/": {"alice": 200, "bob": 404, "carol": 403},
        f"/api/v1/keys/{bob_key.pk}/": {"alice": 200, "bob": 200, "carol": 403},
        "/api/v1/usage/": {"alice": 200, "bob": 200, "carol": 403},
        "/api/v1/usage/requests/": {"alice": 200, "bob": 200, "carol": 403},
        "/api/v1/balance/": {"alice": 200, "bob": 403, "carol": 200},
        "/api/v1/audit/": {"alice": 200, "bob": 403, "carol": 403},
        "/api/v1/provider-keys/": {"alice": 200, "bob": 403, "carol": 403},
    }
    for url, statuses in expected.items():
        for name, status in statuses.items():
            got = clients[name].get(url).status_code
            assert got == status, (url, name, got)
    listed = {k["id"] for k in clients["bob"].get("/api/v1/keys/").json()}
    assert listed == {bob_key.pk}
    assert {k["id"] for k in clients["alice"].get("/api/v1/keys/").json()} == {
        alice_key.pk,
        bob_key.pk,
    }
    # dave, acting for himself, sees none of it.
    outsider = Client()
    outsider.force_login(dave)
    assert outsider.get("/api/v1/keys/").json() == []
    assert outsider.get(f"/api/v1/keys/{bob_key.pk}/").status_code == 404
    # A key made by bob through the API is the organization's, made by bob.
    made = clients["bob"].post("/api/v1/keys/", {"name": "ci"}, content_type="application/json")
    assert made.status_code == 201
    key = ApiKey.objects.get(pk=made.json()["id"])
    assert key.account_id == acme.account.pk and key.created_by_id == bob.pk


def test_a_management_key_acts_with_its_makers_role(acme: Any, alice: Any, carol: Any) -> None:
    _, secret = issue_management_key(account=acme.account, name="finance", actor=carol)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    client = Client()
    assert client.get("/api/v1/balance/", **headers).status_code == 200
    assert client.get("/api/v1/keys/", **headers).status_code == 403
    assert client.get("/api/v1/audit/", **headers).status_code == 403
    organizations.leave(membership=acme.memberships.get(user=carol))
    assert ManagementKey.objects.get(name="finance").revoked_at is not None
    assert client.get("/api/v1/balance/", **headers).status_code == 401


# ---- invitations -------------------------------------------------------------------------------


def _link(message: Any) -> str:
    found = re.search(r"http\S+/invitations/(\S+)/", message.body)
    assert found, message.body
    return f"/invitations/{found.group(1)}/"


def test_an_invitation_is_mailed_as_a_signed_link_for_that_address(
    acme: Any, alice: Any, make_user: Any, dave: Any
) -> None:
    mail.outbox.clear()
    owner = acting_for(alice, acme)
    url = reverse("organization", args=[acme.pk])
    assert (
        owner.post(
            url, {"action": "invite", "email": "Erin@Example.com", "role": "billing"}
        ).status_code
        == 302
    )
    (message,) = mail.outbox
    assert message.to == ["erin@example.com"]
    link = _link(message)
    # Signed out: the page offers sign-in and sign-up; a POST goes to sign in.
    anonymous = Client()
    page = anonymous.get(link)
    assert page.status_code == 200 and "Acme" in page.content.decode()
    assert anonymous.post(link)["Location"].startswith(reverse("account_login"))
    # Another address cannot accept it.
    wrong = Client()
    wrong.force_login(dave)
    assert wrong.post(link).status_code == 400
    assert not acme.memberships.filter(user=dave).exists()
    # The invited address can, once.
    erin = make_user("erin@example.com")
    client = Client()
    client.force_login(erin)
    assert client.post(link)["Location"] == reverse("dashboard")
    assert acme.memberships.get(user=erin).role == Role.BILLING
    assert client.session["tp_account"] == acme.account.pk
    assert Client().get(link).status_code == 404  # answered: dead


def test_forged_revoked_and_expired_links_are_dead(
    acme: Any, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    invitation = organizations.invite(
        organization=acme, email="erin@example.com", role="member", actor=alice
    )
    token = organizations.invitation_token(invitation)
    client = Client()
    assert client.get(f"/invitations/{token}x/").status_code == 404
    assert client.get("/invitations/nonsense/").status_code == 404
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() + 8 * 86400)
    assert "expired" in client.get(f"/invitations/{token}/").content.decode()
    monkeypatch.setattr(signing.time, "time", real_time)
    assert client.get(f"/invitations/{token}/").status_code == 200
    organizations.revoke_invitation(invitation=invitation, actor=alice)
    assert client.get(f"/invitations/{token}/").status_code == 404


def test_a_second_invitation_replaces_the_first(acme: Any, alice: Any) -> None:
    first = organizations.invite(
        organization=acme, email="erin@example.com", role="member", actor=alice
    )
    organizations.invite(organization=acme, email="erin@example.com", role="admin", actor=alice)
    first.refresh_from_db()
    assert first.status == Invitation.Status.REVOKED
    assert (
        Invitation.objects.filter(email="erin@example.com", status="pending").get().role == "admin"
    )


def test_members_cannot_be_invited_again(acme: Any, alice: Any, bob: Any) -> None:
    with pytest.raises(organizations.OrganizationError):
        organizations.invite(organization=acme, email=bob.email, role="member", actor=alice)


# ---- leaving, removing, transferring ------------------------------------------------------------


def test_removing_a_member_revokes_their_keys_there_only(acme: Any, alice: Any, bob: Any) -> None:
    org_key, _ = issue_key(account=acme.account, name="bob's", actor=bob)
    own_key, _ = issue_key(account=bob.account, name="personal", actor=bob)
    alice_key, _ = issue_key(account=acme.account, name="alice's", actor=alice)
    owner = acting_for(alice, acme)
    bob_m = acme.memberships.get(user=bob)
    assert (
        owner.post(
            reverse("organization", args=[acme.pk]), {"action": "remove", "member": bob_m.pk}
        ).status_code
        == 302
    )
    assert ApiKey.objects.get(pk=org_key.pk).status == ApiKey.Status.REVOKED
    assert ApiKey.objects.get(pk=own_key.pk).status == ApiKey.Status.ACTIVE
    assert ApiKey.objects.get(pk=alice_key.pk).status == ApiKey.Status.ACTIVE
    assert not relay_redis().exists(f"tp:key:{org_key.digest}")
    # bob is back on his own account at his next request.
    client = Client()
    client.force_login(bob)
    session = client.session
    session["tp_account"] = acme.account.pk
    session.save()
    assert client.get(reverse("keys")).status_code == 200
    assert client.session.get("tp_account") is None


def test_the_owner_cannot_leave_or_be_removed_and_transfers_instead(
    acme: Any, alice: Any, bob: Any
) -> None:
    alice_m = acme.memberships.get(user=alice)
    with pytest.raises(organizations.OrganizationError):
        organizations.leave(membership=alice_m)
    with pytest.raises(organizations.OrganizationError):
        organizations.remove(membership=alice_m, actor=alice)
    owner = acting_for(alice, acme)
    bob_m = acme.memberships.get(user=bob)
    url = reverse("organization", args=[acme.pk])
    assert owner.post(url, {"action": "transfer", "member": bob_m.pk}).status_code == 302
    assert roles.role_in(bob, acme.account) == Role.OWNER
    assert roles.role_in(alice, acme.account) == Role.ADMIN
    assert acme.memberships.filter(role=Role.OWNER).count() == 1
    assert acting_for(alice, acme).post(url, {"action": "leave"}).status_code == 302
    assert roles.role_in(alice, acme.account) is None


def test_every_change_is_in_the_organizations_audit_log(
    acme: Any, alice: Any, bob: Any, carol: Any
) -> None:
    bob_m = acme.memberships.get(user=bob)
    organizations.change_role(membership=bob_m, role=Role.ADMIN, actor=alice)
    organizations.set_cap(membership=bob_m, cap=Decimal("2.5"), period="day", actor=alice)
    organizations.transfer(organization=acme, to=bob_m, actor=alice)
    organizations.remove(membership=acme.memberships.get(user=carol), actor=bob)
    actions = list(
        AuditEvent.objects.filter(account=acme.account)
        .order_by("id")
        .values_list("action", "actor_label", "target")
    )
    assert actions == [
        ("organization.created", "alice@example.com", "Acme"),
        ("invitation.sent", "alice@example.com", "bob@example.com"),
        ("invitation.accepted", "bob@example.com", "bob@example.com"),
        ("member.added", "bob@example.com", "bob@example.com"),
        ("invitation.sent", "alice@example.com", "carol@example.com"),
        ("invitation.accepted", "carol@example.com", "carol@example.com"),
        ("member.added", "carol@example.com", "carol@example.com"),
        ("member.role_changed", "alice@example.com", "bob@example.com"),
        ("member.cap_changed", "alice@example.com", "bob@example.com"),
        ("ownership.transferred", "alice@example.com", "bob@example.com"),
        ("member.removed", "bob@example.com", "carol@example.com"),
    ]
    # The owner and admins read it; the billing member and outsiders don't.
    from accounts import audit

    assert audit.can_read(bob, acme.account) and audit.can_read(alice, acme.account)
    assert not audit.can_read(carol, acme.account)


def test_deleting_a_user_leaves_their_organizations(acme: Any, alice: Any, bob: Any) -> None:
    from portal import account as account_service

    key, _ = issue_key(account=acme.account, name="bob's", actor=bob)
    account_service.delete(bob)
    assert not acme.memberships.filter(user=bob).exists()
    assert ApiKey.objects.get(pk=key.pk).status == ApiKey.Status.REVOKED
    with pytest.raises(organizations.OrganizationError):
        account_service.delete(alice)  # she owns Acme, which has carol too


def test_a_member_sees_only_their_own_keys_usage(acme: Any, alice: Any, bob: Any) -> None:
    from billing.usage import record_batch

    alice_key, _ = issue_key(account=acme.account, name="alice's", actor=alice)
    bob_key, _ = issue_key(account=acme.account, name="bob's", actor=bob)
    ledger.adjust(account=acme.account, amount=Decimal(5))
    now = time.time()
    events = [
        {
            "request_id": f"req-{who}",
            "account": acme.account.pk,
            "key": key.pk,
            "model": "mistral-small",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": cost,
            "started_at": now,
        }
        for who, key, cost in (("alice", alice_key, "0.25"), ("bob", bob_key, "0.5"))
    ]
    record_batch(events)
    bob_client = acting_for(bob, acme)
    log = bob_client.get("/api/v1/usage/requests/").json()["data"]
    assert [row["request_id"] for row in log] == ["req-bob"]
    assert bob_client.get("/api/v1/usage/requests/req-alice/").status_code == 404
    assert bob_client.get(reverse("usage_request", args=["req-alice"])).status_code == 404
    usage = bob_client.get("/api/v1/usage/?group_by=none").json()
    assert Decimal(usage["totals"]["cost"]) == Decimal("0.5")
    alice_usage = acting_for(alice, acme).get("/api/v1/usage/?group_by=none").json()
    assert Decimal(alice_usage["totals"]["cost"]) == Decimal("0.75")


# ---- the relay: one balance, three members, and a member's cap -----------------------------------


def _race(
    url: str, bodies: list[tuple[str, dict[str, Any]]], headers: dict[str, str]
) -> list[tuple[str, int]]:
    async def run() -> list[tuple[str, int]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(secret: str, body: dict[str, Any]) -> tuple[str, int]:
                async with session.post(
                    url,
                    data=json.dumps(body),
                    headers={"Authorization": f"Bearer {secret}", **headers},
                ) as response:
                    await response.read()
                    return secret, response.status

            return list(await asyncio.gather(*(one(s, b) for s, b in bodies)))

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


HEAVY = {
    "x-demo-latency-ms": "300",
    "x-demo-prompt-tokens": "50000000",  # far above the hold: each request costs its hold
    "x-demo-completion-tokens": "16",
}
BODY = {"model": "mistral-small", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}


@pytest.mark.usefixtures("catalog")
def test_three_members_race_for_a_balance_that_pays_exactly_n(
    relay: Any, worker: Any, acme: Any, alice: Any, bob: Any, make_user: Any
) -> None:
    erin = make_user("erin@example.com")
    join(acme, erin, Role.ADMIN, alice)
    held = hold_of(BODY, "mistral-small")
    ledger.adjust(account=acme.account, amount=held * 4)
    secrets = [
        issue_key(account=acme.account, name=u.email, actor=u)[1] for u in (alice, bob, erin)
    ]
    results = _race(
        f"{relay.base_url}/chat/completions", [(s, BODY) for s in secrets for _ in range(8)], HEAVY
    )
    statuses = [status for _, status in results]
    assert statuses.count(200) == 4, statuses
    assert set(statuses) <= {200, 402}
    wait_until(lambda: UsageEvent.objects.filter(account=acme.account).count() == 4, timeout=20)
    assert UsageEvent.objects.filter(account=acme.account).aggregate(s=Sum("cost"))["s"] == held * 4
    assert ledger.balance(acme.account) == 0
    call_command("reconcile", stdout=io.StringIO())


@pytest.mark.usefixtures("catalog")
def test_a_members_cap_holds_across_their_keys_under_the_same_race(
    relay: Any, worker: Any, acme: Any, alice: Any, bob: Any
) -> None:
    held = hold_of(BODY, "mistral-small")
    ledger.adjust(account=acme.account, amount=held * 40)
    bob_keys = [issue_key(account=acme.account, name=f"bob {n}", actor=bob)[1] for n in range(3)]
    _, alice_secret = issue_key(account=acme.account, name="alice", actor=alice)
    organizations.set_cap(
        membership=acme.memberships.get(user=bob), cap=held * 2, period="day", actor=alice
    )
    record = wait_until(
        lambda: (
            (raw := relay_redis().get(f"tp:key:{ApiKey.objects.get(name='bob 0').digest}"))
            and json.loads(raw).get("mcap")
        )
    )
    assert record
    bodies = [(s, BODY) for s in bob_keys for _ in range(6)] + [(alice_secret, BODY)] * 3
    results = _race(f"{relay.base_url}/chat/completions", bodies, HEAVY)
    bob_statuses = [status for secret, status in results if secret in bob_keys]
    assert bob_statuses.count(200) == 2, bob_statuses
    assert set(bob_statuses) <= {200, 402}
    assert [status for secret, status in results if secret == alice_secret] == [200] * 3
    wait_until(lambda: UsageEvent.objects.filter(account=acme.account).count() == 5, timeout=20)
    bob_spent = UsageEvent.objects.filter(key__created_by=bob).aggregate(s=Sum("cost"))["s"]
    assert bob_spent == held * 2
    # The refusal names the member's cap.
    status, _, error = post(f"{relay.base_url}/chat/completions", BODY, key=bob_keys[0])
    assert status == 402 and error["error"]["code"] == "member_spend_cap_reached"


@pytest.mark.usefixtures("catalog")
def test_a_removed_members_key_is_refused_by_the_relay_within_a_second(
    relay: Any, acme: Any, alice: Any, bob: Any
) -> None:
    ledger.adjust(account=acme.account, amount=Decimal(1))
    _, secret = issue_key(account=acme.account, name="bob's", actor=bob)
    url = f"{relay.base_url}/chat/completions"
    assert post(url, BODY, key=secret)[0] == 200
    organizations.remove(membership=acme.memberships.get(user=bob), actor=alice)
    removed = time.monotonic()
    wait_until(lambda: post(url, BODY, key=secret)[0] == 401, timeout=1.0, interval=0.02)
    assert time.monotonic() - removed < 1.0


def test_each_role_changes_exactly_the_keys_it_may(
    acme: Any, alice: Any, bob: Any, carol: Any
) -> None:
    alice_key, _ = issue_key(account=acme.account, name="alice's", actor=alice)
    bob_key, _ = issue_key(account=acme.account, name="bob's", actor=bob)
    other_bob_key, _ = issue_key(account=acme.account, name="bob's second", actor=bob)
    clients = {u.email: acting_for(u, acme) for u in (alice, bob, carol)}
    assert clients[carol.email].post(reverse("key_revoke", args=[bob_key.pk])).status_code == 403
    assert clients[bob.email].post(reverse("key_revoke", args=[alice_key.pk])).status_code == 404
    assert clients[bob.email].post(reverse("key_rotate", args=[alice_key.pk])).status_code == 404
    assert ApiKey.objects.get(pk=alice_key.pk).status == ApiKey.Status.ACTIVE
    assert clients[bob.email].post(reverse("key_revoke", args=[bob_key.pk])).status_code == 302
    assert (
        clients[alice.email].post(reverse("key_revoke", args=[other_bob_key.pk])).status_code == 302
    )
    assert not ApiKey.objects.filter(account=acme.account, created_by=bob, status="active").exists()


def test_management_keys_page_is_for_the_owner_admins_and_billing(
    acme: Any, alice: Any, bob: Any, carol: Any
) -> None:
    from .conftest import reauthenticated, signed_in

    url = reverse("management_keys")
    for user, status in ((alice, 200), (bob, 403), (carol, 200)):
        client = reauthenticated(signed_in(user))
        client.post(reverse("switch_account"), {"account": acme.account.pk})
        assert client.get(url).status_code == status, user.email
    client = reauthenticated(signed_in(carol))
    client.post(reverse("switch_account"), {"account": acme.account.pk})
    client.post(url, {"name": "finance"})
    key = ManagementKey.objects.get(name="finance")
    assert key.account_id == acme.account.pk and key.created_by_id == carol.pk
