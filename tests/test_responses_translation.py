"""The Responses translation on its own (relay.adapters.responses): what the demo upstream
never sends (reasoning text, interleaved parallel calls, refusals, error chunks), every answer
and event parsed with the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from relay.adapters.responses import (
    ChatStreamToResponses,
    chat_response_to_responses,
    responses_request_to_chat,
    validate_responses_request,
)
from relay.errors import RelayError
from relay.exchange import make_exchange
from relay.usage import Usage

EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)
REQUEST = {"model": "m", "input": "Hi"}


def events(frames: list[bytes]) -> list[Any]:
    """Each SSE frame parsed with the SDK's union of stream events; its event: name checked."""
    parsed = []
    for frame in frames:
        name, data = frame.decode().strip().split("\n")
        event = EVENTS.validate_python(orjson.loads(data.removeprefix("data: ")))
        assert name == f"event: {event.type}"
        parsed.append(event)
    return parsed


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_items_become_chat_messages_in_order() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Looking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "w",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "18C"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "21C"}],
            },
        ],
        "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "w"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "max_output_tokens": 99,
        "stream": True,
        "metadata": {"a": "b"},
    }
    validate_responses_request(body)
    chat = responses_request_to_chat(body)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assistant = chat["messages"][2]
    assert assistant["content"] == "Looking."
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][4] == {"role": "tool", "tool_call_id": "c2", "content": "21C"}
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}},
    }
    assert chat["max_tokens"] == 99
    assert chat["stream_options"] == {"include_usage": True}
    assert "metadata" not in chat


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "web_search_call"}]}, "input"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as caught:
        request = {**REQUEST, **body}
        validate_responses_request(request)
        responses_request_to_chat(request)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_completion_with_reasoning_text_and_calls_is_a_response() -> None:
    chat = {
        "id": "chatcmpl-1",
        "created": 1700000000,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "reasoning_content": "Two cities.",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
            }
        ],
    }
    usage = Usage(100, 40, cached_tokens=60, reasoning_tokens=10)
    out = Response.model_validate(chat_response_to_responses(chat, usage, REQUEST, "resp_x", "m"))
    assert [i.type for i in out.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert out.output[0].content[0].text == "Two cities."
    assert [i.call_id for i in out.output[2:]] == ["c1", "c2"]
    assert out.status == "completed" and out.store is False
    assert out.usage.input_tokens_details.cached_tokens == 60
    assert out.usage.output_tokens_details.reasoning_tokens == 10
    assert out.usage.total_tokens == 140


def test_a_stream_with_reasoning_then_text_then_interleaved_calls() -> None:
    stream = ChatStreamToResponses(REQUEST, "resp_x", "m")
    frames: list[bytes] = []
    for part in (
        chunk({"role": "assistant", "reasoning_content": "Thinking"}),
        chunk({"reasoning_content": " more"}),
        chunk({"content": "Hello"}),
        chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": ""}}]}
        ),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "c2", "function": {"name": "w", "arguments": '{"ci'}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'ty":"Rome"}'}}]}),
        chunk({}, "tool_calls"),
    ):
        frames.extend(stream.feed(part))
    frames.extend(stream.complete(Usage(10, 5)))
    parsed = events(frames)
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    kinds = [e.type for e in parsed]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds.count("response.reasoning_text.delta") == 2
    assert kinds[-1] == "response.completed"
    final = parsed[-1].response
    assert [i.type for i in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert final.output[0].content[0].text == "Thinking more"
    assert final.output_text == "Hello"
    assert [i.arguments for i in final.output[2:]] == ['{"city":"Paris"}', '{"city":"Rome"}']
    done = [e for e in parsed if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"city":"Paris"}', '{"city":"Rome"}']
    assert stream.finished and stream.complete(None) == []


def test_an_upstream_error_chunk_fails_the_response_without_leaking() -> None:
    stream = ChatStreamToResponses(REQUEST, "resp_x", "m")
    frames = stream.feed(chunk({"content": "Hi"}))
    frames += stream.feed(
        {"error": {"message": "boom at https://internal.example/x sk-abcdefghijkl"}}
    )
    parsed = events(frames)
    assert parsed[-1].type == "response.failed"
    assert parsed[-1].response.error is not None
    assert "internal.example" not in parsed[-1].response.error.message
    assert "sk-abc" not in parsed[-1].response.error.message
    assert parsed[-2].item.status == "incomplete"  # the open message, closed
    assert stream.failed and not stream.finished
    assert stream.feed(chunk({"content": "more"})) == []


def test_a_refusal_streams_as_a_refusal_part() -> None:
    stream = ChatStreamToResponses(REQUEST, "resp_x", "m")
    frames = stream.feed(chunk({"refusal": "I can't"})) + stream.feed(chunk({}, "stop"))
    frames += stream.complete(None)
    parsed = events(frames)
    assert "response.refusal.delta" in [e.type for e in parsed]
    assert parsed[-1].response.output[0].content[0].type == "refusal"


ROUTE = {"base_url": "http://upstream", "api_key": "k", "upstream_model": "u", "shape": "openai"}


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)


def translator(request_id: str = "req_abc") -> Any:
    chat = responses_request_to_chat({**REQUEST, "stream": True})
    exchange = make_exchange(
        "responses", chat, ROUTE, stream=True, max_output=100, request_id=request_id,
        original={**REQUEST, "stream": True},
    )  # fmt: skip
    assert orjson.loads(exchange.body)["stream_options"] == {"include_usage": True}
    return exchange.translator()


def frames_of(data: bytes) -> list[bytes]:
    return [f + b"\n\n" for f in data.split(b"\n\n") if f.strip()]


@pytest.mark.parametrize("ending", ["cut", "closed early"])
def test_a_stream_that_breaks_off_ends_with_response_failed(ending: str) -> None:
    t = translator()
    out = t.feed(sse(chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"})))
    out += t.cut() if ending == "cut" else t.close()
    parsed = events(frames_of(out))
    assert parsed[-1].type == "response.failed"
    assert parsed[-1].response.id == "resp_abc"
    assert (t.finished, t.chunks, t.usage) == (False, 2, None)


def test_a_stream_without_done_is_whole_once_its_finish_reason_came() -> None:
    t = translator()
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    out = t.feed(sse(chunk({"content": "Hi"}), chunk({}, "stop"), {"choices": [], "usage": usage}))
    out += t.close()
    parsed = events(frames_of(out))
    assert parsed[-1].type == "response.completed"
    assert parsed[-1].response.usage.total_tokens == 5
    assert t.finished and t.usage == Usage(3, 2)
