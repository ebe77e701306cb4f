"""OpenAI's Responses API on the relay (``POST /v1/responses``) with the openai SDK's own
``client.responses``: translated to chat and back for an OpenAI-compatible (Mistral, OpenAI)
and an Anthropic-shaped upstream, streams included, billed exactly as chat is."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFailedEvent,
    ResponseStreamEvent,
)

from billing.models import UsageEvent
from catalog.models import Model
from core.pricing import cost
from keys.services import issue_key

from .conftest import credit, publish_catalog, wait_until
from .test_relay import a_later_request_recorded, assert_billed_only, post, recorded
from .test_relay_quirks import add_model

pytestmark = pytest.mark.usefixtures("catalog")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def client(alice_key: str, relay: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)


def billed(model: str, **counts: int) -> Any:
    """What the catalog's current price version charges for these token counts."""
    price = Model.objects.get(id=model).price
    assert price is not None
    return cost(price.as_price(), **counts)


def last_upstream_request(demo_upstream: str) -> dict[str, Any]:
    root = demo_upstream.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_demo/requests/last", timeout=5) as response:
        return json.loads(response.read())


def sent_body(demo_upstream: str) -> dict[str, Any]:
    body = last_upstream_request(demo_upstream)["body"]
    return body if isinstance(body, dict) else json.loads(body)


# ---- plain -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mistral-large-2", "gpt-4o", "claude-sonnet-4"])
def test_it_answers_a_string_input_and_bills_it_exactly(
    client: openai.OpenAI, model: str, worker: Any
) -> None:
    raw = client.responses.with_raw_response.create(
        model=model,
        input="Say hello",
        extra_headers={"x-demo-completion-tokens": "37", "x-demo-prompt-tokens": "1234"},
    )
    response = raw.parse()
    assert isinstance(response, Response)
    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.model) == ("completed", model)
    assert response.output_text
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1234, 37)
    assert response.usage.total_tokens == 1271
    event = recorded(raw.headers["x-request-id"])
    assert (event.prompt_tokens, event.completion_tokens, event.estimated) == (1234, 37, False)
    assert (event.status, event.streamed) == ("ok", False)
    assert event.cost == billed(model, prompt_tokens=1234, completion_tokens=37)
    assert event.cost > 0


def test_cached_and_reasoning_tokens_are_reported_and_billed_at_their_prices(
    client: openai.OpenAI, worker: Any
) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-4o",
        input="Think",
        extra_headers={
            "x-demo-prompt-tokens": "2000",
            "x-demo-cached-tokens": "1500",
            "x-demo-completion-tokens": "20",
            "x-demo-reasoning-tokens": "30",
        },
    )
    usage = raw.parse().usage
    assert usage is not None
    assert usage.input_tokens_details.cached_tokens == 1500
    assert usage.output_tokens_details.reasoning_tokens == 30
    assert usage.output_tokens == 50  # reasoning is part of the output, as in chat
    event = recorded(raw.headers["x-request-id"])
    assert (event.cached_tokens, event.reasoning_tokens) == (1500, 30)
    assert event.cost == billed(
        "gpt-4o",
        prompt_tokens=2000,
        completion_tokens=50,
        cached_tokens=1500,
        reasoning_tokens=30,
    )


def test_item_input_with_instructions_becomes_the_chat_conversation(
    client: openai.OpenAI, demo_upstream: str
) -> None:
    response = client.responses.create(
        model="mistral-large-2",
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "message", "role": "assistant", "content": "Bonjour"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png"},
                ],
            },
        ],
        temperature=0.3,
        top_p=0.9,
        max_output_tokens=64,
        metadata={"ticket": "42"},
    )
    assert response.status == "completed"
    assert response.instructions == "Be brief."
    assert response.metadata == {"ticket": "42"}
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.3, 0.9, 64)
    sent = sent_body(demo_upstream)
    assert sent["messages"][:4] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
    ]
    assert sent["messages"][4]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png"},
    }
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.9, 64)
    # Ours: never sent upstream.
    assert "metadata" not in sent and "store" not in sent and "input" not in sent


def test_a_reasoning_effort_reaches_a_reasoning_model_and_is_dropped_for_others(
    client: openai.OpenAI, relay: Any, demo_upstream: str
) -> None:
    add_model("o4-mini", "openai", "o4-mini")
    publish_catalog(relay)
    client.responses.create(
        model="o4-mini", input="Hi", reasoning={"effort": "low"}, max_output_tokens=50
    )
    sent = sent_body(demo_upstream)
    assert sent["reasoning_effort"] == "low"
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    client.responses.create(model="mistral-small", input="Hi", reasoning={"effort": "low"})
    assert "reasoning_effort" not in sent_body(demo_upstream)


# ---- streaming -------------------------------------------------------------------------------


def stream_events(client: openai.OpenAI, **params: Any) -> tuple[str, list[Any]]:
    with client.responses.with_streaming_response.create(stream=True, **params) as response:
        request_id = response.headers["x-request-id"]
        events = list(response.parse())
    return request_id, events


@pytest.mark.parametrize("model", ["codestral", "claude-sonnet-4"])
def test_a_stream_sends_the_typed_events_in_order_and_is_billed_from_the_usage(
    client: openai.OpenAI, model: str, worker: Any
) -> None:
    request_id, events = stream_events(
        client,
        model=model,
        input="Count",
        extra_headers={"x-demo-completion-tokens": "20", "x-demo-prompt-tokens": "50"},
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert text and done.text == text
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == text
    assert completed.response.usage is not None
    assert (completed.response.usage.input_tokens, completed.response.usage.output_tokens) == (
        50,
        20,
    )
    event = recorded(request_id)
    assert (event.prompt_tokens, event.completion_tokens) == (50, 20)
    assert (event.status, event.estimated, event.streamed) == ("ok", False, True)
    assert event.cost == billed(model, prompt_tokens=50, completion_tokens=20)


def test_the_sdk_stream_helper_builds_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="mistral-small", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)


def test_a_stream_cut_by_the_upstream_fails_and_is_billed_as_an_estimate(
    client: openai.OpenAI, worker: Any
) -> None:
    request_id, events = stream_events(
        client,
        model="mistral-small",
        input="Count",
        extra_headers={"x-demo-error": "cut", "x-demo-completion-tokens": "30"},
    )
    assert events[0].type == "response.created"
    assert isinstance(events[-1], ResponseFailedEvent)
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    assert [e.sequence_number for e in events] == list(range(len(events)))
    event = recorded(request_id)
    assert (event.status, event.estimated) == ("upstream_cut", True)
    assert event.completion_tokens > 0 and event.cost > 0


def test_a_client_that_hangs_up_mid_stream_is_billed_what_was_sent(
    relay: Any, alice_key: str, demo_upstream: str, worker: Any
) -> None:
    body = json.dumps({"model": "mistral-small", "input": "Count", "stream": True}).encode()
    host, port = relay.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: relay\r\n"
            + b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {alice_key}\r\nx-demo-completion-tokens: 64\r\n".encode()
            + b"x-demo-chunk-delay-ms: 100\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"response.output_text.delta") < 8:  # event: and type: each
            received += sock.recv(65536)
    request_id = received.split(b"x-request-id: ")[1].split(b"\r\n")[0].decode()
    event = wait_until(lambda: UsageEvent.objects.filter(request_id=request_id).first())
    assert (event.status, event.estimated) == ("client_closed", True)
    assert 0 < event.completion_tokens < 64
    assert event.cost > 0


# ---- tools and structured output -------------------------------------------------------------


@pytest.mark.parametrize("model", ["mistral-large-2", "gpt-4o", "claude-sonnet-4"])
def test_a_function_call_round_trip(client: openai.OpenAI, model: str, demo_upstream: str) -> None:
    first = client.responses.create(
        model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="auto"
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    assert "city" in json.loads(call.arguments)
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"
    second = client.responses.create(
        model=model,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.status == "completed"
    assert second.output_text
    if model == "gpt-4o":
        messages = sent_body(demo_upstream)["messages"]
        assert messages[1]["tool_calls"][0]["id"] == call.call_id
        assert messages[2] == {
            "role": "tool",
            "tool_call_id": call.call_id,
            "content": "18C, sunny",
        }


@pytest.mark.parametrize("model", ["mistral-large-2", "gpt-4o", "claude-sonnet-4"])
def test_a_streamed_function_call_sends_its_arguments_events(
    client: openai.OpenAI, model: str
) -> None:
    _, events = stream_events(
        client,
        model=model,
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert done.arguments == deltas and "city" in json.loads(deltas)
    item = events[-1].response.output[0]
    assert (item.type, item.name, item.arguments) == ("function_call", "get_weather", deltas)
    assert kinds[-1] == "response.completed"


def test_a_json_schema_text_format_gives_parseable_output(
    client: openai.OpenAI, demo_upstream: str
) -> None:
    class City(pydantic.BaseModel):
        name: str
        population: int

    parsed = client.responses.parse(model="gpt-4o", input="A city", text_format=City)
    assert isinstance(parsed.output_parsed, City)
    sent = sent_body(demo_upstream)
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "City"
    json_object = client.responses.create(
        model="mistral-small", input="JSON please", text={"format": {"type": "json_object"}}
    )
    assert isinstance(json.loads(json_object.output_text), dict)


def test_max_output_tokens_reached_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="mistral-small",
        input="Write a lot",
        max_output_tokens=5,
        extra_headers={"x-demo-completion-tokens": "50"},
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    _, events = stream_events(
        client,
        model="mistral-small",
        input="Write a lot",
        max_output_tokens=5,
        extra_headers={"x-demo-completion-tokens": "50"},
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


# ---- refusals and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"background": True}, "background"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"input": ""}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
    ],
)
def test_what_needs_stored_content_is_refused_and_free(
    relay: Any, alice_key: str, worker: Any, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "mistral-small", "input": "Hi", **extra}
    status, headers, reply = post(f"{relay.base_url}/responses", body, key=alice_key)
    assert status == 400, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["param"] == param
    assert not UsageEvent.objects.filter(request_id=headers["x-request-id"]).exists()
    assert_billed_only(a_later_request_recorded(relay, alice_key))


def test_store_false_is_accepted(client: openai.OpenAI) -> None:
    assert client.responses.create(model="mistral-small", input="Hi", store=False).store is False


def test_a_bad_key_is_a_401_in_openai_shape(relay: Any) -> None:
    bad = openai.OpenAI(base_url=relay.base_url, api_key="tp-sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.responses.create(model="mistral-small", input="Hi")
    assert caught.value.status_code == 401
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "invalid_api_key"


def test_an_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="Hi")


def test_bob_is_billed_for_his_responses_and_cannot_reach_alices(
    client: openai.OpenAI, relay: Any, alice: Any, bob: Any, worker: Any
) -> None:
    """Nothing is stored, so alice's response cannot be continued by anyone; bob's own calls
    are billed to bob's account, never to alice's."""
    credit(bob, 5)
    _, bob_key = issue_key(account=bob.account, name="bob")
    alices = client.responses.with_raw_response.create(model="mistral-small", input="Secret")
    alice_event = recorded(alices.headers["x-request-id"])
    status, _, reply = post(
        f"{relay.base_url}/responses",
        {"model": "mistral-small", "input": "Hi", "previous_response_id": alices.parse().id},
        key=bob_key,
    )
    assert status == 400 and reply["error"]["param"] == "previous_response_id"
    assert "Secret" not in json.dumps(reply)
    bobs = openai.OpenAI(base_url=relay.base_url, api_key=bob_key, max_retries=0)
    raw = bobs.responses.with_raw_response.create(model="mistral-small", input="Hi")
    bob_event = recorded(raw.headers["x-request-id"])
    assert bob_event.account_id == bob.account.id
    assert alice_event.account_id == alice.account.id
    assert list(UsageEvent.objects.filter(account=bob.account)) == [bob_event]
