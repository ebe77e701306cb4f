"""Prompt caching that hits: a conversation keeps to the route where its prompt cache lives
(relay.sticky). Two upstreams serve one model at the same priority and weight, each with a
prompt cache of its own, as two providers have: the second turn of every conversation lands on
the route that answered the first, reads that route's cache and is billed at the cached price."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from catalog.models import Model
from core import pricing
from relay import sticky
from simulators.llm import start_in_thread

from .test_relay import post, recorded
from .test_relay_limits import key_with, route_model

pytestmark = pytest.mark.usefixtures("catalog")

MODEL = "gpt-4o"  # priced with cached input below input ($1.25 against $2.50 per 1M)
SYSTEM = "You are a careful assistant. " * 40


@pytest.fixture
def caching_upstreams() -> Iterator[dict[str, Any]]:
    servers = {name: start_in_thread(prompt_cache_s=300) for name in ("cache-a", "cache-b")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def two_routes(relay: Any, caching_upstreams: dict[str, Any]) -> None:
    route_model(relay, MODEL, *((name, s.base_url, 0) for name, s in caching_upstreams.items()))


def turn(relay: Any, secret: str, messages: list[dict[str, str]], **headers: str) -> Any:
    status, response_headers, body = post(
        f"{relay.base_url}/chat/completions",
        {"model": MODEL, "messages": messages, "max_tokens": 8},
        key=secret,
        **headers,
    )
    assert status == 200, body
    return recorded(response_headers["x-request-id"]), body


def last_request(server: Any) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.root_url}/_demo/requests/last", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def billed_at_the_catalog_price(event: Any) -> None:
    price = Model.objects.get(id=MODEL).price
    assert price is not None
    expected = pricing.cost(
        price.as_price(),
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_tokens=event.cached_tokens,
    )
    assert event.cost == expected


def test_the_second_turn_lands_on_the_first_turns_route_and_reads_its_cache(
    relay: Any, alice: Any, worker: Any, two_routes: None
) -> None:
    secret = key_with(alice)
    price = Model.objects.get(id=MODEL).price
    assert price is not None and price.cached_input is not None
    assert price.cached_input < price.input
    providers = set()
    for n in range(8):
        opening = [
            {"role": "system", "content": f"{SYSTEM}(conversation {n})"},
            {"role": "user", "content": f"Conversation {n}: summarise the plan."},
        ]
        first, answer = turn(relay, secret, opening)
        assert first.cached_tokens == 0  # a new opening: a cold cache, written, not read
        providers.add(first.provider)
        follow_up = [
            *opening,
            {"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And the risks?"},
        ]
        second, _ = turn(relay, secret, follow_up)
        assert second.provider == first.provider, f"conversation {n} changed routes"
        # The whole opening (system + first user message) is read from that route's cache...
        assert second.cached_tokens > len(SYSTEM) // 4
        assert second.cached_tokens < second.prompt_tokens
        # ...and billed at the cached price, exactly.
        billed_at_the_catalog_price(second)
        full = pricing.cost(
            price.as_price(),
            prompt_tokens=second.prompt_tokens,
            completion_tokens=second.completion_tokens,
        )
        assert second.cost < full
    assert providers <= {"cache-a", "cache-b"}


def test_a_session_id_or_prompt_cache_key_names_the_conversation(
    relay: Any, alice: Any, worker: Any, two_routes: None, caching_upstreams: dict[str, Any]
) -> None:
    """Requests that share nothing but a session id keep to one route; prompt_cache_key does
    the same and reaches the upstream unchanged."""
    secret = key_with(alice)
    for n in range(4):
        asked = ([{"role": "user", "content": f"q{n}-{i}"}] for i in range(3))
        events = [turn(relay, secret, m, x_session_id=f"s-{n}")[0] for m in asked]
        assert len({e.provider for e in events}) == 1
    status, headers, body = post(
        f"{relay.base_url}/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hello"}],
            "prompt_cache_key": "tenant-42",
        },
        key=secret,
    )
    assert status == 200, body
    first = recorded(headers["x-request-id"]).provider
    for i in range(3):  # other openings, free to go anywhere in between
        turn(relay, secret, [{"role": "user", "content": f"other {i}"}])
    status, headers, body = post(
        f"{relay.base_url}/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "something else"}],
            "prompt_cache_key": "tenant-42",
        },
        key=secret,
    )
    assert status == 200, body
    assert recorded(headers["x-request-id"]).provider == first
    last = last_request(caching_upstreams[first])
    assert last["body"]["prompt_cache_key"] == "tenant-42"


def test_the_pin_expires_when_the_conversation_goes_idle(
    relay: Any, alice: Any, worker: Any, two_routes: None, redis_client: Any
) -> None:
    secret = key_with(alice)
    turn(relay, secret, [{"role": "user", "content": "idle"}], x_session_id="idle-1")
    key = sticky.conversation(alice.account.pk, MODEL, {}, b"idle-1")
    assert key is not None
    ttl = redis_client.ttl(key)
    assert 0 < ttl <= 300
    value = redis_client.get(key)
    text = value.decode() if isinstance(value, bytes) else value
    assert text.split("|")[0] in {"cache-a", "cache-b"}
    # Only a digest names the conversation: no content in the key or the value.
    assert "idle" not in key and "idle" not in text


def test_a_pin_never_overrides_a_priority(
    relay: Any, alice: Any, worker: Any, caching_upstreams: dict[str, Any], redis_client: Any
) -> None:
    """A conversation pinned to a route the operator ranked second goes to the first again."""
    a, b = caching_upstreams["cache-a"], caching_upstreams["cache-b"]
    route_model(relay, MODEL, ("cache-a", a.base_url, 0), ("cache-b", b.base_url, 1))
    secret = key_with(alice)
    key = sticky.conversation(alice.account.pk, MODEL, {}, b"ranked")
    assert key is not None
    redis_client.set(key, f"cache-b|{Model.objects.get(id=MODEL).upstream_model}", ex=300)
    event, _ = turn(relay, secret, [{"role": "user", "content": "hi"}], x_session_id="ranked")
    assert event.provider == "cache-a"
