"""The OpenAI protocol through the relay, as the openai SDK uses it: every parameter reaches
the upstream, tool calls and streams come back framed as OpenAI frames them."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.usefixtures("catalog")

WEATHER = {
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


@pytest.fixture
def client(alice_key: str, relay: Any) -> openai.OpenAI:
    """The openai SDK with alice's key."""
    return openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)


def last_upstream_request(demo_upstream: str) -> dict[str, Any]:
    root = demo_upstream.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_demo/requests/last", timeout=5) as response:
        return json.loads(response.read())


def test_every_sampling_parameter_reaches_the_upstream(
    client: openai.OpenAI, demo_upstream: str
) -> None:
    client.chat.completions.create(
        model="mistral-large-2",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logprobs=True,
        top_logprobs=2,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": {"type": "object"}},
        },
        user="end-user-1",
    )
    body = last_upstream_request(demo_upstream)["body"]
    assert body["model"] == "mistral-large-2407"  # the route's upstream model
    for name, value in {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "random_seed": 7,  # Mistral's name for it (relay.adapters.quirks)
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logprobs": True,
        "top_logprobs": 2,
        "user": "end-user-1",
    }.items():
        assert body[name] == value, name
    assert body["response_format"]["type"] == "json_schema"
    assert body["messages"][1]["content"] == [{"type": "text", "text": "Hi"}]


def test_images_pass_through_to_a_vision_model(client: openai.OpenAI, demo_upstream: str) -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
    }
    reply = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
    )
    assert reply.choices[0].message.content
    assert last_upstream_request(demo_upstream)["body"]["messages"][0]["content"][1] == image


def test_tool_calls_come_back(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="mistral-large-2",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="auto",
        parallel_tool_calls=True,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


def test_streamed_tool_call_deltas_reassemble(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="mistral-large-2",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert "city" in json.loads(arguments)
    assert finish == "tool_calls"


def test_the_stream_is_framed_as_openai_frames_it(client: openai.OpenAI, relay: Any) -> None:
    request = urllib.request.Request(
        f"{relay.base_url}/chat/completions",
        data=json.dumps(
            {
                "model": "mistral-small",
                "stream": True,
                "messages": [{"role": "user", "content": "Hi"}],
            }
        ).encode(),
        headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        chunk = json.loads(event[6:])
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"], "no usage-only chunk unless asked for"


def test_embeddings_options_pass_through(client: openai.OpenAI, demo_upstream: str) -> None:
    result = client.embeddings.create(
        model="mistral-embed", input="hello", dimensions=8, encoding_format="float"
    )
    assert len(result.data[0].embedding) == 8
    body = last_upstream_request(demo_upstream)["body"]
    assert body["dimensions"] == 8 and body["model"] == "mistral-embed"


def test_model_ids_resolve_by_id_prefix_and_alias(client: openai.OpenAI) -> None:
    for model in ("mistral-large-2", "mistral/mistral-large-2", "mistral-large"):
        assert client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}]
        ).choices
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="mistral-embed", messages=[{"role": "user", "content": "Hi"}]
        )
