"""The relay end to end: its own process, the real Redis, the demo upstream, a real worker."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.core.management import call_command

from billing.models import LedgerEntry, UsageEvent
from catalog.models import Model
from core import keyformat
from core.pricing import Price, cost
from keys.models import ApiKey
from keys.services import issue_key, revoke_key

from .conftest import ALICE_STARTS_WITH, credit, free_port, publish_catalog, wait_until

pytestmark = pytest.mark.usefixtures("catalog")


def post(
    url: str, body: bytes | dict[str, Any], key: str | None = None, **headers: str
) -> tuple[int, dict[str, Any], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def chat(model: str = "mistral-large-2", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}


def price_of(model_id: str) -> Price:
    p = Model.objects.get(id=model_id).price
    assert p is not None
    return Price(
        version=p.version, input=p.input, output=p.output, cached_input=p.cached_input or p.input
    )


def recorded(request_id: str) -> UsageEvent:
    return wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first(), timeout=10)


def a_later_request_recorded(relay: Any, key: str, model: str = "mistral-large-2") -> UsageEvent:
    """Sends one more request and waits until the worker has recorded it. Usage events leave a
    relay in order and the worker records their batches in order, so whatever an earlier
    request left to record is recorded by then: call it before asserting that something was
    not."""
    status, headers, body = post(f"{relay.base_url}/chat/completions", chat(model), key=key)
    assert status == 200, body
    return recorded(headers["x-request-id"])


def assert_billed_only(event: UsageEvent) -> None:
    """Nothing but ``event`` cost anything: no other usage with a cost, and one debit of its
    cost (an event recorded in the same batch would have added to that debit)."""
    assert list(UsageEvent.objects.filter(cost__gt=0)) == [event]
    assert [e.amount for e in LedgerEntry.objects.filter(kind="usage")] == [-event.cost]


def assert_error(status: int, body: dict[str, Any], expected: int, code: str | None = None) -> None:
    assert status == expected, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code:
        assert body["error"]["code"] == code


# ---- authentication and bad input ---------------------------------------------------------


def test_it_refuses_a_missing_key(relay: Any) -> None:
    status, headers, body = post(f"{relay.base_url}/chat/completions", chat())
    assert_error(status, body, 401)
    assert headers["x-request-id"].startswith("req_")


def test_it_refuses_a_garbled_key_without_echoing_it(relay: Any) -> None:
    garbled = keyformat.generate()[:-1] + "#"
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=garbled)
    assert_error(status, body, 401, "invalid_api_key")
    assert garbled not in json.dumps(body)


def test_it_refuses_an_unknown_key(relay: Any) -> None:
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=keyformat.generate())
    assert_error(status, body, 401, "invalid_api_key")


def test_it_answers_404_for_an_unknown_model(relay: Any, alice_key: str) -> None:
    status, _, body = post(
        f"{relay.base_url}/chat/completions", chat("no-such-model"), key=alice_key
    )
    assert_error(status, body, 404, "model_not_found")
    assert body["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"{not json", None),
        (b"\xff\xfe{}", None),
        (b"[]", None),
        (json.dumps({"model": 5, "messages": []}).encode(), "model"),
        (json.dumps({"model": "mistral-small", "messages": []}).encode(), "messages"),
        (json.dumps({"model": "mistral-small", "messages": "hi"}).encode(), "messages"),
        (json.dumps(chat("mistral-small", max_tokens=-5)).encode(), "max_tokens"),
        (json.dumps(chat("mistral-small", stream="yes")).encode(), "stream"),
    ],
)
def test_it_answers_400_to_malformed_requests(
    relay: Any, alice_key: str, payload: bytes, param: str | None
) -> None:
    status, _, body = post(f"{relay.base_url}/chat/completions", payload, key=alice_key)
    assert_error(status, body, 400)
    assert body["error"]["param"] == param


def test_it_answers_413_to_an_oversized_body(tmp_path: Any, alice_key: str) -> None:
    from .conftest import start_relay

    small = start_relay(tmp_path, TP_RELAY_MAX_BODY_BYTES="1000")
    try:
        big = chat(messages=[{"role": "user", "content": "x" * 2000}])
        status, _, body = post(f"{small.base_url}/chat/completions", big, key=alice_key)
        assert_error(status, body, 413)
    finally:
        small.stop()


def test_it_answers_402_when_the_balance_cannot_pay(relay: Any, bob: Any) -> None:
    _, key = issue_key(account=bob.account, name="empty")  # bob has paid nothing
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=key)
    assert_error(status, body, 402, "insufficient_quota")
    assert not UsageEvent.objects.exists()


def test_it_answers_502_when_the_upstream_is_unreachable(
    relay: Any, alice_key: str, settings: Any, worker: Any
) -> None:
    reachable = settings.TP_DEMO_UPSTREAM_URL
    settings.TP_DEMO_UPSTREAM_URL = f"http://127.0.0.1:{free_port()}/v1"
    publish_catalog(relay)
    status, _, body = post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)
    assert_error(status, body, 502)
    assert "127.0.0.1" not in body["error"]["message"]
    # The upstream back: a later request is billed, and it is the only one.
    settings.TP_DEMO_UPSTREAM_URL = reachable
    publish_catalog(relay)
    later = a_later_request_recorded(relay, alice_key)
    assert_billed_only(later)


def test_injected_upstream_errors_are_openai_shaped_and_free(
    relay: Any, alice_key: str, worker: Any
) -> None:
    for injected, expected in (("500", 502), ("429", 429), ("503", 502)):
        status, headers, body = post(
            f"{relay.base_url}/chat/completions", chat(), key=alice_key, x_demo_error=injected
        )
        assert_error(status, body, expected)
        if expected == 429:
            assert "retry-after" in {h.lower() for h in headers}
    later = a_later_request_recorded(relay, alice_key)
    assert_billed_only(later)


# ---- billing --------------------------------------------------------------------------------


def test_a_call_costs_tokens_times_catalog_price_exactly(
    relay: Any, alice: Any, alice_key: str, worker: Any
) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="mistral-large-2",
        messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"x-demo-completion-tokens": "37", "x-demo-prompt-tokens": "1234"},
    )
    reply = raw.parse()
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (1234, 37)
    request_id = raw.headers["x-request-id"]
    event = recorded(request_id)
    expected = cost(price_of("mistral-large-2"), prompt_tokens=1234, completion_tokens=37)
    assert (
        expected
        == Decimal("1234") * Decimal("2.00") / 10**6 + Decimal(37) * Decimal("6.00") / 10**6
    )
    assert event.cost == expected
    assert not event.estimated
    assert (
        LedgerEntry.objects.filter(account=alice.account).order_by("-seq").first().balance_after
        == ALICE_STARTS_WITH - expected
    )


def test_a_streamed_call_is_billed_from_the_upstream_usage(
    relay: Any, alice: Any, alice_key: str, worker: Any
) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="codestral",
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
        extra_headers={"x-demo-completion-tokens": "20", "x-demo-prompt-tokens": "50"},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    # The client did not ask for usage: the usage-only chunk is not passed on.
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    event = recorded(request_id)
    assert (event.prompt_tokens, event.completion_tokens, event.streamed) == (50, 20, True)
    assert event.cost == cost(price_of("codestral"), prompt_tokens=50, completion_tokens=20)


@pytest.mark.parametrize("model", ["codestral", "claude-sonnet-4"])
def test_a_client_that_hangs_up_after_the_last_event_is_billed_the_real_usage(
    relay: Any, alice: Any, alice_key: str, worker: Any, model: str
) -> None:
    """SDKs close the connection as soon as they read [DONE]; if the upstream ends its body a
    moment later, the answer was still complete: billed from the upstream's usage, not as a
    client that left mid-answer."""
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
        extra_headers={
            "x-demo-completion-tokens": "20",
            "x-demo-prompt-tokens": "50",
            "x-demo-linger-ms": "1000",
        },
    ) as response:
        request_id = response.headers["x-request-id"]
        assert list(response.parse())
    event = recorded(request_id)
    assert (event.prompt_tokens, event.completion_tokens) == (50, 20)
    assert (event.status, event.estimated) == ("ok", False)
    assert event.cost == cost(price_of(model), prompt_tokens=50, completion_tokens=20)


def test_a_stream_passes_usage_on_when_asked(relay: Any, alice_key: str, worker: Any) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    stream = client.chat.completions.create(
        model="mistral-small",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-demo-completion-tokens": "8"},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].choices == []


def test_a_stream_cut_by_the_upstream_is_billed_as_an_estimate(
    relay: Any, alice_key: str, worker: Any
) -> None:
    request = urllib.request.Request(
        f"{relay.base_url}/chat/completions",
        data=json.dumps(chat("mistral-small", stream=True)).encode(),
        headers={
            "Authorization": f"Bearer {alice_key}",
            "Content-Type": "application/json",
            "x-demo-error": "cut",
            "x-demo-completion-tokens": "30",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        try:
            response.read()
        except Exception:
            pass
    event = recorded(request_id)
    assert event.estimated
    assert event.status == "upstream_cut"
    assert event.cost > 0
    assert event.completion_tokens > 0


def test_balance_shows_the_debit_within_two_seconds(
    relay: Any, alice: Any, alice_key: str, worker: Any
) -> None:
    status, _, reply = post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)
    assert status == 200
    started = time.monotonic()
    expected = ALICE_STARTS_WITH - cost(
        price_of("mistral-large-2"),
        prompt_tokens=reply["usage"]["prompt_tokens"],
        completion_tokens=reply["usage"]["completion_tokens"],
    )

    def shows_debit() -> bool:
        out = io.StringIO()
        call_command("balance", "alice@example.com", stdout=out)
        return Decimal(out.getvalue().splitlines()[0]) == expected

    wait_until(shows_debit, timeout=2)
    assert time.monotonic() - started < 2


def test_concurrent_requests_never_overspend(relay: Any, make_user: Any, worker: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    carol = make_user("carol@example.com")
    price = price_of("mistral-small")
    # Each request holds prompt bytes + 100 output tokens; pay for exactly 5 such holds.
    body = chat("mistral-small", max_tokens=100)
    raw_size = len(json.dumps(body).encode())
    one = cost(price, prompt_tokens=raw_size, completion_tokens=100)
    credit(carol, one * 5)
    _, key = issue_key(account=carol.account, name="burst")
    url = f"{relay.base_url}/chat/completions"
    with ThreadPoolExecutor(20) as pool:
        results = list(
            pool.map(lambda _: post(url, body, key=key, x_demo_latency_ms="200")[0], range(20))
        )
    assert results.count(200) <= 5
    assert results.count(200) + results.count(402) == 20
    wait_until(
        lambda: UsageEvent.objects.filter(account=carol.account).count() == results.count(200)
    )
    from billing import ledger

    assert ledger.balance(carol.account) >= 0


def test_usage_is_recorded_once_even_if_the_batch_is_redelivered(
    relay: Any, alice: Any, alice_key: str, worker: Any
) -> None:
    from billing.usage import record_batch

    _, headers, _ = post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)
    event = recorded(headers["x-request-id"])
    again = {
        "request_id": event.request_id,
        "account": alice.account.pk,
        "key": event.key_id,
        "model": event.model_id,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "cost": str(event.cost),
        "price_version": event.price_version,
        "started_at": event.started_at.timestamp(),
    }
    assert record_batch([again, again]) == 0
    assert LedgerEntry.objects.filter(account=alice.account, kind="usage").count() == 1
    call_command("reconcile", stdout=io.StringIO())


# ---- keys -------------------------------------------------------------------------------------


def test_a_revoked_key_is_refused_within_one_second(relay: Any, alice: Any, alice_key: str) -> None:
    url = f"{relay.base_url}/chat/completions"
    assert post(url, chat(), key=alice_key)[0] == 200  # now cached by the relay
    revoke_key(key=ApiKey.objects.get(account=alice.account))
    revoked_at = time.monotonic()
    wait_until(lambda: post(url, chat(), key=alice_key)[0] == 401, timeout=1, interval=0.02)
    assert time.monotonic() - revoked_at < 1


def test_models_are_listed_in_openai_format(relay: Any, alice_key: str) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {
        "mistral-large-2",
        "mistral-small",
        "mistral-embed",
        "codestral",
        "gpt-4o",
        "deepseek-v4-flash",
        "claude-sonnet-4",
    } <= ids
    assert client.models.retrieve("codestral").owned_by == "mistral"


def test_embeddings_are_billed_at_the_input_price(relay: Any, alice_key: str, worker: Any) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="mistral-embed", input=["one", "two"])
    result = raw.parse()
    assert len(result.data) == 2
    event = recorded(raw.headers["x-request-id"])
    assert event.cost == cost(
        price_of("mistral-embed"), prompt_tokens=result.usage.prompt_tokens, completion_tokens=0
    )


def test_a_keys_last_use_is_recorded_with_a_coarse_network(
    relay: Any, alice: Any, alice_key: str, worker: Any
) -> None:
    _, headers, _ = post(f"{relay.base_url}/chat/completions", chat(), key=alice_key)
    recorded(headers["x-request-id"])
    key = ApiKey.objects.get(account=alice.account)
    assert key.last_used_at is not None
    assert key.last_used_from == "127.0.0.0/24"
