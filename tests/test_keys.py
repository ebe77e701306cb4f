"""Keys: limits, editing, rotation, management keys, the JSON API and leaked-key reports —
each with a second user (bob) who must not see or change alice's keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core import keyformat, state
from keys.models import ApiKey, ManagementKey
from keys.services import issue_key, issue_management_key

from .conftest import reauthenticated, signed_in

pytestmark = pytest.mark.usefixtures("catalog")


def redis_record(redis_client: Any, key: ApiKey) -> dict[str, Any] | None:
    raw = redis_client.get(state.key_record(key.digest))
    return orjson.loads(raw) if raw else None


# ---- the pages ------------------------------------------------------------------------------


def test_it_creates_a_key_with_limits(alice: Any, redis_client: Any) -> None:
    response = signed_in(alice).post(
        reverse("keys"),
        {
            "name": "ci",
            "allowed_models": ["mistral-small", "codestral"],
            "allowed_ips": "203.0.113.7\n2001:db8::/32",
            "rpm_limit": "60",
            "tpm_limit": "100000",
            "spend_cap": "12.5",
            "spend_cap_period": "week",
        },
    )
    assert 'data-testid="new-key"' in response.content.decode()
    key = ApiKey.objects.get(account=alice.account)
    assert key.allowed_models == ["mistral-small", "codestral"]
    assert key.allowed_ips == ["203.0.113.7/32", "2001:db8::/32"]
    assert (key.rpm_limit, key.tpm_limit, key.spend_cap, key.spend_cap_period) == (
        60,
        100000,
        Decimal("12.5"),
        "week",
    )
    record = redis_record(redis_client, key)
    assert record is not None
    assert record["models"] == ["mistral-small", "codestral"] and record["rpm"] == 60
    assert record["cap"] == 12_500_000_000 and record["cap_period"] == "week"


@pytest.mark.parametrize(
    "field",
    [
        {"allowed_ips": "not-an-ip"},
        {"allowed_models": ["no-such-model"]},
        {"rpm_limit": "0"},
        {"spend_cap": "-1"},
        {"expires_at": "2000-01-01T00:00"},
    ],
)
def test_invalid_limits_create_nothing(alice: Any, field: dict[str, Any]) -> None:
    response = signed_in(alice).post(reverse("keys"), {"name": "bad", **field})
    assert response.status_code == 200
    assert not ApiKey.objects.exists()


def test_limits_are_edited_in_place_with_htmx(alice: Any, redis_client: Any) -> None:
    key, _ = issue_key(account=alice.account, name="edit")
    response = signed_in(alice).post(
        reverse("key_detail", args=[key.pk]),
        {
            "limits-rpm_limit": "5",
            "limits-spend_cap_period": "day",
            "limits-allowed_models": ["gpt-4o"],
        },
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="limits-form"' in body and "<html" not in body
    assert 'data-testid="limits-saved"' in body
    key.refresh_from_db()
    assert key.rpm_limit == 5 and key.allowed_models == ["gpt-4o"]
    assert redis_record(redis_client, key)["models"] == ["gpt-4o"]


def test_the_key_page_shows_its_usage(alice: Any) -> None:
    key, _ = issue_key(account=alice.account, name="mine")
    body = signed_in(alice).get(reverse("key_detail", args=[key.pk])).content.decode()
    assert key.masked in body and "key-chart" in body


def test_rotation_revokes_at_once_or_after_a_grace_period(alice: Any, redis_client: Any) -> None:
    client = signed_in(alice)
    old, _ = issue_key(account=alice.account, name="rotating", limits={"rpm_limit": 7})
    response = client.post(reverse("key_rotate", args=[old.pk]), {"grace": "0"})
    assert 'data-testid="new-key"' in response.content.decode()
    old.refresh_from_db()
    assert not old.is_active and old.replaced_by is not None
    assert old.replaced_by.rpm_limit == 7 and old.replaced_by.name == "rotating"
    assert redis_record(redis_client, old) is None

    current = old.replaced_by
    client.post(reverse("key_rotate", args=[current.pk]), {"grace": "3600"})
    current.refresh_from_db()
    assert current.is_active
    assert (
        timezone.now() + timedelta(minutes=59)
        < current.expires_at
        <= timezone.now() + timedelta(hours=1)
    )
    assert redis_record(redis_client, current)["expires"] == current.expires_at.timestamp()


def test_bob_cannot_see_or_change_alices_keys(alice: Any, bob: Any) -> None:
    key, _ = issue_key(account=alice.account, name="alices")
    client = signed_in(bob)
    assert key.masked not in client.get(reverse("keys")).content.decode()
    assert client.get(reverse("key_detail", args=[key.pk])).status_code == 404
    assert (
        client.post(reverse("key_detail", args=[key.pk]), {"limits-rpm_limit": "1"}).status_code
        == 404
    )
    assert client.post(reverse("key_rotate", args=[key.pk]), {"grace": "0"}).status_code == 404
    assert client.post(reverse("key_revoke", args=[key.pk])).status_code == 404
    key.refresh_from_db()
    assert key.is_active and key.rpm_limit is None and key.replaced_by is None


def test_state_changes_need_post_and_csrf(alice: Any) -> None:
    key, _ = issue_key(account=alice.account, name="csrf")
    client = signed_in(alice, csrf=True)
    assert client.get(reverse("key_rotate", args=[key.pk])).status_code == 405
    assert client.post(reverse("key_revoke", args=[key.pk])).status_code == 403
    assert client.post(reverse("keys"), {"name": "x"}).status_code == 403
    key.refresh_from_db()
    assert key.is_active


def test_management_keys_need_a_fresh_password(alice: Any) -> None:
    client = Client()
    client.force_login(alice)  # signed in long ago, as far as the session knows
    response = client.get(reverse("management_keys"))
    assert response.status_code == 302 and "reauthenticate" in response["Location"]
    fresh = reauthenticated(signed_in(alice))
    body = fresh.post(reverse("management_keys"), {"name": "deploy"}).content.decode()
    secret = body.split('data-testid="new-key">')[1].split("<")[0]
    assert secret.startswith("tp-mk-")
    assert ManagementKey.objects.get(account=alice.account).digest != secret


# ---- the JSON API ---------------------------------------------------------------------------


def bearer(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def test_the_api_manages_keys_with_a_management_key(alice: Any, redis_client: Any) -> None:
    _, secret = issue_management_key(account=alice.account, name="script")
    client = bearer(secret)
    created = client.post(
        "/api/v1/keys/",
        {"name": "from-api", "allowed_models": ["mistral-small"], "spend_cap": "3"},
        content_type="application/json",
    )
    assert created.status_code == 201
    data = created.json()
    assert keyformat.is_well_formed(data["secret"])
    assert data["spend_cap"] == "3.000000000"
    key_id = data["id"]
    listed = client.get("/api/v1/keys/").json()
    assert [k["id"] for k in listed] == [key_id] and "secret" not in listed[0]
    patched = client.patch(
        f"/api/v1/keys/{key_id}/", {"rpm_limit": 9}, content_type="application/json"
    )
    assert patched.json()["rpm_limit"] == 9
    assert redis_record(redis_client, ApiKey.objects.get(pk=key_id))["rpm"] == 9
    rotated = client.post(
        f"/api/v1/keys/{key_id}/rotate/", {"grace_seconds": 0}, content_type="application/json"
    )
    assert rotated.status_code == 201 and rotated.json()["secret"] != data["secret"]
    revoked = client.post(f"/api/v1/keys/{rotated.json()['id']}/revoke/")
    assert revoked.json()["status"] == "revoked"


def test_the_api_refuses_bad_limits(alice: Any) -> None:
    client = bearer(issue_management_key(account=alice.account, name="s")[1])
    for body in (
        {"name": "x", "allowed_ips": ["nope"]},
        {"name": "x", "rpm_limit": 0},
        {"allowed_models": []},
    ):
        assert (
            client.post("/api/v1/keys/", body, content_type="application/json").status_code == 400
        )
    assert not ApiKey.objects.exists()


def test_the_api_refuses_api_keys_and_revoked_management_keys(alice: Any) -> None:
    _, api_secret = issue_key(account=alice.account, name="model-calls")
    assert bearer(api_secret).get("/api/v1/keys/").status_code == 401
    key, secret = issue_management_key(account=alice.account, name="old")
    ManagementKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    assert bearer(secret).get("/api/v1/keys/").status_code == 401
    assert Client().get("/api/v1/keys/").status_code in (401, 403)


def test_a_management_key_cannot_call_models(alice: Any, relay: Any) -> None:
    from .test_relay import chat, post

    _, secret = issue_management_key(account=alice.account, name="s")
    status, _, _body = post(f"{relay.base_url}/chat/completions", chat(), key=secret)
    assert status == 401


def test_bob_cannot_reach_alices_keys_through_the_api(alice: Any, bob: Any) -> None:
    key, _ = issue_key(account=alice.account, name="alices")
    client = bearer(issue_management_key(account=bob.account, name="bobs")[1])
    assert client.get("/api/v1/keys/").json() == []
    assert client.get(f"/api/v1/keys/{key.pk}/").status_code == 404
    assert (
        client.patch(
            f"/api/v1/keys/{key.pk}/", {"rpm_limit": 1}, content_type="application/json"
        ).status_code
        == 404
    )
    assert client.post(f"/api/v1/keys/{key.pk}/revoke/").status_code == 404
    assert client.post(f"/api/v1/keys/{key.pk}/rotate/").status_code == 404
    key.refresh_from_db()
    assert key.is_active and key.rpm_limit is None


def test_the_api_with_a_session_needs_csrf(alice: Any) -> None:
    client = signed_in(alice, csrf=True)
    assert client.get("/api/v1/keys/").status_code == 200
    assert (
        client.post("/api/v1/keys/", {"name": "x"}, content_type="application/json").status_code
        == 403
    )


def test_the_openapi_schema_and_docs_are_served(alice: Any) -> None:
    client = signed_in(alice)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/keys/" in schema.content
    assert client.get("/api/docs/").status_code == 200


# ---- leaked-key reports -----------------------------------------------------------------------


@pytest.fixture
def scanning(settings: Any) -> str:
    settings.TP_SECRET_SCANNING_HMAC_SECRET = "scanner-shared-secret"
    return "scanner-shared-secret"


def report(body: bytes, signature: str | None, **headers: str) -> Any:
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    if signature is not None:
        extra["HTTP_X_SIGNATURE"] = signature
    return Client().post("/api/v1/secret-scanning/", body, content_type="application/json", **extra)


def test_a_leaked_key_is_revoked_and_its_owner_mailed(
    alice: Any, scanning: str, redis_client: Any
) -> None:
    key, secret = issue_key(account=alice.account, name="leaky")
    stranger = keyformat.generate()
    body = json.dumps(
        [
            {
                "token": secret,
                "type": "tokenpapa_api_key",
                "url": "https://example.com/gist/1",
                "source": "gist",
            },
            {"token": stranger, "type": "tokenpapa_api_key", "url": "https://example.com/x"},
            {"token": "tp-sk-garbage", "type": "tokenpapa_api_key"},
        ]
    ).encode()
    signature = "sha256=" + hmac.new(scanning.encode(), body, hashlib.sha256).hexdigest()
    response = report(body, signature)
    assert response.status_code == 200
    assert [a["label"] for a in response.json()] == [
        "true_positive",
        "false_positive",
        "false_positive",
    ]
    key.refresh_from_db()
    assert not key.is_active and redis_record(redis_client, key) is None
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]
    assert "https://example.com/gist/1" in mail.outbox[0].body
    assert secret not in mail.outbox[0].body and secret not in mail.outbox[0].subject


def test_an_unsigned_or_badly_signed_report_changes_nothing(alice: Any, scanning: str) -> None:
    key, secret = issue_key(account=alice.account, name="safe")
    body = json.dumps([{"token": secret}]).encode()
    assert report(body, None).status_code == 401
    assert report(body, "sha256=" + "0" * 64).status_code == 401
    key.refresh_from_db()
    assert key.is_active and not mail.outbox


def test_github_style_ecdsa_signatures_are_verified(alice: Any, settings: Any) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings.TP_SECRET_SCANNING_PUBLIC_KEYS = {"key-1": pem}
    key, secret = issue_key(account=alice.account, name="gh")
    body = json.dumps(
        [{"token": secret, "type": "tokenpapa_api_key", "url": "https://github.com/x"}]
    ).encode()
    signature = base64.b64encode(private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    forged = base64.b64encode(private.sign(b"other", ec.ECDSA(hashes.SHA256()))).decode()
    assert (
        report(
            body,
            None,
            **{"Github-Public-Key-Identifier": "key-1", "Github-Public-Key-Signature": forged},
        ).status_code
        == 401
    )
    response = report(
        body,
        None,
        **{"Github-Public-Key-Identifier": "key-1", "Github-Public-Key-Signature": signature},
    )
    assert response.json()[0]["label"] == "true_positive"
    key.refresh_from_db()
    assert not key.is_active


def test_reports_are_not_offered_unless_configured(alice: Any) -> None:
    assert report(b"[]", None).status_code == 404


def test_malformed_reports_are_400(alice: Any, scanning: str) -> None:
    for body in (b"{not json", b'{"token": "x"}'):
        signature = "sha256=" + hmac.new(scanning.encode(), body, hashlib.sha256).hexdigest()
        assert report(body, signature).status_code == 400


def test_bob_cannot_revoke_or_see_alices_management_keys(alice: Any, bob: Any) -> None:
    key, _ = issue_management_key(account=alice.account, name="alices-script")
    client = reauthenticated(signed_in(bob))
    assert key.masked not in client.get(reverse("management_keys")).content.decode()
    assert client.post(reverse("management_keys"), {"revoke": str(key.pk)}).status_code == 404
    assert client.post(reverse("management_keys"), {"revoke": "not-a-number"}).status_code == 404
    key.refresh_from_db()
    assert key.is_active


def test_routing_defaults_are_set_in_the_form_and_the_api_and_reach_the_relay(
    alice: Any, redis_client: Any
) -> None:
    key, _ = issue_key(account=alice.account, name="routed")
    url = reverse("key_detail", args=[key.pk])
    client = signed_in(alice)
    saved = client.post(url, {"limits-routing_sort": "price", "limits-routing_only": ["mistral"]})
    assert saved.status_code in (200, 302)
    key.refresh_from_db()
    assert key.routing == {"only": ["mistral"], "sort": "price"}
    assert redis_record(redis_client, key)["routing"] == {"only": ["mistral"], "sort": "price"}
    for bad, says in (
        ({"limits-routing_sort": "cheapest"}, "Select a valid choice."),
        ({"limits-routing_only": ["nowhere"]}, "Select a valid choice."),
        ({"limits-routing_order": "Mistral, nowhere"}, "Unknown provider: nowhere."),
        ({"limits-routing_max_prompt": "-1"}, "greater than or equal to 0"),
    ):
        body = client.post(url, bad).content.decode()
        assert says in body, bad
    key.refresh_from_db()
    assert key.routing == {"only": ["mistral"], "sort": "price"}
    # Every field at once, read back into the form as saved.
    client.post(
        url,
        {
            "limits-routing_sort": "latency",
            "limits-routing_order": " Mistral , openai,, ",
            "limits-routing_ignore": ["openai"],
            "limits-routing_no_fallbacks": "on",
            "limits-routing_max_prompt": "2.5",
            "limits-routing_max_completion": "0",
            "limits-routing_data_collection": "deny",
            "limits-routing_zdr": "on",
        },
    )
    key.refresh_from_db()
    full = {
        "order": ["mistral", "openai"],
        "ignore": ["openai"],
        "allow_fallbacks": False,
        "sort": "latency",
        "max_price": {"prompt": "2.5", "completion": "0"},
        "data_collection": "deny",
        "zdr": True,
    }
    assert key.routing == full
    form = client.get(url).context["form"]
    assert form["routing_order"].value() == "mistral, openai"
    assert form["routing_no_fallbacks"].value() is True
    assert form["routing_max_prompt"].value() == "2.5"
    assert form.routing_kept == {}
    # What the form has no field for (set through the API) is kept when the form saves.
    key.routing = {"require_parameters": True, "max_price": {"request": "0.01", "prompt": "1"}}
    key.save(update_fields=["routing"])
    client.post(url, {"limits-routing_sort": "price", "limits-routing_max_prompt": "3"})
    key.refresh_from_db()
    assert key.routing == {
        "require_parameters": True,
        "max_price": {"request": "0.01", "prompt": "3"},
        "sort": "price",
    }
    # Emptied: no defaults, and the key's record carries none (the relay's plain path).
    key.routing = {}
    key.save(update_fields=["routing"])
    client.post(url, {"limits-routing_sort": "price"})
    client.post(url, {})
    key.refresh_from_db()
    assert key.routing == {} and "routing" not in redis_record(redis_client, key)

    api = bearer(issue_management_key(account=alice.account, name="s")[1])
    created = api.post(
        "/api/v1/keys/",
        {"name": "api", "routing": {"zdr": True, "max_price": {"prompt": 1}}},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["routing"] == {"max_price": {"prompt": "1"}, "zdr": True}
    refused = api.post(
        "/api/v1/keys/",
        {"name": "api", "routing": {"sort": "random"}},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "routing" in refused.json()
