"""The Anthropic Messages API on the relay (the anthropic SDK), for any catalog model, and
OpenAI-format requests to an Anthropic upstream — translated both ways, streams included."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from billing.models import UsageEvent
from core.pricing import cost
from keys.services import issue_key

from .conftest import wait_until
from .test_relay import price_of

pytestmark = pytest.mark.usefixtures("catalog")

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def claude(alice_key: str, relay: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=relay.base_url.removesuffix("/v1"), api_key=alice_key, max_retries=0
    )


def recorded(request_id: str) -> UsageEvent:
    return wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first(), timeout=10)


@pytest.mark.parametrize("model", ["claude-sonnet-4", "mistral-large-2"])
def test_the_anthropic_sdk_gets_a_message_for_any_model(
    claude: anthropic.Anthropic, model: str, worker: Any
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=model,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"x-demo-completion-tokens": "12", "x-demo-prompt-tokens": "40"},
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens == 12
    event = recorded(raw.headers["x-request-id"])
    assert (event.prompt_tokens, event.completion_tokens) == (40, 12)
    assert event.cost == cost(price_of(model), prompt_tokens=40, completion_tokens=12)


@pytest.mark.parametrize("model", ["claude-sonnet-4", "mistral-large-2"])
def test_the_anthropic_sdk_streams_for_any_model(
    claude: anthropic.Anthropic, model: str, worker: Any
) -> None:
    with claude.messages.stream(
        model=model,
        max_tokens=100,
        messages=[{"role": "user", "content": "Count to five"}],
        extra_headers={"x-demo-completion-tokens": "20", "x-demo-prompt-tokens": "30"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text
    assert final.usage.output_tokens == 20
    event = recorded(request_id)
    assert (event.prompt_tokens, event.completion_tokens, event.streamed) == (30, 20, True)
    assert not event.estimated


@pytest.mark.parametrize("model", ["claude-sonnet-4", "mistral-large-2"])
def test_the_anthropic_sdk_gets_tool_use(claude: anthropic.Anthropic, model: str) -> None:
    message = claude.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER_ANTHROPIC],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    use = next(block for block in message.content if block.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input
    follow_up = claude.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER_ANTHROPIC],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump() for block in message.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21C"}
                ],
            },
        ],
    )
    assert follow_up.content


def test_the_openai_sdk_reaches_an_anthropic_upstream(
    alice_key: str, relay: Any, worker: Any
) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        extra_headers={
            "x-demo-prompt-tokens": "1000",
            "x-demo-cached-tokens": "800",
            "x-demo-completion-tokens": "10",
        },
    )
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.choices[0].message.content
    assert reply.usage.prompt_tokens == 1000
    assert reply.usage.prompt_tokens_details.cached_tokens == 800
    event = recorded(raw.headers["x-request-id"])
    assert event.cached_tokens == 800
    assert event.cost == cost(
        price_of("claude-sonnet-4"), prompt_tokens=1000, completion_tokens=10, cached_tokens=800
    )


def test_openai_streams_and_tools_from_an_anthropic_upstream(alice_key: str, relay: Any) -> None:
    client = openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="claude-sonnet-4",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    reply = client.chat.completions.create(
        model="claude-sonnet-4",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_OPENAI],
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments)["city"]


def test_messages_errors_come_in_anthropics_shape(relay: Any, alice_key: str, bob: Any) -> None:
    root = relay.base_url.removesuffix("/v1")
    with pytest.raises(anthropic.AuthenticationError) as excinfo:
        anthropic.Anthropic(base_url=root, api_key="nope", max_retries=0).messages.create(
            model="claude-sonnet-4", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    assert excinfo.value.body["type"] == "error"
    client = anthropic.Anthropic(base_url=root, api_key=alice_key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-sonnet-4", max_tokens=10, messages=[])
    empty = issue_key(account=bob.account, name="empty")[1]  # bob has paid nothing
    with pytest.raises(anthropic.APIStatusError) as excinfo:
        anthropic.Anthropic(base_url=root, api_key=empty, max_retries=0).messages.create(
            model="claude-sonnet-4", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    assert excinfo.value.status_code == 402
    assert excinfo.value.body["error"]["type"] == "billing_error"
