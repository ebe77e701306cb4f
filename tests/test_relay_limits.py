"""Key limits, routes and failover, timeouts and client disconnects, through the real relay."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.models import UsageEvent
from catalog.models import Model, PriceVersion, Provider, Route
from keys.models import ApiKey
from keys.services import issue_key
from keys.sync import push
from simulators.llm import start_in_thread

from .conftest import free_port, publish_catalog, start_relay, wait_until
from .test_relay import a_later_request_recorded, assert_billed_only, assert_error, chat, post

pytestmark = pytest.mark.usefixtures("catalog")


def key_with(alice: Any, **limits: Any) -> str:
    key, secret = issue_key(account=alice.account, name="limited")
    ApiKey.objects.filter(pk=key.pk).update(**limits)
    key.refresh_from_db()
    push(key)
    return secret


def url(relay: Any) -> str:
    return f"{relay.base_url}/chat/completions"


# ---- per-key limits ---------------------------------------------------------------------------


def test_a_disallowed_model_is_refused_with_403(relay: Any, alice: Any) -> None:
    secret = key_with(alice, allowed_models=["mistral-small"])
    assert post(url(relay), chat("mistral-small"), key=secret)[0] == 200
    status, _, body = post(url(relay), chat("gpt-4o"), key=secret)
    assert_error(status, body, 403, "model_not_allowed")


def test_an_alias_counts_as_its_model(relay: Any, alice: Any) -> None:
    secret = key_with(alice, allowed_models=["mistral-large-2"])
    assert post(url(relay), chat("mistral/mistral-large-2"), key=secret)[0] == 200
    assert post(url(relay), chat("mistral-large"), key=secret)[0] == 200


def test_an_ip_allowlist_is_enforced(relay: Any, alice: Any) -> None:
    elsewhere = key_with(alice, allowed_ips=["10.0.0.0/8", "2001:db8::/32"])
    status, _, body = post(url(relay), chat(), key=elsewhere)
    assert_error(status, body, 403, "ip_not_allowed")
    here = key_with(alice, allowed_ips=["127.0.0.0/8"])
    assert post(url(relay), chat(), key=here)[0] == 200


def test_an_expired_key_is_refused(relay: Any, alice: Any) -> None:
    secret = key_with(alice, expires_at=timezone.now() - timedelta(seconds=1))
    status, _, body = post(url(relay), chat(), key=secret)
    assert_error(status, body, 401, "key_expired")


def test_requests_per_minute_answer_429_with_headers(relay: Any, alice: Any) -> None:
    secret = key_with(alice, rpm_limit=2)
    first = post(url(relay), chat(), key=secret)
    assert first[0] == 200
    assert first[1]["x-ratelimit-limit-requests"] == "2"
    assert first[1]["x-ratelimit-remaining-requests"] == "1"
    assert post(url(relay), chat(), key=secret)[0] == 200
    status, headers, body = post(url(relay), chat(), key=secret)
    if status == 200:  # the minute turned between requests: one more window to fill
        post(url(relay), chat(), key=secret)
        status, headers, body = post(url(relay), chat(), key=secret)
    assert_error(status, body, 429, "rate_limit_exceeded")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_answer_429(relay: Any, alice: Any) -> None:
    secret = key_with(alice, tpm_limit=100)
    status, _, body = post(url(relay), chat(max_tokens=500), key=secret)
    assert_error(status, body, 429, "rate_limit_exceeded")
    assert "tokens" in body["error"]["message"]


def test_a_spend_cap_answers_402_once_reached(relay: Any, alice: Any, worker: Any) -> None:
    cap = Decimal("0.0001")  # a few requests' worth at mistral-small prices
    secret = key_with(alice, spend_cap=cap, spend_cap_period="day")
    body = chat("mistral-small", max_tokens=10)
    assert post(url(relay), body, key=secret)[0] == 200
    statuses = [post(url(relay), body, key=secret)[0] for _ in range(20)]
    assert statuses[-1] == 402
    assert set(statuses) == {200, 402}
    status, _, err = post(url(relay), body, key=secret)
    assert_error(status, err, 402, "spend_cap_reached")
    key = ApiKey.objects.get(name="limited")
    wait_until(lambda: UsageEvent.objects.filter(key=key).count() == 1 + statuses.count(200))
    spent = sum(e.cost for e in UsageEvent.objects.filter(key=key))
    assert spent <= cap


# ---- routes, failover, timeouts ---------------------------------------------------------------


@pytest.fixture
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {
        "broken": start_in_thread(error="503"),
        "cutting": start_in_thread(error="cut", chunk_delay_ms=5),
        "slow": start_in_thread(latency_ms=1500),
        "good": start_in_thread(),
    }
    yield servers
    for server in servers.values():
        server.stop()


def route_model(relay: Any, model_id: str, *targets: tuple[str, str, int]) -> None:
    """Give the model one route per (provider slug, base URL, priority), and wait until the
    relay has them."""
    model = Model.objects.get(id=model_id)
    PriceVersion.objects.filter(route__model=model).delete()  # (a route's prices keep it)
    Route.objects.filter(model=model).delete()
    for slug, base_url, priority in targets:
        provider, _ = Provider.objects.update_or_create(
            slug=slug, defaults={"name": slug, "base_url": base_url, "api_key": "upstream-key"}
        )
        Route.objects.create(
            model=model, provider=provider, upstream_model=model.upstream_model, priority=priority
        )
    publish_catalog(relay)


def stats(server: Any) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{server.root_url}/_demo/stats", timeout=5) as response:
        return json.loads(response.read())


def test_it_fails_over_before_the_first_byte(
    relay: Any, alice: Any, upstreams: Any, worker: Any
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    route_model(
        relay,
        "mistral-small",
        ("dead", dead, 0),
        ("broken", upstreams["broken"].base_url, 1),
        ("good", upstreams["good"].base_url, 2),
    )
    secret = key_with(alice)
    status, headers, body = post(url(relay), chat("mistral-small"), key=secret)
    assert status == 200, body
    event = wait_until(
        lambda: UsageEvent.objects.filter(request_id=headers["x-request-id"]).first()
    )
    assert event.provider == "good"
    assert stats(upstreams["broken"])["requests"] >= 1


def test_it_never_fails_over_after_the_first_byte(
    relay: Any, alice: Any, upstreams: Any, worker: Any
) -> None:
    route_model(
        relay,
        "mistral-small",
        ("cutting", upstreams["cutting"].base_url, 0),
        ("good", upstreams["good"].base_url, 1),
    )
    secret = key_with(alice)
    import urllib.request

    request = urllib.request.Request(
        url(relay),
        data=json.dumps(chat("mistral-small", stream=True)).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        text = response.read().decode()
    assert "data: " in text and "[DONE]" not in text
    assert stats(upstreams["good"])["requests"] == 0
    event = wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first())
    assert event.status == "upstream_cut" and event.estimated and event.cost > 0


def test_all_routes_failing_is_an_openai_error_and_free(
    relay: Any, alice: Any, upstreams: Any, worker: Any
) -> None:
    route_model(relay, "mistral-small", ("broken", upstreams["broken"].base_url, 0))
    secret = key_with(alice)
    status, _, body = post(url(relay), chat("mistral-small"), key=secret)
    assert_error(status, body, 502)
    later = a_later_request_recorded(relay, secret, "mistral-large-2")  # not routed to "broken"
    assert_billed_only(later)


def test_first_byte_timeout_moves_to_the_next_route(
    tmp_path: Any, alice: Any, upstreams: Any, worker: Any
) -> None:
    fast = start_relay(tmp_path, TP_UPSTREAM_FIRST_BYTE_TIMEOUT="0.5")
    try:
        route_model(
            fast,
            "mistral-small",
            ("slow", upstreams["slow"].base_url, 0),
            ("good", upstreams["good"].base_url, 1),
        )
        secret = key_with(alice)
        started = time.monotonic()
        status, headers, _ = post(url(fast), chat("mistral-small"), key=secret)
        assert status == 200
        assert time.monotonic() - started < 1.4
        event = wait_until(
            lambda: UsageEvent.objects.filter(request_id=headers["x-request-id"]).first()
        )
        assert event.provider == "good"
    finally:
        fast.stop()


def test_a_client_disconnect_cancels_the_upstream_and_bills_what_was_sent(
    relay: Any, alice: Any, demo_upstream: str, worker: Any
) -> None:
    secret = key_with(alice)
    body = json.dumps(chat("mistral-small", stream=True)).encode()
    host, port = relay.base_url.split("//")[1].split("/")[0].split(":")
    before = _demo_stats(demo_upstream)["cancelled"]
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n"
            + b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {secret}\r\nx-demo-completion-tokens: 64\r\n".encode()
            + b"x-demo-chunk-delay-ms: 100\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data: ") < 4:
            received += sock.recv(65536)
    request_id = received.split(b"x-request-id: ")[1].split(b"\r\n")[0].decode()
    wait_until(lambda: _demo_stats(demo_upstream)["cancelled"] > before, timeout=2)
    event = wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first())
    assert event.status == "client_closed"
    assert event.estimated
    assert 0 < event.completion_tokens < 64


def _demo_stats(base_url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(
        f"{base_url.removesuffix('/v1')}/_demo/stats", timeout=5
    ) as response:
        return json.loads(response.read())
