"""OpenAI Chat Completions <-> Anthropic Messages translation (``relay.adapters.anthropic``).

Unit tests use payload shapes from the two APIs' documentation; the end-to-end tests send
the translated requests to the demo upstream (no relay involved) and check what comes back
with the official SDKs' own types.
"""

from __future__ import annotations

import copy
import json
import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from relay.adapters.anthropic import (
    AnthropicError,
    AnthropicStreamToOpenAI,
    OpenAIStreamToAnthropic,
    anthropic_passthrough_usage,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    from_relay_error,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
    usage_from_anthropic,
    validate_anthropic_request,
)
from relay.errors import RelayError
from relay.sse import SSEParser
from relay.usage import Usage
from simulators.llm import RunningServer, start_in_thread

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a timezone"},
}
ANTHROPIC_WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
HI: dict[str, Any] = {"role": "user", "content": "Hello"}
PNG_B64 = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def to_anthropic(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return openai_request_to_anthropic(body, "claude-sonnet-4-6", default_max_tokens=4096, **kw)


def relay_error(fn: Any, *args: Any, **kwargs: Any) -> RelayError:
    with pytest.raises(RelayError) as info:
        fn(*args, **kwargs)
    return info.value


def data_frames(frames: list[bytes]) -> list[dict[str, Any]]:
    """The JSON payloads of OpenAI SSE frames (``[DONE]`` excluded), each one a whole frame."""
    out = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n"), frame
        if frame != b"data: [DONE]\n\n":
            out.append(orjson.loads(frame[6:]))
    return out


def anthropic_events(frames: list[bytes]) -> list[dict[str, Any]]:
    """Parse Anthropic SSE frames, checking event name == data.type and the SDK's types."""
    events = []
    for frame in frames:
        parsed = SSEParser().feed(frame)
        assert len(parsed) == 1, frame
        name, data = parsed[0]
        payload = orjson.loads(data)
        assert name == payload["type"]
        if name != "error":
            STREAM_EVENT.validate_python(payload)
        events.append(payload)
    return events


def accumulate_anthropic(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the final message from stream events, enforcing Anthropic's protocol: one
    message_start first, blocks started with contiguous indexes, deltas and stops only for
    the open block, one block open at a time, message_delta then message_stop last."""
    assert events[0]["type"] == "message_start"
    message = copy.deepcopy(events[0]["message"])
    open_index: int | None = None
    buffers: dict[int, str] = {}
    seen_delta = False
    for event in events[1:]:
        kind = event["type"]
        assert kind != "message_start"
        if kind == "content_block_start":
            assert open_index is None, "a block started while another was open"
            assert event["index"] == len(message["content"])
            message["content"].append(copy.deepcopy(event["content_block"]))
            open_index = event["index"]
        elif kind == "content_block_delta":
            assert event["index"] == open_index
            block = message["content"][open_index]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                buffers[open_index] = buffers.get(open_index, "") + delta["partial_json"]
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            if open_index in buffers:
                message["content"][open_index]["input"] = json.loads(buffers[open_index])
            open_index = None
        elif kind == "message_delta":
            assert open_index is None and not seen_delta
            seen_delta = True
            message.update(event["delta"])
            message["usage"].update(event["usage"])
        elif kind == "message_stop":
            assert seen_delta and event is events[-1]
    assert events[-1]["type"] == "message_stop"
    return message


def accumulate_openai(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold OpenAI chunks the way the SDKs do: content concatenated, tool calls by index."""
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for tc in delta.get("tool_calls") or ():
                call = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    return {
        "content": content,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
    }


def split_randomly(raw: bytes, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    i = 0
    while i < len(raw):
        n = rng.randint(1, 40)
        yield raw[i : i + n]
        i += n


# ============================================================================================
# SSE parser
# ============================================================================================


def test_sse_parser_handles_crlf_split_across_reads_comments_and_multiline_data() -> None:
    raw = (
        b": keep-alive comment\r\n\r\n"
        b'event: message_start\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"data: plain\r\r"
        b"event: no-data\n\n"
        b"id: 7\nretry: 100\ndata:nospace\n\n"
        b"data: [DONE]\n\n"
    )
    expected = [
        ("message_start", b'{"a":\n1}'),
        ("", b"plain"),
        ("", b"nospace"),
        ("", b"[DONE]"),
    ]
    whole = SSEParser().feed(raw)
    assert whole == expected
    for size in (1, 2, 3, 7):  # every split point, including between \r and \n
        parser = SSEParser()
        out = []
        for i in range(0, len(raw), size):
            out += parser.feed(raw[i : i + size])
        assert out == expected, size


def test_sse_parser_flush_dispatches_an_unterminated_last_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n\ndata: [DONE]\n") == [("", b"1")]
    assert parser.flush() == [("", b"[DONE]")]
    assert parser.flush() == []


# ============================================================================================
# Direction 1: OpenAI request -> Anthropic request
# ============================================================================================


def test_system_and_developer_messages_become_top_level_system() -> None:
    out = to_anthropic(
        {"model": "m", "messages": [{"role": "system", "content": "You are terse."}, HI]}
    )
    assert out["system"] == "You are terse."
    assert out["messages"] == [{"role": "user", "content": "Hello"}]
    assert out["model"] == "claude-sonnet-4-6"
    assert out["max_tokens"] == 4096

    out = to_anthropic(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Rule one."},
                {
                    "role": "developer",
                    "content": [
                        {
                            "type": "text",
                            "text": "Long context",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
                HI,
            ],
        }
    )
    assert out["system"] == [
        {"type": "text", "text": "Rule one."},
        {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}},
    ]


def test_multi_turn_with_parallel_tool_calls_and_results() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris and the time in Tokyo?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    },
                    {
                        "id": "call.with:odd/chars",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc123", "content": "18C, cloudy"},
            {
                "role": "tool",
                "tool_call_id": "call.with:odd/chars",
                "content": [{"type": "text", "text": "09:00 JST"}],
            },
            {"role": "user", "content": "Thanks, and tomorrow?"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "assistant", "content": "Tomorrow: sunny."},
        ],
        "tools": [WEATHER_TOOL, TIME_TOOL],
    }
    before = copy.deepcopy(body)
    out = to_anthropic(body)
    assert body == before  # the client's body is not modified
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and the time in Tokyo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_abc123",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {"type": "tool_use", "id": "call_with_odd_chars", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_abc123", "content": "18C, cloudy"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_with_odd_chars",
                    "content": [{"type": "text", "text": "09:00 JST"}],
                },
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ],
        },
        {"role": "assistant", "content": "Tomorrow: sunny."},
    ]
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        },
        {
            "name": "get_time",
            "description": "Current time in a timezone",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]
    assert "tool_choice" not in out


def test_consecutive_user_messages_merge_and_empty_text_is_dropped() -> None:
    out = to_anthropic(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": ""}]},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
            ],
        }
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        }
    ]


def test_image_parts_data_url_and_https_url() -> None:
    out = to_anthropic(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare these."},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": f"data:image/png;base64,{PNG_B64}",
                                "detail": "low",
                            },
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}},
            "messages[0].content[0]",
        ),
        (
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
            "messages[0].content[0]",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
            "messages[0].content[0]",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            "messages[0].content[0]",
        ),
    ],
)
def test_unusable_content_parts_are_400(part: dict[str, Any], param: str) -> None:
    err = relay_error(
        to_anthropic, {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    )
    assert err.status == 400 and err.param == param


def test_pdf_file_part_becomes_a_document_block() -> None:
    out = to_anthropic(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                            },
                        }
                    ],
                }
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        }
    ]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_mapping(tool_choice: Any, parallel: Any, expected: Any) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [HI], "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = to_anthropic(body)
    assert out.get("tool_choice") == expected
    assert len(out["tools"]) == 1  # kept even with "none": history may hold tool blocks


def test_sampling_and_misc_parameters() -> None:
    out = to_anthropic(
        {
            "model": "m",
            "messages": [HI],
            "max_tokens": 300,
            "max_completion_tokens": 200,
            "stop": ["\n\nHuman:", "  ", "END"],
            "temperature": 1.7,
            "top_p": 0.9,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "user-1234",
            "n": 1,
            "logprobs": True,
            "top_logprobs": 2,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "seed": 42,
            "logit_bias": {"50256": -100},
        }
    )
    assert out == {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 200,
        "stop_sequences": ["\n\nHuman:", "END"],
        "temperature": 1.0,
        "top_p": 0.9,
        "stream": True,
        "metadata": {"user_id": "user-1234"},
    }
    out = to_anthropic(
        {"model": "m", "messages": [HI], "stop": "###", "top_p": 1, "temperature": 0}
    )
    assert out["stop_sequences"] == ["###"]
    assert "top_p" not in out and out["temperature"] == 0.0
    assert (
        to_anthropic(
            {"model": "m", "messages": [HI]},
        )["max_tokens"]
        == 4096
    )


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ({"type": "json_object"}, "single valid JSON object"),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "weather",
                    "schema": {"type": "object", "properties": {"t": {"type": "number"}}},
                    "strict": True,
                },
            },
            '{"type":"object","properties":{"t":{"type":"number"}}}',
        ),
    ],
)
def test_response_format_becomes_a_system_instruction(fmt: dict[str, Any], needle: str) -> None:
    out = to_anthropic(
        {
            "model": "m",
            "messages": [{"role": "system", "content": "Be helpful."}, HI],
            "response_format": fmt,
        }
    )
    assert out["system"][0] == {"type": "text", "text": "Be helpful."}
    assert needle in out["system"][1]["text"]
    plain = to_anthropic({"model": "m", "messages": [HI], "response_format": {"type": "text"}})
    assert "system" not in plain


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": [{"role": "system", "content": "only system"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [HI], "n": 2}, "n"),
        ({"model": "m", "messages": [HI], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [HI], "max_completion_tokens": "10"}, "max_completion_tokens"),
        ({"model": "m", "messages": [HI], "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": [HI], "stop": [1]}, "stop"),
        (
            {"model": "m", "messages": [HI], "tools": [{"type": "web_search"}]},
            "tools[0].type",
        ),
        (
            {"model": "m", "messages": [HI], "tools": [WEATHER_TOOL], "tool_choice": "sometimes"},
            "tool_choice",
        ),
        (
            {"model": "m", "messages": [HI, {"role": "tool", "content": "x"}]},
            "messages[1].tool_call_id",
        ),
        (
            {
                "model": "m",
                "messages": [
                    HI,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"location": '},
                            }
                        ],
                    },
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {
                "model": "m",
                "messages": [
                    HI,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[1]"},
                            }
                        ],
                    },
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]},
            "messages[0].role",
        ),
    ],
)
def test_malformed_openai_requests_are_400_with_param(body: dict[str, Any], param: str) -> None:
    err = relay_error(to_anthropic, body)
    assert err.status == 400
    assert err.param == param
    assert orjson.loads(err.body())["error"]["param"] == param


# ============================================================================================
# Direction 1: Anthropic response -> OpenAI response
# ============================================================================================

ANTHROPIC_TOOL_RESPONSE: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "text", "text": "I'll check "},
        {"type": "text", "text": "both."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
        {
            "type": "tool_use",
            "id": "toolu_01B",
            "name": "get_time",
            "input": {},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "output_tokens": 87,
    },
}


def test_anthropic_response_with_tool_use_and_cache_usage() -> None:
    out = anthropic_response_to_openai(ANTHROPIC_TOOL_RESPONSE, "claude-sonnet", created=1700000000)
    parsed = ChatCompletion.model_validate(out)
    assert parsed.id == "chatcmpl-msg_01Aq9w938a90dw8q"
    assert parsed.model == "claude-sonnet" and parsed.created == 1700000000
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check both."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        (
            "toolu_01A09q90qw90lq917835lq9",
            "get_weather",
            {"location": "San Francisco, CA", "unit": "celsius"},
        ),
        ("toolu_01B", "get_time", {}),
    ]
    assert out["usage"] == {
        "prompt_tokens": 3050,
        "completion_tokens": 87,
        "total_tokens": 3137,
        # cache writes as OpenRouter reports them
        "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 1000},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_stop_reason_mapping(stop_reason: str | None, finish: str) -> None:
    resp = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    out = anthropic_response_to_openai(resp, "claude")
    assert ChatCompletion.model_validate(out).choices[0].finish_reason == finish
    assert "tool_calls" not in out["choices"][0]["message"]


def test_usage_from_anthropic_counts_cache_reads_and_writes_in_the_prompt() -> None:
    assert usage_from_anthropic(ANTHROPIC_TOOL_RESPONSE["usage"]) == Usage(
        3050, 87, 2000, cache_write_tokens=1000
    )
    assert usage_from_anthropic({"input_tokens": 10, "output_tokens": 2}) == Usage(10, 2, 0)
    assert usage_from_anthropic(
        {"input_tokens": 10, "cache_read_input_tokens": None, "output_tokens": 2}
    ) == Usage(10, 2, 0)


# ============================================================================================
# Direction 1: Anthropic stream -> OpenAI stream
# ============================================================================================

# Shaped like the "streaming request with tool use" example in Anthropic's streaming docs,
# with a second (parallel) tool call and prompt-cache usage.
ANTHROPIC_TOOL_STREAM: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-6",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 472,
                    "cache_creation_input_tokens": 100,
                    "cache_read_input_tokens": 2000,
                    "output_tokens": 2,
                },
                "content": [],
                "stop_reason": None,
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Okay"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": ", checking."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_02",
                "name": "get_time",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"tz": "Asia/Tokyo"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def run_anthropic_stream(
    events: list[tuple[str, dict[str, Any]]], include_usage: bool = True
) -> tuple[AnthropicStreamToOpenAI, list[bytes]]:
    stream = AnthropicStreamToOpenAI("claude-x", include_usage, created=1700000000)
    frames: list[bytes] = []
    for name, data in events:
        frames += stream.feed(name, data)
    return stream, frames


def test_anthropic_stream_with_text_and_parallel_tool_calls() -> None:
    stream, frames = run_anthropic_stream(ANTHROPIC_TOOL_STREAM)
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = data_frames(frames)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["id"] == "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"
        assert chunk["model"] == "claude-x" and chunk["created"] == 1700000000
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    starts = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "id" in (c["choices"][0]["delta"].get("tool_calls") or [{}])[0]
    ]
    assert starts == [
        {
            "index": 0,
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "toolu_02",
            "type": "function",
            "function": {"name": "get_time", "arguments": ""},
        },
    ]
    folded = accumulate_openai(chunks)
    assert folded["content"] == "Okay, checking."
    assert [(c["name"], json.loads(c["arguments"])) for c in folded["tool_calls"]] == [
        ("get_weather", {"location": "San Francisco, CA"}),
        ("get_time", {"tz": "Asia/Tokyo"}),
    ]
    assert folded["finish"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    # output_tokens is message_delta's cumulative 89, not 89 + message_start's 2.
    assert folded["usage"] == {
        "prompt_tokens": 2572,
        "completion_tokens": 89,
        "total_tokens": 2661,
        "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 100},
    }
    assert stream.usage == Usage(2572, 89, 2000, cache_write_tokens=100)
    assert stream.finished and not stream.failed
    assert stream.chunks == 5  # two text deltas, three non-empty argument fragments


def test_anthropic_stream_deltas_are_routed_by_block_index() -> None:
    """Tool argument deltas are keyed by Anthropic block index, so even interleaved deltas
    (which Anthropic does not send today) land on the right OpenAI tool call."""
    start, text_start, _, text1, text2, text_stop, t1_start, _, t1a, t1b, t1_stop = (
        ANTHROPIC_TOOL_STREAM[:11]
    )
    t2_start, t2a, t2_stop, *tail = ANTHROPIC_TOOL_STREAM[11:]
    events = [start, text_start, text1, t1_start, t2_start, t1a, t2a, text2, t1b]
    events += [text_stop, t1_stop, t2_stop, *tail]
    _, frames = run_anthropic_stream(events)
    folded = accumulate_openai(data_frames(frames))
    assert folded["content"] == "Okay, checking."
    assert [(c["name"], json.loads(c["arguments"])) for c in folded["tool_calls"]] == [
        ("get_weather", {"location": "San Francisco, CA"}),
        ("get_time", {"tz": "Asia/Tokyo"}),
    ]


def test_anthropic_stream_without_include_usage_has_no_usage_chunk() -> None:
    stream, frames = run_anthropic_stream(ANTHROPIC_TOOL_STREAM, include_usage=False)
    chunks = data_frames(frames)
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.usage == Usage(2572, 89, 2000, cache_write_tokens=100)  # still billed


def test_anthropic_stream_error_event_ends_the_stream() -> None:
    events = [
        *ANTHROPIC_TOOL_STREAM[:5],
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "overloaded_error",
                    "message": "Overloaded, key sk-ant-secret123456",
                },
            },
        ),
        *ANTHROPIC_TOOL_STREAM[5:],
    ]
    stream, frames = run_anthropic_stream(events)
    error = orjson.loads(frames[-1][6:])
    assert error == {
        "error": {
            "message": "Overloaded, key [redacted]",
            "type": "upstream_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert b"[DONE]" not in b"".join(frames)
    assert stream.failed and not stream.finished
    assert stream.feed("message_stop", {"type": "message_stop"}) == []


def test_anthropic_stream_cut_before_message_delta_gives_an_estimate() -> None:
    stream, _ = run_anthropic_stream(ANTHROPIC_TOOL_STREAM[:10])
    assert not stream.finished
    usage = stream.usage
    assert usage is not None and usage.estimated
    assert usage.prompt_tokens == 2572 and usage.cached_tokens == 2000
    assert usage.completion_tokens == stream.chunks == 4  # 2 text + 2 argument fragments
    assert AnthropicStreamToOpenAI("m", True).usage is None


def test_anthropic_stream_message_delta_input_figures_are_cumulative() -> None:
    events = [
        ("message_start", ANTHROPIC_TOOL_STREAM[0][1]),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": 500,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 2000,
                    "output_tokens": 7,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
        ("message_stop", {"type": "message_stop"}),
    ]
    stream, frames = run_anthropic_stream(events)
    assert stream.usage == Usage(2500, 7, 2000)
    assert frames.count(b"data: [DONE]\n\n") == 1
    assert data_frames(frames)[1]["choices"][0]["finish_reason"] == "stop"


def test_anthropic_stream_through_the_sse_parser_in_random_pieces() -> None:
    raw = b"".join(
        b"event: " + name.encode() + b"\r\ndata: " + orjson.dumps(data) + b"\r\n\r\n"
        for name, data in ANTHROPIC_TOOL_STREAM
    )
    _, expected = run_anthropic_stream(ANTHROPIC_TOOL_STREAM)
    for seed in range(5):
        parser = SSEParser()
        stream = AnthropicStreamToOpenAI("claude-x", True, created=1700000000)
        frames: list[bytes] = []
        for piece in split_randomly(raw, seed):
            for name, data in parser.feed(piece):
                frames += stream.feed(name, orjson.loads(data))
        assert frames == expected


def test_passthrough_usage() -> None:
    usage: Usage | None = None
    for name, data in ANTHROPIC_TOOL_STREAM:
        usage = anthropic_passthrough_usage(name, data, usage)
        if name == "message_start":
            assert usage == Usage(2572, 2, 2000, estimated=True, cache_write_tokens=100)
    assert usage == Usage(2572, 89, 2000, cache_write_tokens=100)
    # cumulative input figures in message_delta replace the earlier ones (cache figures it
    # leaves out are message_start's)
    usage = anthropic_passthrough_usage(
        "message_delta",
        {"type": "message_delta", "usage": {"input_tokens": 10, "output_tokens": 5}},
        usage,
    )
    assert usage == Usage(10 + 2000 + 100, 5, 2000, cache_write_tokens=100)
    usage = anthropic_passthrough_usage(
        "message_delta",
        {
            "type": "message_delta",
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 50,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 20,
                    "ephemeral_1h_input_tokens": 30,
                },
                "output_tokens": 6,
                "output_tokens_details": {"thinking_tokens": 4},
            },
        },
        usage,
    )
    assert usage == Usage(
        60, 6, 0, cache_write_tokens=20, cache_write_1h_tokens=30, reasoning_tokens=4
    )
    assert anthropic_passthrough_usage("ping", {"type": "ping"}, None) is None


# ============================================================================================
# Direction 2: validation and errors
# ============================================================================================

MINIMAL = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": [HI]}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": True}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": "100"}, "max_tokens: Input should be a valid integer"),
        ({"model": None}, "model: Field required"),
        ({"model": 3}, "model: Input should be a valid string"),
        ({"messages": None}, "messages: Field required"),
        ({"messages": []}, "messages: at least one message is required"),
        ({"messages": "hi"}, "messages: Input should be a valid list"),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        ({"messages": [{"role": "user"}]}, "messages.0.content: Field required"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0"),
        ({"stream": "yes"}, "stream: Input should be a valid boolean"),
        ({"tools": [{"description": "x"}]}, "tools.0.name: Field required"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.tool.name: Field required"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ],
)
def test_invalid_anthropic_requests(patch: dict[str, Any], message: str) -> None:
    body = {**MINIMAL, **patch}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(AnthropicError) as info:
        validate_anthropic_request(body)
    err = info.value
    assert err.status == 400 and err.type == "invalid_request_error"
    assert message in err.message
    payload = orjson.loads(err.body())
    assert payload == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": err.message},
    }
    assert isinstance(err, RelayError)  # the relay's error handling renders it as is


def test_valid_anthropic_request_passes() -> None:
    validate_anthropic_request(MINIMAL)
    with pytest.raises(AnthropicError):
        validate_anthropic_request(["not", "an", "object"])


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (418, "invalid_request_error"),
    ],
)
def test_from_relay_error(status: int, etype: str) -> None:
    headers = [(b"retry-after", b"3")]
    err = from_relay_error(RelayError(status, "Nope.", type="whatever", headers=headers))
    assert (err.status, err.type, err.message, err.headers) == (status, etype, "Nope.", headers)
    assert orjson.loads(err.body()) == {
        "type": "error",
        "error": {"type": etype, "message": "Nope."},
    }
    assert err.sse() == b"event: error\ndata: " + err.body() + b"\n\n"
    assert from_relay_error(err) is err


# ============================================================================================
# Direction 2: Anthropic request -> OpenAI request
# ============================================================================================


def test_anthropic_multi_turn_with_tools_images_and_system_blocks() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.jpg"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                    {"type": "tool_use", "id": "toolu_01B", "name": "screenshot", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01B",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "partial"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG_B64,
                                },
                            },
                        ],
                    },
                    {"type": "text", "text": "Go on."},
                ],
            },
            {"role": "assistant", "content": "Done."},
        ],
        "tools": [
            ANTHROPIC_WEATHER_TOOL,
            {"name": "screenshot", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 40,
        "metadata": {"user_id": "u-42"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": True,
    }
    validate_anthropic_request(body)
    before = copy.deepcopy(body)
    out = anthropic_request_to_openai(body, "gpt-4o")
    assert body == before
    png_url = f"data:image/png;base64,{PNG_B64}"
    assert out == {
        "model": "gpt-4o",
        "max_tokens": 2048,
        "messages": [
            {"role": "system", "content": "You are Claude Code.\n\nBe brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image_url", "image_url": {"url": png_url}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    },
                    {
                        "id": "toolu_01B",
                        "type": "function",
                        "function": {"name": "screenshot", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: partial"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_url}},
                    {"type": "text", "text": "Go on."},
                ],
            },
            {"role": "assistant", "content": "Done."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    **{"name": "get_weather"},
                    "parameters": ANTHROPIC_WEATHER_TOOL["input_schema"],
                    "description": ANTHROPIC_WEATHER_TOOL["description"],
                },
            },
            {
                "type": "function",
                "function": {"name": "screenshot", "parameters": {"type": "object"}},
            },
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "stop": ["END"],
        "temperature": 0.2,
        "top_p": 0.8,
        "user": "u-42",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_anthropic_text_blocks_join_into_a_string_and_tool_only_assistant() -> None:
    body = {
        "model": "c",
        "max_tokens": 10,
        "system": "Plain system.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ],
    }
    out = anthropic_request_to_openai(body, "gpt")
    assert out["messages"] == [
        {"role": "system", "content": "Plain system."},
        {"role": "user", "content": "a\n\nb"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": ""},
    ]
    assert "stream" not in out and "stream_options" not in out


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_anthropic_tool_choice_mapping(
    choice: dict[str, Any], expected: Any, parallel: Any
) -> None:
    body = {**MINIMAL, "tools": [ANTHROPIC_WEATHER_TOOL], "tool_choice": choice}
    validate_anthropic_request(body)
    out = anthropic_request_to_openai(body, "gpt")
    assert out["tool_choice"] == expected
    assert out.get("parallel_tool_calls") == parallel


@pytest.mark.parametrize(
    "patch",
    [
        {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]},
        {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ]
        },
        {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
    ],
)
def test_anthropic_blocks_the_upstream_cannot_take_are_400(patch: dict[str, Any]) -> None:
    body = {**MINIMAL, **patch}
    validate_anthropic_request(body)
    with pytest.raises(AnthropicError) as info:
        anthropic_request_to_openai(body, "gpt")
    assert info.value.status == 400 and info.value.type == "invalid_request_error"


# ============================================================================================
# Direction 2: OpenAI response -> Anthropic response
# ============================================================================================

OPENAI_TOOL_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"Paris, France"}',
                        },
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz": "Europe/Par'},
                    },
                ],
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_openai_response_with_tool_calls_to_anthropic() -> None:
    out = openai_response_to_anthropic(OPENAI_TOOL_RESPONSE, "claude-sonnet-4-6")
    msg = Message.model_validate(out)
    assert msg.id == "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert msg.model == "claude-sonnet-4-6" and msg.stop_reason == "tool_use"
    assert out["content"] == [
        {
            "type": "tool_use",
            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "name": "get_weather",
            "input": {"location": "Paris, France"},
        },
        {
            "type": "tool_use",
            "id": "call_2",
            "name": "get_time",
            "input": {"_raw": '{"tz": "Europe/Par'},
        },
    ]
    assert out["usage"] == {
        "input_tokens": 93,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1024,
        "output_tokens": 46,
    }
    # The same figures, read back, bill the same prompt.
    assert usage_from_anthropic(out["usage"]) == Usage(1117, 46, 1024)


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_openai_finish_reason_mapping(finish: str | None, stop_reason: str) -> None:
    resp = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there"},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    out = openai_response_to_anthropic(resp, "claude")
    msg = Message.model_validate(out)
    assert msg.stop_reason == stop_reason
    assert out["content"] == [{"type": "text", "text": "Hi there"}]
    assert out["usage"]["input_tokens"] == 9 and out["usage"]["output_tokens"] == 2


def test_openai_refusal_and_missing_usage() -> None:
    resp = {
        "id": "chatcmpl-2",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I can't help with that.",
                },
                "finish_reason": "stop",
            }
        ],
    }
    out = openai_response_to_anthropic(resp, "claude")
    Message.model_validate(out)
    assert out["stop_reason"] == "refusal"
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert out["usage"]["input_tokens"] == 0 and out["usage"]["output_tokens"] == 0


# ============================================================================================
# Direction 2: OpenAI stream -> Anthropic stream
# ============================================================================================


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    base.update(extra)
    return base


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return chunk(
        None,
        usage={
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    )


def tool_delta(
    index: int, args: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    tc: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        tc["id"] = call_id
        tc["type"] = "function"
        tc["function"]["name"] = name
    return {"tool_calls": [tc]}


def run_openai_stream(
    chunks: list[dict[str, Any]], done: bool = True
) -> tuple[OpenAIStreamToAnthropic, list[bytes]]:
    stream = OpenAIStreamToAnthropic("claude-sonnet-4-6", "msg_abc")
    frames: list[bytes] = []
    for c in chunks:
        frames += stream.feed(c)
    if done:
        frames += stream.finish()
    return stream, frames


def test_openai_text_stream_to_anthropic_events() -> None:
    stream, frames = run_openai_stream(
        [
            chunk({"role": "assistant", "content": "", "refusal": None}),
            chunk({"content": "Hello"}),
            chunk({"content": " world"}),
            chunk({}, "stop"),
            usage_chunk(20, 2, cached=8),
        ]
    )
    events = anthropic_events(frames)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["id"] == "msg_abc"
    assert events[0]["message"]["usage"]["input_tokens"] == 0
    message = accumulate_anthropic(events)
    final = Message.model_validate(message)
    assert final.content[0].type == "text" and final.content[0].text == "Hello world"
    assert final.stop_reason == "end_turn"
    assert message["usage"] == {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 8,
        "output_tokens": 2,
    }
    assert stream.usage == Usage(20, 2, 8)
    assert stream.finished and stream.chunks == 2
    # message_delta went out with the usage chunk; [DONE] adds nothing
    assert stream.finish() == []


def test_openai_sequential_tool_calls_stream_live() -> None:
    stream, frames = run_openai_stream(
        [
            chunk({"role": "assistant", "content": "Let me look."}),
            chunk(tool_delta(0, "", "call_1", "get_weather")),
            chunk(tool_delta(0, '{"location":')),
            chunk(tool_delta(0, '"Paris"}')),
            chunk(tool_delta(1, "", "call_2", "get_time")),
            chunk(tool_delta(1, '{"tz":"UTC"}')),
            chunk({}, "tool_calls"),
            usage_chunk(50, 30),
        ],
        done=False,
    )
    events = anthropic_events(frames)
    message = accumulate_anthropic(events)
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"tz": "UTC"}},
    ]
    assert message["stop_reason"] == "tool_use"
    Message.model_validate(message)
    # the second call's block started as soon as it appeared (the first one was complete)
    starts = [i for i, e in enumerate(events) if e["type"] == "content_block_start"]
    assert events[starts[2] + 1]["delta"]["partial_json"] == '{"tz":"UTC"}'
    assert stream.finished and stream.usage == Usage(50, 30, 0)


def test_openai_interleaved_parallel_tool_calls_arrive_intact() -> None:
    stream, frames = run_openai_stream(
        [
            chunk({"role": "assistant", "content": None}),
            chunk(tool_delta(0, '{"loc', "call_a", "get_weather")),
            chunk(tool_delta(1, '{"tz"', "call_b", "get_time")),
            chunk(tool_delta(0, 'ation": "Oslo"')),
            chunk(tool_delta(1, ': "CET"}')),
            chunk(tool_delta(0, "}")),
            chunk({}, "tool_calls"),
        ]
    )
    events = anthropic_events(frames)
    message = accumulate_anthropic(events)  # asserts blocks never overlap
    assert message["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"location": "Oslo"}},
        {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"tz": "CET"}},
    ]
    assert message["stop_reason"] == "tool_use"
    # no usage from the upstream: the relay estimates; the client sees the chunk count
    assert stream.usage is None
    assert message["usage"]["output_tokens"] == stream.chunks == 5


def test_openai_stream_with_usage_on_every_chunk_waits_for_the_last_figures() -> None:
    running = [
        chunk({"content": "a"}, usage={"prompt_tokens": 7, "completion_tokens": 1}),
        chunk({"content": "b"}, usage={"prompt_tokens": 7, "completion_tokens": 2}),
        chunk({}, "stop", usage={"prompt_tokens": 7, "completion_tokens": 3}),
    ]
    stream, frames = run_openai_stream(running, done=False)
    assert stream.finished  # usage came with the finish chunk: final
    assert accumulate_anthropic(anthropic_events(frames))["usage"]["output_tokens"] == 3
    stream, frames = run_openai_stream([*running[:2], chunk({}, "stop")], done=False)
    assert not stream.finished  # running usage before the finish is not final
    frames += stream.finish()
    assert accumulate_anthropic(anthropic_events(frames))["usage"]["output_tokens"] == 2
    assert stream.usage == Usage(7, 2, 0)


def test_openai_stream_cut_without_finish_reason_is_closed_by_finish() -> None:
    stream, frames = run_openai_stream([chunk({"content": "Partial ans"})], done=False)
    assert not stream.finished
    frames += stream.finish()
    message = accumulate_anthropic(anthropic_events(frames))
    assert message["content"] == [{"type": "text", "text": "Partial ans"}]
    assert message["stop_reason"] == "end_turn"
    assert stream.finished


def test_openai_stream_error_chunk_becomes_an_error_event() -> None:
    stream, frames = run_openai_stream(
        [
            chunk({"content": "Hi"}),
            {
                "error": {
                    "message": "The server had an error (Bearer abc.def)",
                    "type": "server_error",
                }
            },
            chunk({"content": "ignored"}),
        ]
    )
    events = anthropic_events(frames)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "The server had an error ([redacted]"},
    }
    assert stream.failed and not stream.finished


def test_openai_stream_empty_upstream_still_gives_a_valid_message() -> None:
    stream = OpenAIStreamToAnthropic("claude", "msg_empty")
    events = anthropic_events(stream.finish())
    message = accumulate_anthropic(events)
    assert message["content"] == [] and message["stop_reason"] == "end_turn"
    Message.model_validate(message)


# ============================================================================================
# End to end against the demo upstream (no relay)
# ============================================================================================


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningServer]:
    server = start_in_thread()
    yield server
    server.stop()


ANTHROPIC_HEADERS = {"x-api-key": "demo", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"Authorization": "Bearer demo"}


def post(server: RunningServer, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(
        server.root_url + path,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code}: {exc.read()!r}") from None


def openai_via_anthropic(
    server: RunningServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[AnthropicStreamToOpenAI | None, Any]:
    """Direction 1 end to end: returns (stream translator, ChatCompletion or chunk list)."""
    request = openai_request_to_anthropic(body, "claude-sonnet-4-6", default_max_tokens=1024)
    raw = post(server, "/v1/messages", request, {**ANTHROPIC_HEADERS, **(headers or {})})
    if not body.get("stream"):
        return None, ChatCompletion.model_validate(
            anthropic_response_to_openai(orjson.loads(raw), body["model"])
        )
    include = bool((body.get("stream_options") or {}).get("include_usage"))
    stream = AnthropicStreamToOpenAI(body["model"], include)
    parser = SSEParser()
    frames: list[bytes] = []
    for piece in split_randomly(raw, 1):
        for name, data in parser.feed(piece):
            frames += stream.feed(name, orjson.loads(data))
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = data_frames(frames)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    return stream, chunks


def test_e2e_openai_client_anthropic_upstream_text_with_cache_usage(
    upstream: RunningServer,
) -> None:
    body = {
        "model": "claude-sonnet",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 5,
    }
    headers = {
        "x-demo-prompt-tokens": "100",
        "x-demo-cached-tokens": "60",
        "x-demo-cache-creation-tokens": "30",
    }
    _, completion = openai_via_anthropic(upstream, body, headers)
    assert completion.choices[0].finish_reason == "length"  # max_tokens 5 < 16 demo tokens
    assert completion.choices[0].message.content == "This is a demo response"
    assert completion.usage.prompt_tokens == 100
    assert completion.usage.prompt_tokens_details.cached_tokens == 60
    assert completion.usage.completion_tokens == 5

    stream, chunks = openai_via_anthropic(
        upstream, {**body, "stream": True, "stream_options": {"include_usage": True}}, headers
    )
    folded = accumulate_openai(chunks)
    assert folded["content"] == "This is a demo response"
    assert folded["finish"] == "length"
    assert folded["usage"]["prompt_tokens"] == 100
    assert folded["usage"]["prompt_tokens_details"]["cached_tokens"] == 60
    assert folded["usage"]["prompt_tokens_details"]["cache_write_tokens"] == 30
    assert stream is not None and stream.usage == Usage(100, 5, 60, cache_write_tokens=30)


def test_e2e_openai_client_anthropic_upstream_tool_call_round_trip(upstream: RunningServer) -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    _, completion = openai_via_anthropic(upstream, body)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "demo", "unit": "celsius"}

    stream, chunks = openai_via_anthropic(upstream, {**body, "stream": True})
    folded = accumulate_openai(chunks)
    assert folded["finish"] == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in folded["tool_calls"]] == [
        ("get_weather", {"location": "demo", "unit": "celsius"})
    ]
    assert folded["tool_calls"][0]["id"].startswith("toolu_")
    assert stream is not None and stream.finished and stream.usage is not None

    # Second turn: the tool result goes back; the upstream answers in text.
    follow = {
        **body,
        "tool_choice": "auto",
        "messages": [
            *body["messages"],
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'},
        ],
    }
    _, answer = openai_via_anthropic(upstream, follow)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content.startswith("This is a demo")


def test_e2e_openai_client_anthropic_upstream_with_images(upstream: RunningServer) -> None:
    body = {
        "model": "claude-sonnet",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            }
        ],
    }
    _, completion = openai_via_anthropic(upstream, body)
    assert completion.choices[0].finish_reason == "stop"


def anthropic_via_openai(
    server: RunningServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[OpenAIStreamToAnthropic | None, dict[str, Any]]:
    """Direction 2 end to end: returns (stream translator, final Anthropic message dict)."""
    validate_anthropic_request(body)
    request = anthropic_request_to_openai(body, "gpt-4o-mini")
    raw = post(server, "/v1/chat/completions", request, {**OPENAI_HEADERS, **(headers or {})})
    if not body.get("stream"):
        message = openai_response_to_anthropic(orjson.loads(raw), body["model"])
        Message.model_validate(message)
        return None, message
    stream = OpenAIStreamToAnthropic(body["model"], "msg_e2e")
    parser = SSEParser()
    frames: list[bytes] = []
    for piece in split_randomly(raw, 2):
        for _, data in parser.feed(piece):
            frames += stream.finish() if data == b"[DONE]" else stream.feed(orjson.loads(data))
    message = accumulate_anthropic(anthropic_events(frames))
    Message.model_validate(message)
    return stream, message


def test_e2e_anthropic_client_openai_upstream_text(upstream: RunningServer) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }
    headers = {"x-demo-prompt-tokens": "80", "x-demo-cached-tokens": "64"}
    _, message = anthropic_via_openai(upstream, body, headers)
    assert message["stop_reason"] == "end_turn"
    assert message["content"][0]["text"].startswith("This is a demo response")
    assert message["usage"] == {
        "input_tokens": 16,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 64,
        "output_tokens": 16,
    }

    stream, streamed = anthropic_via_openai(upstream, {**body, "stream": True}, headers)
    assert streamed["content"] == message["content"]
    assert streamed["usage"] == message["usage"]
    assert stream is not None and stream.usage == Usage(80, 16, 64) and stream.finished

    _, truncated = anthropic_via_openai(upstream, {**body, "max_tokens": 3, "stream": True})
    assert truncated["stop_reason"] == "max_tokens"
    assert truncated["content"][0]["text"] == "This is a"


def test_e2e_anthropic_client_openai_upstream_tool_use_round_trip(upstream: RunningServer) -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": [ANTHROPIC_WEATHER_TOOL],
        "tool_choice": {"type": "any"},
    }
    _, message = anthropic_via_openai(upstream, body)
    assert message["stop_reason"] == "tool_use"
    tool_use = message["content"][0]
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "get_weather"
    assert tool_use["input"] == {"location": "demo", "unit": "celsius"}

    stream, streamed = anthropic_via_openai(upstream, {**body, "stream": True})
    assert streamed["stop_reason"] == "tool_use"
    assert streamed["content"][0]["input"] == {"location": "demo", "unit": "celsius"}
    assert stream is not None and stream.usage is not None and stream.usage.completion_tokens == 16

    follow = {
        **body,
        "tool_choice": {"type": "auto"},
        "stream": True,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": streamed["content"]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": streamed["content"][0]["id"],
                        "content": "18C",
                    }
                ],
            },
        ],
    }
    _, answer = anthropic_via_openai(upstream, follow)
    assert answer["stop_reason"] == "end_turn"
    assert answer["content"][0]["type"] == "text"
