"""Bring your own key (BYOK): an account's own provider key reaches the upstream (plain and
streamed), is billed the fee exactly, falls back to the operator's routes only when
"prioritised", is removed from every relay within a second, and is nowhere in plain text
(database, Redis, logs); another account can neither see nor remove it."""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from billing.models import HourlyUsage, LedgerEntry, UsageEvent
from catalog.models import PriceVersion, Provider
from catalog.services import save_provider
from core import state
from core.pricing import NANO, Price, cost
from keys import byok
from keys.models import ProviderCredential
from lib.secrets import encrypt
from relay.prices import NanoPrice
from simulators.llm import start_in_thread

from .conftest import publish_catalog, start_relay, wait_until
from .test_relay import chat, post
from .test_secrets import database_dump, redis_dump

pytestmark = pytest.mark.usefixtures("catalog")

MODEL = "mistral-small"


def upstream_log(upstream: Any) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{upstream.root_url}/_demo/requests", timeout=5) as r:
        return list(json.loads(r.read())["requests"])


def bearers(upstream: Any, path: str = "/v1/chat/completions") -> list[str]:
    """The keys the upstream saw on ``path``, oldest first."""
    return [
        r["headers"].get("Authorization", "").removeprefix("Bearer ")
        for r in upstream_log(upstream)
        if r["path"] == path
    ]


def stream(url: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=30) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, response.read().decode()


def recorded(request_id: str) -> UsageEvent:
    return wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first(), timeout=10)


@pytest.fixture
def keys() -> dict[str, str]:
    """The operator's key for mistral and alice's own (shaped like OpenAI's, so that an echo
    of it is what a real provider's would be)."""
    return {
        "operator": f"op-{secrets.token_urlsafe(24)}",
        "alice": f"sk-alice{secrets.token_hex(20)}",
    }


@pytest.fixture
def provider_upstream(keys: dict[str, str]) -> Iterator[Any]:
    """A provider that knows the operator's key and alice's, and no other."""
    server = start_in_thread(api_keys=(keys["operator"], keys["alice"]))
    yield server
    server.stop()


@pytest.fixture
def mistral(provider_upstream: Any, keys: dict[str, str], relay: Any) -> Provider:
    """Mistral served by that provider with the operator's key, published to the relay."""
    provider = Provider.objects.get(slug="mistral")
    provider.base_url = provider_upstream.base_url
    save_provider(provider=provider, api_key=keys["operator"])
    publish_catalog(relay)
    return Provider.objects.get(slug="mistral")


def add(alice: Any, provider: Provider, key: str, mode: str = "prioritised") -> ProviderCredential:
    credential, _ = byok.save_credential(
        account=alice.account, provider=provider, api_key=key, mode=mode, actor=alice
    )
    return credential


@pytest.fixture
def alice_credential(alice: Any, mistral: Provider, keys: dict[str, str]) -> ProviderCredential:
    """Alice's own mistral key, saved "prioritised" (checked at the provider on save)."""
    return add(alice, mistral, keys["alice"])


@pytest.fixture
def revoked_at_provider(
    alice: Any, mistral: Provider, keys: dict[str, str]
) -> Callable[[str], str]:
    """Saves alice's mistral key with a mode, then has the provider revoke it since (the stored
    key becomes one the provider refuses, pushed to the relays); returns that refused key."""

    def revoke(mode: str) -> str:
        credential = add(alice, mistral, keys["alice"], mode=mode)
        revoked = f"sk-revoked{secrets.token_hex(20)}"
        ProviderCredential.objects.filter(pk=credential.pk).update(api_key=encrypt(revoked))
        byok.push(alice.account.pk)
        return revoked

    return revoke


def serves_with(
    relay: Any, secret: str, upstream: Any, key: str, sent: list[str] | None = None
) -> bool:
    status, headers, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=secret)
    assert status == 200, body
    if sent is not None:
        sent.append(headers["x-request-id"])
    return bearers(upstream)[-1] == key


def fee_by_hand(event: UsageEvent, percent: Decimal) -> Decimal:
    """(prompt × input + completion × output) / 1M × percent / 100, rounded up to 1e-9 USD."""
    price = PriceVersion.objects.get(model_id=event.model_id, version=event.price_version)
    exact = (
        (event.prompt_tokens * price.input + event.completion_tokens * price.output)
        / Decimal(1_000_000)
        * percent
        / Decimal(100)
    )
    return exact.quantize(NANO, rounding=ROUND_CEILING)


# ---- the fee: one cost function, one rounding ------------------------------------------------


def test_it_computes_the_fee_as_a_share_of_the_exact_price_rounded_once() -> None:
    price = Price(version=1, input=Decimal("0.3"), output=Decimal("0.9"))
    full = cost(price, prompt_tokens=7, completion_tokens=3)
    fee = cost(price, prompt_tokens=7, completion_tokens=3, percent=Decimal(5))
    assert full == Decimal("0.000004800")
    # 4.8e-6 × 5% = 2.4e-7 exactly; a fee of a rounded price would be the same here, but
    # 1 prompt token at 0.3/1M × 5% = 1.5e-8 rounds up once to 1.5e-8 (not 1e-8 × ...).
    assert fee == Decimal("0.000000240")
    assert cost(price, prompt_tokens=1, completion_tokens=0, percent=Decimal("2.5")) == Decimal(
        "0.000000008"
    )  # 7.5e-9 up to 8e-9
    nano = NanoPrice(price)
    for counts in ((7, 3), (1, 0), (12345, 6789), (0, 1)):
        for percent in (Decimal(5), Decimal("2.5"), Decimal("0.01"), Decimal(100)):
            expected = cost(
                price, prompt_tokens=counts[0], completion_tokens=counts[1], percent=percent
            )
            got = nano.nanos(
                prompt_tokens=counts[0],
                completion_tokens=counts[1],
                share=Fraction(percent) / 100,
            )
            assert Decimal(got) * NANO == expected
    with pytest.raises(ValueError):
        cost(price, prompt_tokens=1, completion_tokens=1, percent=Decimal(101))


# ---- the relay -------------------------------------------------------------------------------


def test_it_sends_the_users_key_upstream_and_bills_the_fee_exactly(
    alice: Any,
    alice_key: str,
    mistral: Provider,
    provider_upstream: Any,
    keys: dict[str, str],
    relay: Any,
    worker: Any,
    alice_client: Client,
    alice_credential: ProviderCredential,
) -> None:
    assert bearers(provider_upstream, "/v1/models")[-1] == keys["alice"]  # the check on save
    sent: list[str] = []
    wait_until(
        lambda: serves_with(relay, alice_key, provider_upstream, keys["alice"], sent), timeout=2
    )
    # Those requests are in the ledger first, so that the next one is debited on its own.
    wait_until(lambda: UsageEvent.objects.filter(request_id__in=sent).count() == len(sent))

    before = LedgerEntry.objects.filter(account=alice.account).order_by("-seq").first()
    status, headers, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=alice_key)
    assert status == 200, body
    assert bearers(provider_upstream)[-1] == keys["alice"]
    event = recorded(headers["x-request-id"])
    assert event.byok is True
    fee = fee_by_hand(event, settings.TP_BYOK_FEE_PERCENT)
    assert fee > 0
    assert event.cost == fee
    debits = list(
        LedgerEntry.objects.filter(
            account=alice.account, seq__gt=before.seq, kind=LedgerEntry.Kind.USAGE
        )
    )
    assert len(debits) == 1 and event.ledger_entry_id == debits[0].pk
    assert debits[0].amount == -fee
    assert debits[0].balance_after == before.balance_after - fee

    # The request log, its page, its CSV and the usage API say so; the rollups count it.
    log = alice_client.get(reverse("usage_requests")).content.decode()
    assert 'data-testid="byok"' in log
    page = alice_client.get(reverse("usage_request", args=[event.request_id])).content.decode()
    assert "Sent with your own provider key" in page
    csv_text = b"".join(alice_client.get(reverse("usage_requests_csv")).streaming_content).decode()
    header, *rows = csv_text.splitlines()
    column = header.split(",").index("byok")
    assert any(r.startswith(event.request_id) and r.split(",")[column] == "true" for r in rows)
    api = alice_client.get(f"/api/v1/usage/requests/{event.request_id}/").json()
    assert api["byok"] is True
    assert HourlyUsage.objects.filter(account=alice.account, byok__gte=1).exists()
    assert alice_client.get("/api/v1/usage/").json()["totals"]["byok"] >= 1
    # The activity page counts them beside all requests.
    served = UsageEvent.objects.filter(account=alice.account, byok=True).count()
    activity_page = alice_client.get(reverse("usage")).content.decode()
    assert f'data-testid="stat-byok-requests" data-value="{served}"' in activity_page
    assert "Requests with your own provider keys" in activity_page

    # Streamed: the same key, the same rule.
    status, headers, text = stream(
        f"{relay.base_url}/chat/completions", chat(MODEL, stream=True), alice_key
    )
    assert status == 200 and "[DONE]" in text
    assert bearers(provider_upstream)[-1] == keys["alice"]
    streamed = recorded(headers["x-request-id"])
    assert streamed.byok and streamed.streamed
    assert streamed.cost == fee_by_hand(streamed, settings.TP_BYOK_FEE_PERCENT)
    assert keys["operator"] not in bearers(provider_upstream)[-2:]


def test_a_prioritised_key_that_fails_falls_back_to_the_operators_route(
    alice: Any,
    alice_key: str,
    mistral: Provider,
    provider_upstream: Any,
    keys: dict[str, str],
    relay: Any,
    worker: Any,
    caplog: pytest.LogCaptureFixture,
    revoked_at_provider: Callable[[str], str],
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked = revoked_at_provider("prioritised")

    def fell_back() -> Any:
        status, headers, body = post(
            f"{relay.base_url}/chat/completions", chat(MODEL), key=alice_key
        )
        assert status == 200, body
        return headers if bearers(provider_upstream)[-2:] == [revoked, keys["operator"]] else None

    headers = wait_until(fell_back, timeout=2)
    event = recorded(headers["x-request-id"])
    assert event.byok is False
    price = PriceVersion.objects.get(model_id=MODEL, version=event.price_version).as_price()
    assert event.cost == cost(
        price, prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
    )
    assert revoked not in relay.log_path.read_text()
    assert revoked not in caplog.text


def test_an_always_key_that_fails_is_the_answer_and_the_operators_key_is_never_used(
    alice: Any,
    alice_key: str,
    mistral: Provider,
    provider_upstream: Any,
    keys: dict[str, str],
    relay: Any,
    worker: Any,
    caplog: pytest.LogCaptureFixture,
    revoked_at_provider: Callable[[str], str],
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked = revoked_at_provider("always")

    def refused() -> Any:
        status, _, body = post(f"{relay.base_url}/chat/completions", chat(MODEL), key=alice_key)
        return body if status == 502 else None

    body = wait_until(refused, timeout=2)
    seen = bearers(provider_upstream)
    assert seen[-1] == revoked
    # Every request since the credential went to the relay used alice's (revoked) key only.
    assert seen.count(keys["operator"]) == seen.index(revoked)
    message = body["error"]["message"]
    assert "own mistral key" in message and "401" in message and "[redacted]" in message
    assert revoked not in json.dumps(body) and revoked[:12] not in json.dumps(body)
    assert revoked not in relay.log_path.read_text()
    assert revoked not in caplog.text


def test_a_removed_key_is_no_longer_used_by_any_relay_within_a_second(
    alice: Any,
    alice_key: str,
    mistral: Provider,
    provider_upstream: Any,
    keys: dict[str, str],
    relay: Any,
    tmp_path: Path,
) -> None:
    other = start_relay(tmp_path)
    try:
        credential = add(alice, mistral, keys["alice"], mode="always")
        for each in (relay, other):
            wait_until(
                lambda each=each: serves_with(each, alice_key, provider_upstream, keys["alice"]),
                timeout=2,
            )
        byok.remove_credential(credential=credential, actor=alice)
        started = time.monotonic()
        for each in (relay, other):
            wait_until(
                lambda each=each: serves_with(each, alice_key, provider_upstream, keys["operator"]),
                timeout=1,
                interval=0.02,
            )
        assert time.monotonic() - started < 1
        assert not relay_redis_has(state.byok(alice.account.pk))
    finally:
        other.stop()


def relay_redis_has(name: str) -> bool:
    from .conftest import relay_redis

    return bool(relay_redis().exists(name))


def test_the_key_is_nowhere_in_plain_text(
    alice: Any,
    alice_key: str,
    mistral: Provider,
    provider_upstream: Any,
    keys: dict[str, str],
    relay: Any,
    worker: Any,
    caplog: pytest.LogCaptureFixture,
    alice_client: Client,
) -> None:
    caplog.set_level(logging.DEBUG)
    page = alice_client.post(
        reverse("provider_keys"),
        {"provider": "mistral", "api_key": keys["alice"], "mode": "prioritised"},
    ).content.decode()
    assert keys["alice"][-4:] in page and keys["alice"] not in page
    wait_until(lambda: serves_with(relay, alice_key, provider_upstream, keys["alice"]), timeout=2)
    status, headers, _ = stream(
        f"{relay.base_url}/chat/completions", chat(MODEL, stream=True), alice_key
    )
    assert status == 200
    recorded(headers["x-request-id"])
    api = alice_client.get("/api/v1/provider-keys/").content.decode()
    assert keys["alice"] not in api
    database = io.StringIO()
    call_command("dumpdata", stdout=database)
    secret = keys["alice"]
    for where, text in (
        ("dumpdata", database.getvalue()),
        ("every text column of every table", database_dump()),
        ("Redis, every key and value", redis_dump().decode("utf-8", "replace")),
        ("the relay's log", relay.log_path.read_text()),
        ("captured logs (portal and worker)", caplog.text),
    ):
        assert secret not in text, where
        assert secret[4:-4] not in text, where  # nor most of it
    stored = ProviderCredential.objects.get(account=alice.account)
    assert byok.box().decrypt(stored.api_key) == secret


def test_rotatesecrets_reencrypts_the_accounts_keys(
    alice: Any,
    keys: dict[str, str],
    settings: Any,
    redis_client: Any,
    alice_credential: ProviderCredential,
) -> None:
    from cryptography.fernet import Fernet

    before = ProviderCredential.objects.get(account=alice.account).api_key
    new = Fernet.generate_key().decode()
    settings.TP_SECRETS_KEYS = [new, *settings.TP_SECRETS_KEYS]
    out = io.StringIO()
    call_command("rotatesecrets", stdout=out)
    assert "Re-encrypted 1 provider keys of accounts" in out.getvalue()
    after = ProviderCredential.objects.get(account=alice.account).api_key
    assert after != before
    assert Fernet(new.encode()).decrypt(after.encode()).decode() == keys["alice"]
    published = json.loads(redis_client.get(state.byok(alice.account.pk)))
    assert Fernet(new.encode()).decrypt(published["mistral"]["key_encrypted"].encode())


# ---- pages and API: whose keys, and bad input --------------------------------------------------


def test_a_refused_key_is_not_saved_and_not_echoed(
    mistral: Provider, provider_upstream: Any, alice_client: Client
) -> None:
    wrong = f"sk-wrong{secrets.token_hex(20)}"
    page = alice_client.post(
        reverse("provider_keys"), {"provider": "mistral", "api_key": wrong, "mode": "always"}
    )
    text = page.content.decode()
    assert page.status_code == 200
    assert "refused this key (HTTP 401)" in text
    assert wrong not in text and wrong[-4:] not in text
    assert not ProviderCredential.objects.exists()
    response = alice_client.post(
        "/api/v1/provider-keys/",
        {"provider": "mistral", "api_key": wrong},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "api_key" in response.json() and wrong not in response.content.decode()
    assert not ProviderCredential.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="byok.").exists()


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"provider": "mistral"},
        {"provider": "mistral", "api_key": ""},
        {"provider": "mistral", "api_key": "has a space"},
        {"provider": "mistral", "api_key": "x" * 501},
        {"provider": "mistral", "api_key": "sk-abc\u0000def"},
        {"provider": "mistral", "api_key": 12345},
        {"provider": "no-such-provider", "api_key": "sk-abcdef123456"},
        {"provider": ["mistral"], "api_key": "sk-abcdef123456"},
        {"provider": "mistral", "api_key": "sk-abcdef123456", "mode": "sometimes"},
    ],
)
def test_bad_input_is_a_400(
    mistral: Provider, payload: dict[str, Any], alice_client: Client
) -> None:
    response = alice_client.post("/api/v1/provider-keys/", payload, content_type="application/json")
    assert response.status_code == 400, response.content
    page = alice_client.post(
        reverse("provider_keys"), {k: v for k, v in payload.items() if isinstance(v, str)}
    )
    assert page.status_code == 200  # the form again, with its errors
    assert not ProviderCredential.objects.exists()
    assert alice_client.post(reverse("provider_keys"), {"remove": "x1"}).status_code == 404
    assert alice_client.post(reverse("provider_keys"), {"remove": "9" * 40}).status_code == 404
    assert (
        alice_client.post(
            "/api/v1/provider-keys/", b"{oops", content_type="application/json"
        ).status_code
        == 400
    )


def test_another_account_can_neither_see_nor_remove_the_key(
    alice: Any,
    bob: Any,
    mistral: Provider,
    keys: dict[str, str],
    alice_credential: ProviderCredential,
    alice_client: Client,
) -> None:
    last4 = keys["alice"][-4:]
    bobs = Client()
    bobs.force_login(bob)
    page = bobs.get(reverse("provider_keys")).content.decode()
    assert last4 not in page
    assert bobs.get("/api/v1/provider-keys/").json() == []
    assert bobs.get("/api/v1/provider-keys/mistral/").status_code == 404
    assert bobs.delete("/api/v1/provider-keys/mistral/").status_code == 404
    assert (
        bobs.post(reverse("provider_keys"), {"remove": str(alice_credential.pk)}).status_code == 404
    )
    assert ProviderCredential.objects.filter(pk=alice_credential.pk).exists()

    listed = alice_client.get("/api/v1/provider-keys/").json()
    assert listed == [
        {
            "provider": "mistral",
            "provider_name": mistral.name,
            "mode": "prioritised",
            "last4": last4,
            "checked_at": listed[0]["checked_at"],
            "added_by": alice.email,
            "created_at": listed[0]["created_at"],
            "updated_at": listed[0]["updated_at"],
        }
    ]
    assert last4 in alice_client.get(reverse("provider_keys")).content.decode()
    assert alice_client.delete("/api/v1/provider-keys/mistral/").status_code == 204
    assert not ProviderCredential.objects.exists()


def test_adding_replacing_and_removing_are_audited(
    alice: Any,
    mistral: Provider,
    keys: dict[str, str],
    provider_upstream: Any,
    alice_client: Client,
) -> None:
    body = {"provider": "mistral", "api_key": keys["alice"]}
    assert (
        alice_client.post(
            "/api/v1/provider-keys/", body, content_type="application/json"
        ).status_code
        == 201
    )
    replaced = alice_client.post(
        "/api/v1/provider-keys/", {**body, "mode": "always"}, content_type="application/json"
    )
    assert replaced.status_code == 200 and replaced.json()["mode"] == "always"
    assert ProviderCredential.objects.count() == 1
    assert alice_client.delete("/api/v1/provider-keys/mistral/").status_code == 204
    actions = list(
        AuditEvent.objects.filter(account=alice.account, action__startswith="byok.")
        .order_by("id")
        .values_list("action", "target")
    )
    assert [a for a, _ in actions] == ["byok.added", "byok.replaced", "byok.removed"]
    for _, target in actions:
        assert keys["alice"][-4:] in target and keys["alice"] not in target


def test_the_keys_page_and_the_account_menu_link_to_provider_keys(alice_client: Client) -> None:
    url = reverse("provider_keys")
    assert url in alice_client.get(reverse("keys")).content.decode()
    assert url in alice_client.get(reverse("account_time_zone")).content.decode()
    page = alice_client.get(url).content.decode()
    assert "5%" in page


def test_the_hold_is_the_fee_when_only_the_users_key_may_serve() -> None:
    """``always``: the most the request may cost is the fee's worst case; ``prioritised``: it
    may fall back to the operator's route, so the price's."""
    from relay import byok as relay_byok
    from relay import routing
    from relay.app import Relay
    from relay.config import Config
    from relay.request import Request

    price = Price(version=1, input=Decimal("2"), output=Decimal("6"))
    route = {"provider": "mistral", "upstream_model": "m", "base_url": "http://127.0.0.1:9/v1"}
    model = {
        "id": "m",
        "price": price.as_dict(),
        "routes": [route],
        "max_output_tokens": 1000,
        "context_window": 100_000,
    }
    relay = Relay()
    relay.config = Config(redis_url="", broker_url="", pepper=b"", spool_dir=Path("/nonexistent"))
    body = chat("m", max_tokens=500)
    raw = len(json.dumps(body))

    def held(mode: str | None) -> int:
        req = Request()
        req.model, req.routes, req.body = model, [route], dict(body)
        if mode is not None:
            credentials = {"mistral": relay_byok.Credential(1, mode, "sk-own")}
            tries = relay_byok.arrange([(model, route)], credentials)
            assert tries is not None
            req.plan = routing.Plan(tries, 1)
        return relay.worst_case(req, raw, "chat")

    full = held(None)
    assert held("prioritised") == full
    assert held("always") == -(-full * 5 // 100)  # 5% of it, rounded up once


def test_syncredis_rebuilds_the_accounts_keys_in_redis(
    alice: Any,
    bob: Any,
    keys: dict[str, str],
    redis_client: Any,
    alice_credential: ProviderCredential,
) -> None:
    redis_client.delete(state.byok(alice.account.pk))
    redis_client.set(state.byok(bob.account.pk), "{}")  # stale: bob has none
    call_command("syncredis", stdout=io.StringIO())
    published = json.loads(redis_client.get(state.byok(alice.account.pk)))
    assert list(published) == ["mistral"] and published["mistral"]["mode"] == "prioritised"
    assert keys["alice"] not in redis_client.get(state.byok(alice.account.pk))
    assert not redis_client.exists(state.byok(bob.account.pk))


def test_an_anthropic_key_is_checked_and_sent_as_anthropic_expects(
    alice: Any, alice_key: str, provider_upstream: Any, keys: dict[str, str], relay: Any
) -> None:
    anthropic = Provider.objects.get(slug="anthropic")
    anthropic.base_url = provider_upstream.base_url
    save_provider(provider=anthropic, api_key=keys["operator"])
    publish_catalog(relay)
    with pytest.raises(byok.KeyRefused):
        add(alice, Provider.objects.get(slug="anthropic"), f"sk-ant-wrong{secrets.token_hex(16)}")
    add(alice, Provider.objects.get(slug="anthropic"), keys["alice"], mode="always")
    checks = [r for r in upstream_log(provider_upstream) if r["path"] == "/v1/models"]
    assert checks[-1]["headers"].get("x-api-key") == keys["alice"]

    def sent_with_own_key() -> bool:
        status, _, body = post(
            f"{relay.base_url}/chat/completions", chat("claude-sonnet-4"), key=alice_key
        )
        assert status == 200, body
        last = [r for r in upstream_log(provider_upstream) if r["path"] == "/v1/messages"][-1]
        return bool(last["headers"].get("x-api-key") == keys["alice"])

    wait_until(sent_with_own_key, timeout=2)


def test_it_scrubs_a_key_an_upstream_shows_masked() -> None:
    from relay.errors import scrub

    for shown in ("sk-ab***cd", "sk-proj-****************abcd", "abc***"):
        text = scrub(f"Incorrect API key provided: {shown}. You can find your API key at x.")
        assert shown not in text and "[redacted]" in text


def test_the_export_lists_the_keys_without_them_and_deleting_the_account_forgets_them(
    alice: Any, alice_credential: ProviderCredential, keys: dict[str, str], redis_client: Any
) -> None:
    from portal import account as account_data

    exported = json.loads("".join(account_data.export(alice)))
    assert [
        (row["provider__slug"], row["mode"], row["last4"]) for row in exported["provider_keys"]
    ] == [("mistral", "prioritised", keys["alice"][-4:])]
    assert keys["alice"] not in json.dumps(exported)
    assert redis_client.exists(state.byok(alice.account.pk))

    account_data.delete(alice)
    assert not ProviderCredential.objects.filter(account=alice.account).exists()
    assert byok.record(alice.account.pk) == {}
    removed = AuditEvent.objects.get(account=alice.account, action="byok.removed")
    assert removed.details == {"provider": "mistral"}
    # The relays' copy goes too (pushed after commit).
    assert not redis_client.exists(state.byok(alice.account.pk))


def test_deleting_a_sole_owner_forgets_the_abandoned_organizations_provider_keys(
    alice: Any, mistral: Provider, redis_client: Any
) -> None:
    from django.utils import timezone

    from accounts import organizations
    from portal import account as account_data

    team = organizations.create(owner=alice, name="Alice alone")
    credential = ProviderCredential.objects.create(
        account=team.account,
        provider=mistral,
        api_key=encrypt("sk-team-key-0000"),
        last4="0000",
        checked_at=timezone.now(),
        added_by=alice,
    )
    byok.push(team.account.pk)
    assert redis_client.exists(state.byok(team.account.pk))

    account_data.delete(alice)
    assert not ProviderCredential.objects.filter(pk=credential.pk).exists()
    assert not redis_client.exists(state.byok(team.account.pk))
    assert AuditEvent.objects.filter(account=team.account, action="byok.removed").exists()
