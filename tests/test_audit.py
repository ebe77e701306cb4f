"""The audit log (issue 15): every action is recorded once with its actor, target and network;
no secret ever reaches it; alice's log is hers alone (page, CSV, API, cursors); pages go by
keyset through ties; bad filters are form errors; the admin only reads it."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from accounts import audit
from accounts.models import AuditEvent
from billing.vouchers import make_batch
from keys.models import ApiKey, ManagementKey
from keys.services import issue_key, issue_management_key
from keys.tasks import expire_keys

from .billing_fixtures import delivered, follow_pay_page, payments_on, sim
from .conftest import PASSWORD, reauthenticated, signed_in
from .test_billing_topups import confirmed, start

FIXTURES = (payments_on, sim)  # pytest finds these fixtures by name in this module

A = AuditEvent.Action
HOME = "203.0.113.9"  # alice's address; the log keeps its /24
HOME_NET = "203.0.113.0/24"


def from_home(client: Client) -> Client:
    client.defaults["REMOTE_ADDR"] = HOME
    return client


def events(user: Any, action: str | None = None) -> list[AuditEvent]:
    query = AuditEvent.objects.filter(account=user.account).order_by("created_at", "id")
    return list(query.filter(action=action) if action else query)


def only(user: Any, action: str) -> AuditEvent:
    found = events(user, action)
    assert len(found) == 1, [(e.action, e.target) for e in found]
    return found[0]


def new_secret(body: bytes) -> str:
    return body.decode().split('data-testid="new-key">')[1].split("<")[0]


def everything_stored() -> str:
    """Every column of every audit row, as text."""
    return "\n".join(
        json.dumps(row, default=str)
        for row in AuditEvent.objects.values(
            "actor_label", "action", "target", "network", "details"
        )
    )


# ---- what is recorded ----------------------------------------------------------------------


def test_it_records_each_key_action_once_with_actor_target_and_network(alice: Any) -> None:
    client = from_home(signed_in(alice))
    created = client.post(reverse("keys"), {"name": "ci", "rpm_limit": "60"})
    secret = new_secret(created.content)
    key = ApiKey.objects.get(account=alice.account)
    event = only(alice, A.KEY_CREATED)
    assert (event.actor, event.actor_label, event.network) == (alice, alice.email, HOME_NET)
    assert event.target == f"ci ({key.masked})"
    assert event.details["limits"]["rpm_limit"] == 60

    response = client.post(reverse("key_detail", args=[key.pk]), {"limits-rpm_limit": "120"})
    assert response.status_code == 302
    event = only(alice, A.KEY_LIMITS_CHANGED)
    assert event.details["rpm_limit"] == {"old": 60, "new": 120}
    assert (event.actor, event.network) == (alice, HOME_NET)
    # Routing defaults are an event of their own.
    client.post(
        reverse("key_detail", args=[key.pk]),
        {"limits-rpm_limit": "120", "limits-routing_sort": "price"},
    )
    event = only(alice, A.KEY_ROUTING_CHANGED)
    assert event.details == {"routing": {"old": {}, "new": {"sort": "price"}}}
    assert len(events(alice, A.KEY_LIMITS_CHANGED)) == 1
    # Saving the same limits again changes nothing, and is no event.
    client.post(
        reverse("key_detail", args=[key.pk]),
        {"limits-rpm_limit": "120", "limits-routing_sort": "price"},
    )
    assert len(events(alice, A.KEY_LIMITS_CHANGED)) == 1
    assert len(events(alice, A.KEY_ROUTING_CHANGED)) == 1

    rotated = client.post(reverse("key_rotate", args=[key.pk]), {"grace": "0"})
    new_key = ApiKey.objects.get(account=alice.account, status="active")
    event = only(alice, A.KEY_ROTATED)
    assert event.target == f"ci ({key.masked})"
    assert event.details == {"new_key": new_key.masked, "grace_seconds": 0}
    # One event for the rotation: not a "created" and a "revoked" besides.
    assert len(events(alice, A.KEY_CREATED)) == 1 and not events(alice, A.KEY_REVOKED)

    client.post(reverse("key_revoke", args=[new_key.pk]))
    client.post(reverse("key_revoke", args=[new_key.pk]))  # again: no second event
    event = only(alice, A.KEY_REVOKED)
    assert (event.target, event.actor, event.network) == (
        f"ci ({new_key.masked})",
        alice,
        HOME_NET,
    )

    stored = everything_stored()
    for shown in (secret, new_secret(rotated.content)):
        assert shown.startswith("tp-sk-") and shown not in stored


def test_management_keys_are_recorded_and_their_secrets_are_not(alice: Any) -> None:
    client = from_home(reauthenticated(signed_in(alice)))
    body = client.post(reverse("management_keys"), {"name": "deploy"}).content
    secret = new_secret(body)
    key = ManagementKey.objects.get(account=alice.account)
    event = only(alice, A.MANAGEMENT_KEY_CREATED)
    assert (event.target, event.actor, event.network) == (
        f"deploy ({key.masked})",
        alice,
        HOME_NET,
    )
    client.post(reverse("management_keys"), {"revoke": str(key.pk)})
    client.post(reverse("management_keys"), {"revoke": str(key.pk)})
    assert only(alice, A.MANAGEMENT_KEY_REVOKED).actor == alice
    assert secret.startswith("tp-mk-") and secret not in everything_stored()


def test_the_api_records_its_caller_through_a_management_key(alice: Any) -> None:
    _, secret = issue_management_key(account=alice.account, name="script")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR="2001:db8:1:2::7")
    made = client.post("/api/v1/keys/", {"name": "from-api"}, content_type="application/json")
    assert made.status_code == 201
    key_id = made.json()["id"]
    client.patch(f"/api/v1/keys/{key_id}/", {"rpm_limit": 5}, content_type="application/json")
    client.post(f"/api/v1/keys/{key_id}/revoke/", content_type="application/json")
    for action in (A.KEY_CREATED, A.KEY_LIMITS_CHANGED, A.KEY_REVOKED):
        event = only(alice, action)
        assert (event.actor, event.network) == (alice, "2001:db8:1::/48")
    assert made.json()["secret"] not in everything_stored()


def test_commands_and_the_relay_side_act_as_the_operator(alice: Any) -> None:
    # alice's $10 came from `manage.py credit` (the fixture).
    event = only(alice, A.CREDIT_GRANTED)
    assert (event.actor, event.actor_label, event.network) == (None, "operator", "")
    assert event.details == {"amount": "10"}
    call_command("credit", alice.email, "-2.5", "--note", "goodwill", stdout=io.StringIO())
    latest = events(alice, A.CREDIT_GRANTED)[-1]
    assert latest.details == {"amount": "-2.5", "note": "goodwill"}
    call_command("issuekey", alice.email, "--name", "ops", stdout=io.StringIO())
    assert only(alice, A.KEY_CREATED).actor_label == "operator"
    # An expiry revokes by itself: the system, with its reason.
    ApiKey.objects.filter(account=alice.account).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert expire_keys() == 1
    event = only(alice, A.KEY_REVOKED)
    assert (event.actor_label, event.details) == ("system", {"reason": "expired"})


def test_a_voucher_is_recorded_with_its_last_four_only(alice: Any) -> None:
    batch = make_batch(name="promo", amount=Decimal("5.00"), count=1)
    code = batch.vouchers.get().code  # type: ignore[attr-defined]
    client = from_home(signed_in(alice))
    client.post(reverse("billing_redeem_voucher"), {"code": code})
    event = only(alice, A.VOUCHER_REDEEMED)
    assert (event.target, event.actor, event.network) == (f"…{code[-4:]}", alice, HOME_NET)
    assert event.details == {"amount": "5.000000000"}
    assert code not in everything_stored()


def test_a_top_up_is_recorded_once_when_credited(
    payments_on: Any, alice: Any, alice_client: Client
) -> None:
    payment = start(alice_client, "stripe")
    follow_pay_page(payment.checkout_url, "pay")
    payment = confirmed(payment)
    delivered(payments_on, "payment_intent.succeeded")
    event = only(alice, A.TOPUP_CREDITED)
    assert (event.actor, event.actor_label) == (None, "system")
    assert event.target == payment.receipt_number
    assert event.details == {"amount": "10.000000000", "method": "stripe", "auto_topup": False}


def test_password_and_second_factor_changes_are_recorded(alice: Any) -> None:
    client = from_home(reauthenticated(signed_in(alice)))
    new = "another long passphrase 42"
    response = client.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": new, "password2": new},
    )
    assert response.status_code == 302
    event = only(alice, A.PASSWORD_CHANGED)
    assert (event.actor, event.network, event.details) == (alice, HOME_NET, {"how": "changed"})
    assert new not in everything_stored() and PASSWORD not in everything_stored()

    client.get(reverse("mfa_activate_totp"))
    secret = client.session[SECRET_SESSION_KEY]
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    response = client.post(reverse("mfa_activate_totp"), {"code": code})
    assert response.status_code == 302, response.content
    event = only(alice, A.TWO_FACTOR_ENABLED)  # TOTP; its recovery codes are no event
    assert (event.target, event.actor, event.network) == ("totp", alice, HOME_NET)
    response = client.post(reverse("mfa_deactivate_totp"))
    assert response.status_code == 302
    assert only(alice, A.TWO_FACTOR_DISABLED).target == "totp"
    assert secret not in everything_stored()


def test_a_new_primary_address_is_recorded(alice: Any) -> None:
    from allauth.account.models import EmailAddress

    client = from_home(reauthenticated(signed_in(alice)))
    EmailAddress.objects.create(user=alice, email="alice@new.example", verified=True)
    response = client.post(
        reverse("account_email"), {"action_primary": "", "email": "alice@new.example"}
    )
    assert response.status_code == 302
    event = only(alice, A.EMAIL_CHANGED)
    assert event.details == {"old": "alice@example.com", "new": "alice@new.example"}
    assert event.network == HOME_NET


def test_a_time_zone_change_is_recorded(alice: Any) -> None:
    client = from_home(signed_in(alice))
    client.post(reverse("account_time_zone"), {"time_zone": "Europe/Paris"})
    client.post(reverse("account_time_zone"), {"time_zone": "Europe/Paris"})
    event = only(alice, A.TIME_ZONE_CHANGED)
    assert event.details == {"time_zone": {"old": "", "new": "Europe/Paris"}}


def test_events_are_never_changed_or_deleted_through_the_app(alice: Any) -> None:
    event = only(alice, A.CREDIT_GRANTED)
    event.target = "rewritten"
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).update(target="x")
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).delete()


# ---- reading: the page, the CSV, the API ---------------------------------------------------


def test_the_page_shows_the_log_in_the_readers_zone(alice: Any) -> None:
    alice.time_zone = "Asia/Tokyo"
    alice.save(update_fields=["time_zone"])
    at = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)  # 08:30 on 2 March in Tokyo
    AuditEvent.objects.create(
        account=alice.account,
        actor=alice,
        actor_label=alice.email,
        action=A.KEY_REVOKED,
        target="ci (tp-sk-ab…wxyz)",
        network=HOME_NET,
        created_at=at,
    )
    response = signed_in(alice).get(reverse("audit_log"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "08:30:00" in body and "API key revoked" in body and HOME_NET in body
    assert "Balance adjusted by the operator" in body and "Operator" in body
    assert 'href="/account/audit/"' in body  # in the account menu


def test_bob_sees_none_of_alices_log(alice: Any, bob: Any) -> None:
    issue_key(account=alice.account, name="alices-key", actor=alice)
    bobs = signed_in(bob)
    assert "alices-key" not in bobs.get(reverse("audit_log")).content.decode()
    csv_body = b"".join(bobs.get(reverse("audit_csv")).streaming_content).decode()
    assert "alices-key" not in csv_body and alice.email not in csv_body
    assert bobs.get("/api/v1/audit/").json() == {"data": [], "next": None}
    # A cursor made for alice's log is refused on bob's, on the page and in the API.
    for _ in range(3):
        issue_key(account=alice.account, name="more", actor=alice)
    cursor = audit.page(alice.account, audit.Filters(), per_page=1).older
    assert cursor
    page = bobs.get(reverse("audit_log"), {"cursor": cursor})
    assert page.status_code == 400 and "alices-key" not in page.content.decode()
    api = bobs.get("/api/v1/audit/", {"cursor": cursor})
    assert api.status_code == 400 and "cursor" in api.json()
    forged = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    assert signed_in(alice).get("/api/v1/audit/", {"cursor": forged}).status_code == 400


def _tied(alice: Any, count: int) -> list[int]:
    """``count`` events at one instant: only their ids order them."""
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    return [
        AuditEvent.objects.create(
            account=alice.account,
            actor=alice,
            actor_label=alice.email,
            action=A.KEY_CREATED,
            target=f"k{i}",
            created_at=at,
        ).pk
        for i in range(count)
    ]


def test_keyset_pages_go_through_ties_without_gaps_or_repeats(alice: Any) -> None:
    tied = _tied(alice, 7)
    expected = [
        e.pk
        for e in AuditEvent.objects.filter(account=alice.account).order_by("-created_at", "-id")
    ]
    assert set(tied) <= set(expected)
    seen: list[int] = []
    cursor = None
    while True:
        found = audit.page(alice.account, audit.Filters(), cursor, per_page=3)
        seen += [e.pk for e in found.rows]
        if found.older is None:
            break
        cursor = found.older
    assert seen == expected
    # The API pages the same way.
    client = signed_in(alice)
    seen = []
    params: dict[str, Any] = {"limit": "2"}
    while True:
        body = client.get("/api/v1/audit/", params).json()
        seen += [e["id"] for e in body["data"]]
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
    assert seen == expected


def test_filters_by_action_and_days(alice: Any) -> None:
    _tied(alice, 2)  # on 1 May 2026, 12:00 UTC
    client = signed_in(alice)
    body = client.get(reverse("audit_log"), {"action": "key.created"}).content.decode()
    assert body.count('data-action="key.created"') == 2
    assert 'data-action="credit.granted"' not in body
    day = client.get(reverse("audit_log"), {"since": "2026-05-01", "until": "2026-05-01"})
    assert day.content.decode().count("<tr data-action") == 2
    none = client.get(reverse("audit_log"), {"since": "2026-05-02", "until": "2026-05-31"})
    assert "<tr data-action" not in none.content.decode()
    api = client.get(
        "/api/v1/audit/",
        {"action": "key.created", "since": "2026-05-01T00:00:00Z", "until": "2026-05-02T00:00:00Z"},
    ).json()
    assert [e["target"] for e in api["data"]] == ["k1", "k0"]
    csv_body = b"".join(
        client.get(reverse("audit_csv"), {"action": "credit.granted"}).streaming_content
    ).decode()
    rows = list(csv.reader(io.StringIO(csv_body)))
    assert rows[0] == ["time", "actor", "action", "target", "network", "details"]
    assert [r[2] for r in rows[1:]] == ["credit.granted"]


@pytest.mark.parametrize(
    "query",
    [
        {"action": "key.exploded"},
        {"since": "yesterday"},
        {"since": "2026-05-02", "until": "2026-05-01"},
        {"since": "99999-01-01"},
        {"cursor": "not-a-cursor"},
        {"action": "\x00"},
    ],
)
def test_bad_filters_are_form_errors_not_500s(alice: Any, query: dict[str, str]) -> None:
    client = signed_in(alice)
    assert client.get(reverse("audit_log"), query).status_code == 400
    if "cursor" not in query:
        assert client.get(reverse("audit_csv"), query).status_code == 400
    assert client.get("/api/v1/audit/", query).status_code == 400


def test_api_refuses_bad_api_input(alice: Any) -> None:
    client = signed_in(alice)
    for query in ({"limit": "0"}, {"limit": "1.5"}, {"since": "2026-05-01"}, {"action": ""}):
        assert client.get("/api/v1/audit/", query).status_code == 400
    assert Client().get("/api/v1/audit/").status_code in (401, 403)


def test_the_csv_cannot_run_formulas(alice: Any) -> None:
    issue_key(account=alice.account, name="=HYPERLINK(1)", actor=alice)
    client = signed_in(alice)
    response = client.get(reverse("audit_csv"))
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    targets = [r[3] for r in rows[1:] if r[2] == "key.created"]
    assert targets and all(t.startswith("'=HYPERLINK(1)") for t in targets)


def test_the_data_export_holds_the_log(alice: Any) -> None:
    issue_key(account=alice.account, name="laptop", actor=alice)
    client = reauthenticated(signed_in(alice))
    raw = b"".join(client.get(reverse("account_export")).streaming_content).decode()
    log = json.loads(raw)["audit_log"]
    assert [e["action"] for e in log] == ["credit.granted", "key.created"]
    assert log[1]["actor_label"] == alice.email and log[0]["details"] == {"amount": "10"}


def test_the_audit_page_is_for_signed_in_users(client: Client, alice: Any) -> None:
    response = client.get(reverse("audit_log"))
    assert response.status_code == 302 and "login" in response["Location"]
    assert client.get(reverse("audit_csv")).status_code == 302


def test_can_read_is_the_accounts_own_users_today(alice: Any, bob: Any) -> None:
    assert audit.can_read(alice, alice.account)
    assert not audit.can_read(bob, alice.account)


# ---- the admin -----------------------------------------------------------------------------


def test_the_admin_reads_the_log_and_changes_nothing(alice: Any, operator: Any) -> None:
    client = Client()
    client.force_login(operator)
    event = only(alice, A.CREDIT_GRANTED)
    listing = client.get(
        reverse("admin:accounts_auditevent_changelist"), {"action": "credit.granted"}
    )
    assert listing.status_code == 200 and alice.email in listing.content.decode()
    assert client.get(reverse("admin:accounts_auditevent_add")).status_code == 403
    view = client.get(reverse("admin:accounts_auditevent_change", args=[event.pk]))
    assert view.status_code == 200 and b'name="_save"' not in view.content
    posted = client.post(
        reverse("admin:accounts_auditevent_change", args=[event.pk]), {"target": "x"}
    )
    assert posted.status_code == 403
    assert (
        client.get(reverse("admin:accounts_auditevent_delete", args=[event.pk])).status_code == 403
    )
    event.refresh_from_db()
    assert event.target.startswith("ledger #")


def test_details_keep_money_exact(alice: Any) -> None:
    event = audit.record(
        account=alice.account,
        action=A.CREDIT_GRANTED,
        details={"amount": Decimal("0.000000001"), "when": datetime(2026, 1, 1, tzinfo=UTC)},
    )
    event.refresh_from_db()
    assert event.details == {"amount": "0.000000001", "when": "2026-01-01T00:00:00+00:00"}
    with pytest.raises(ValueError):
        audit.record(account=alice.account, action="key.exploded")
    assert timedelta(0) <= datetime.now(UTC) - event.created_at < timedelta(minutes=1)
