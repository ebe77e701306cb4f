"""JSON mode, JSON schemas and tool calls through the relay, as the docs show them: the openai
SDK with a real key, on an OpenAI-shaped route (gpt-4o) and on an Anthropic one (claude-sonnet-4),
whose requests and answers the relay translates."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

pytestmark = pytest.mark.usefixtures("catalog")

ROUTES = ["gpt-4o", "claude-sonnet-4"]
HELLO: Any = [{"role": "user", "content": "Extract the event: Alice meets Bob on Friday."}]
EVENT: Any = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "day": {"type": "string", "enum": ["Friday", "Saturday"]},
        "participants": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["name", "day", "participants"],
    "additionalProperties": False,
}
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    }
]


@pytest.fixture
def client(alice_key: str, relay: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)


@pytest.mark.parametrize("model", ROUTES)
def test_json_mode_and_json_schema_through_the_relay(client: openai.OpenAI, model: str) -> None:
    mode = client.chat.completions.create(
        model=model, messages=HELLO, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(mode.choices[0].message.content or ""), dict)

    schema: Any = {"type": "json_schema", "json_schema": {"name": "event", "schema": EVENT}}
    plain = client.chat.completions.create(model=model, messages=HELLO, response_format=schema)
    jsonschema.validate(json.loads(plain.choices[0].message.content or ""), EVENT)

    stream = client.chat.completions.create(
        model=model, messages=HELLO, response_format=schema, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), EVENT)


@pytest.mark.parametrize("model", ROUTES)
def test_tool_calls_through_the_relay(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=HELLO, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    jsonschema.validate(arguments, TOOLS[0]["function"]["parameters"])

    chunks = list(
        client.chat.completions.create(model=model, messages=HELLO, tools=TOOLS, stream=True)
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    streamed = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(streamed) == arguments
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls"

    answered = client.chat.completions.create(
        model=model,
        tools=TOOLS,
        messages=[
            *HELLO,
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 21}'},
        ],
    )
    assert answered.choices[0].finish_reason == "stop", "the loop ends after the tool's result"
    assert answered.choices[0].message.content
