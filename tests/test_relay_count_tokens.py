"""``POST /v1/messages/count_tokens`` on the relay (the anthropic SDK): the upstream's count on an
Anthropic route, the documented estimate elsewhere, the key's checks, and never billed."""

from __future__ import annotations

import io
import json
import math
import urllib.request
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from django.core.management import call_command

from billing.models import UsageEvent
from keys.services import issue_key, revoke_key

from .conftest import ALICE_STARTS_WITH
from .test_relay import a_later_request_recorded

pytestmark = pytest.mark.usefixtures("catalog")

MESSAGES = [
    {"role": "user", "content": "How many tokens is this?"},
    {"role": "assistant", "content": "Let me count."},
    {"role": "user", "content": [{"type": "text", "text": "Count them all, please."}]},
]
SYSTEM = "You count tokens."


def claude_for(relay: Any, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=relay.base_url.removesuffix("/v1"), api_key=key, max_retries=0
    )


@pytest.fixture
def claude(alice_key: str, relay: Any) -> anthropic.Anthropic:
    return claude_for(relay, alice_key)


def count_requests(demo_upstream: str) -> list[dict[str, Any]]:
    root = demo_upstream.removesuffix("/v1")
    url = f"{root}/_demo/requests?path=/v1/messages/count_tokens"
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.loads(response.read())["requests"])


def clear_demo_requests(demo_upstream: str) -> None:
    root = demo_upstream.removesuffix("/v1")
    request = urllib.request.Request(f"{root}/_demo/requests", method="DELETE")
    urllib.request.urlopen(request, timeout=5).close()


def test_an_anthropic_route_answers_with_the_upstreams_count(
    claude: anthropic.Anthropic, demo_upstream: str
) -> None:
    clear_demo_requests(demo_upstream)
    raw = claude.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4",
        system=SYSTEM,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"x-demo-prompt-tokens": "77", "anthropic-beta": "token-counting-2024-11-01"},
    )
    assert raw.parse().input_tokens == 77
    assert raw.headers["x-token-count"] == "upstream"
    [sent] = count_requests(demo_upstream)
    assert sent["body"]["model"] == "claude-sonnet-4-20250514"
    assert sent["body"]["system"] == SYSTEM and sent["body"]["messages"] == MESSAGES
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["headers"]["anthropic-beta"] == "token-counting-2024-11-01"
    assert "tp-sk-" not in json.dumps(sent["headers"])  # the provider's key, not the client's


def test_another_route_answers_with_the_documented_estimate(
    claude: anthropic.Anthropic, demo_upstream: str
) -> None:
    clear_demo_requests(demo_upstream)
    raw = claude.messages.with_raw_response.count_tokens(
        model="codestral",
        system=SYSTEM,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    chars = len(SYSTEM) + sum(
        len(m["content"]) if isinstance(m["content"], str) else len(m["content"][0]["text"])
        for m in MESSAGES
    )
    assert raw.parse().input_tokens == math.ceil(chars / 4) + 4 * (len(MESSAGES) + 1)
    assert raw.headers["x-token-count"] == "estimate"
    assert count_requests(demo_upstream) == []


@pytest.mark.parametrize("failure", ["503", "529", "disconnect"])
def test_an_anthropic_upstream_that_cannot_count_gets_the_estimate(
    claude: anthropic.Anthropic, failure: str
) -> None:
    raw = claude.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"x-demo-error": failure},
    )
    assert raw.headers["x-token-count"] == "estimate"
    assert raw.parse().input_tokens > 0


def test_the_upstreams_refusal_of_the_request_is_the_clients_answer(
    claude: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.count_tokens(
            model="claude-sonnet-4",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"x-demo-error": "400"},
        )
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_tools_count_in_the_estimate(claude: anthropic.Anthropic) -> None:
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    bare = claude.messages.count_tokens(model="mistral-small", messages=MESSAGES)  # type: ignore[arg-type]
    with_tools = claude.messages.count_tokens(
        model="mistral-small",
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=[tool],  # type: ignore[list-item]
    )
    assert with_tools.input_tokens > bare.input_tokens


def test_counting_is_never_billed(
    claude: anthropic.Anthropic, relay: Any, alice_key: str, worker: Any
) -> None:
    for model in ("claude-sonnet-4", "codestral"):
        claude.messages.count_tokens(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    later = a_later_request_recorded(relay, alice_key)
    assert list(UsageEvent.objects.all()) == [later]
    out = io.StringIO()
    call_command("balance", "alice@example.com", stdout=out)
    assert Decimal(out.getvalue().splitlines()[0]) == ALICE_STARTS_WITH - later.cost


def test_errors_come_in_anthropics_shape(
    claude: anthropic.Anthropic, relay: Any, alice: Any
) -> None:
    wrong = claude_for(relay, "tp-sk-not-a-real-key")
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": caught.value.body["error"]["message"]},  # type: ignore[index]
    }

    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.post(
            "/v1/messages/count_tokens",
            body={"messages": MESSAGES},
            cast_to=object,
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "model" in bad.value.body["error"]["message"]  # type: ignore[index]

    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.count_tokens(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model="claude-sonnet-4", messages=[])


def test_the_keys_limits_apply(relay: Any, alice: Any) -> None:
    _, limited = issue_key(
        account=alice.account,
        name="limited",
        limits={"allowed_models": ["codestral"], "rpm_limit": 1},
    )
    client = claude_for(relay, limited)
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES)  # type: ignore[arg-type]
    client.messages.count_tokens(model="codestral", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as limited_out:
        client.messages.count_tokens(model="codestral", messages=MESSAGES)  # type: ignore[arg-type]
    assert limited_out.value.response.headers["retry-after"]

    key, revoked = issue_key(account=alice.account, name="revoked")
    revoke_key(key=key)
    with pytest.raises(anthropic.AuthenticationError):
        claude_for(relay, revoked).messages.count_tokens(
            model="codestral",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
