"""Tests for the demo upstream (``simulators.llm``): real SDKs plus raw HTTP.

The simulator runs in a background thread on a free port; no Django involved.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest

from simulators.llm import (
    DemoConfig,
    RunningServer,
    config_from_env,
    estimate_prompt_tokens,
    make_app,
    start_in_thread,
)

from .conftest import wait_until

FILLER_16 = "This is a demo response from the TokenPapa demo upstream. This is a demo response from"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}
HELLO: Any = [{"role": "user", "content": "Hello there"}]  # 11 chars -> ceil(11/4) + 4 = 7


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_in_thread()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def claude(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root_url, api_key="demo", max_retries=0, timeout=10)


class Raw:
    """Tiny http.client wrapper: never raises on 4xx/5xx, returns (status, headers, body)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn = self.connection()
        try:
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        status, _, payload = self.request(method, path, body, headers)
        assert status == 200, payload
        return json.loads(payload)


@pytest.fixture(scope="module")
def raw(server: RunningServer) -> Raw:
    return Raw(server.base_url)


AUTH = {"Authorization": "Bearer demo", "Content-Type": "application/json"}
ANTHROPIC_HEADERS = {
    "x-api-key": "demo",
    "anthropic-version": "2023-06-01",
    "Content-Type": "application/json",
}


def sse_data(payload: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [
        line[len("data: ") :] for line in payload.decode().split("\n") if line.startswith("data: ")
    ]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": HELLO, **extra}


# --------------------------------------------------------------------------------------------
# OpenAI SDK
# --------------------------------------------------------------------------------------------


def test_chat_plain(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == FILLER_16
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 16, 23)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_max_tokens_and_headers(oai: openai.OpenAI) -> None:
    capped = oai.chat.completions.create(model="m", messages=HELLO, max_completion_tokens=3)
    assert capped.choices[0].message.content == "This is a"
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens == 3

    steered = oai.chat.completions.create(
        model="m",
        messages=HELLO,
        extra_headers={
            "x-demo-completion-tokens": "40",
            "x-demo-prompt-tokens": "1000",
            "x-demo-cached-tokens": "600",
        },
    )
    usage = steered.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 40, 1040)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 600
    content = steered.choices[0].message.content
    assert content is not None and len(content.split()) == 40


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    # Usage arrives last, on a chunk without choices; every earlier chunk has usage null.
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 16)
    assert all(c.usage is None for c in chunks[:-1])
    content_chunks = chunks[1:-2]
    assert len(content_chunks) == 16  # one token per chunk by default
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == FILLER_16


def test_chat_stream_chunk_count_header(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="m",
            messages=HELLO,
            stream=True,
            extra_headers={"x-demo-chunks": "4"},
        )
    )
    # Without include_usage: role chunk, 4 content chunks, finish chunk; no usage anywhere.
    assert len(chunks) == 6
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == FILLER_16


def test_tool_call_plain(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        tools=[WEATHER_TOOL],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert args == {"city": "demo", "unit": "celsius", "days": 1}


def test_tool_choice_none_and_tool_result_answer_in_text(oai: openai.OpenAI) -> None:
    none = oai.chat.completions.create(
        model="m",
        messages=HELLO,
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].finish_reason == "stop"

    after_tool = oai.chat.completions.create(
        model="m",
        messages=[
            *HELLO,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert after_tool.choices[0].message.content == FILLER_16


def test_tool_call_streamed(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.tool_calls is not None
    head = first.tool_calls[0]
    assert head.index == 0
    assert head.id is not None and head.id.startswith("call_")
    assert head.type == "function"
    assert head.function is not None
    assert head.function.name == "get_weather"
    assert head.function.arguments == ""
    fragments: list[str] = []
    for chunk in chunks[1:]:
        calls = chunk.choices[0].delta.tool_calls if chunk.choices else None
        if calls:
            assert calls[0].index == 0 and calls[0].id is None  # only the first delta has the id
            assert calls[0].function is not None
            fragments.append(calls[0].function.arguments or "")
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"city": "demo", "unit": "celsius", "days": 1}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_embeddings_float_and_base64(oai: openai.OpenAI, raw: Raw) -> None:
    result = oai.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert result.object == "list"
    assert result.model == "text-embedding-3-small"
    assert [d.index for d in result.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == 1536 for d in result.data)
    assert math.isclose(sum(v * v for v in result.data[0].embedding), 1.0, rel_tol=1e-4)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 3 and result.usage.total_tokens == 3  # 2 + 1

    again = oai.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float"
    )
    assert again.data[0].embedding == result.data[0].embedding  # deterministic

    # The SDK asks for base64 by default and decodes it itself.
    sdk_b64 = oai.embeddings.create(model="x", input="alpha", dimensions=8)
    assert len(sdk_b64.data[0].embedding) == 8

    payload = raw.json(
        "POST",
        "/v1/embeddings",
        {"model": "x", "input": "alpha", "encoding_format": "base64", "dimensions": 8},
        **AUTH,
    )
    encoded = payload["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<8f", base64.b64decode(encoded)))
    floats = (
        oai.embeddings.create(model="x", input="alpha", dimensions=8, encoding_format="float")
        .data[0]
        .embedding
    )
    assert decoded == floats
    assert sdk_b64.data[0].embedding == floats

    tokens = raw.json("POST", "/v1/embeddings", {"model": "x", "input": [[1, 2, 3]]}, **AUTH)
    assert tokens["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_models_list(oai: openai.OpenAI, raw: Raw) -> None:
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o-mini" in ids and "text-embedding-3-small" in ids
    assert oai.models.retrieve("gpt-4o").id == "gpt-4o"
    anthropic_style = raw.json("GET", "/v1/models", **ANTHROPIC_HEADERS)
    assert anthropic_style["data"][0]["type"] == "model"
    assert anthropic_style["has_more"] is False


# --------------------------------------------------------------------------------------------
# Anthropic SDK
# --------------------------------------------------------------------------------------------


def test_anthropic_plain(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        system="Be brief.",  # 9 chars + 11 chars -> ceil(20/4) + 2 * 4 = 13
        messages=HELLO,
    )
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-sonnet-4-6"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.content[0].type == "text"
    assert message.content[0].text == FILLER_16
    assert message.usage.input_tokens == 13
    assert message.usage.output_tokens == 16
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0

    capped = claude.messages.create(
        model="m",
        max_tokens=2,
        messages=HELLO,
        extra_headers={"x-demo-prompt-tokens": "100", "x-demo-cached-tokens": "30"},
    )
    assert capped.stop_reason == "max_tokens"
    assert capped.usage.output_tokens == 2
    assert capped.usage.input_tokens == 70
    assert capped.usage.cache_read_input_tokens == 30


def test_anthropic_stream(claude: anthropic.Anthropic, raw: Raw) -> None:
    with claude.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=HELLO,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == FILLER_16
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens == 7

    status, headers, body = raw.request(
        "POST",
        "/v1/messages",
        {"model": "m", "max_tokens": 10, "stream": True, "messages": HELLO},
        {**ANTHROPIC_HEADERS, "x-demo-chunks": "2"},
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = [
        line.removeprefix("event: ")
        for line in body.decode().split("\n")
        if line.startswith("event: ")
    ]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    # Every frame is "event: NAME\ndata: {json}\n\n" with a matching "type".
    for frame in body.decode().strip().split("\n\n"):
        name_line, data_line = frame.split("\n")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name_line[7:]


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    tools: Any = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "metric": {"type": "boolean"}},
            },
        }
    ]
    message = claude.messages.create(
        model="m",
        max_tokens=100,
        messages=HELLO,
        tools=tools,
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert block.name == "get_weather"
    assert block.input == {"city": "demo", "metric": True}

    with claude.messages.stream(
        model="m",
        max_tokens=100,
        messages=HELLO,
        tools=tools,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "demo", "metric": True}


# --------------------------------------------------------------------------------------------
# Raw HTTP: errors and knobs
# --------------------------------------------------------------------------------------------


def test_auth_required(raw: Raw) -> None:
    status, _, body = raw.request(
        "POST", "/v1/chat/completions", chat_body(), {"Content-Type": "application/json"}
    )
    assert status == 401
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"

    status, _, body = raw.request(
        "POST", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": HELLO}
    )
    assert status == 401
    assert json.loads(body)["type"] == "error"
    assert json.loads(body)["error"]["type"] == "authentication_error"

    status, _, body = raw.request(
        "POST",
        "/v1/messages",
        {"model": "m", "max_tokens": 5, "messages": HELLO},
        {"x-api-key": "demo"},
    )
    assert status == 400
    assert "anthropic-version" in json.loads(body)["error"]["message"]


def test_validation_errors(raw: Raw) -> None:
    status, _, body = raw.request("POST", "/v1/chat/completions", b"{not json", AUTH)
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"

    status, _, body = raw.request(
        "POST", "/v1/chat/completions", {"model": "m", "messages": []}, AUTH
    )
    assert status == 400
    error = json.loads(body)["error"]
    assert (error["param"], error["code"]) == ("messages", "empty_array")

    status, _, body = raw.request("POST", "/v1/chat/completions", {"messages": HELLO}, AUTH)
    assert status == 400

    status, _, body = raw.request(
        "POST", "/v1/chat/completions", {"model": 5, "messages": HELLO}, AUTH
    )
    assert status == 400 and json.loads(body)["error"]["param"] == "model"

    status, _, body = raw.request(
        "POST", "/v1/messages", {"model": "m", "messages": HELLO}, ANTHROPIC_HEADERS
    )
    assert status == 400
    assert json.loads(body)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }

    status, _, body = raw.request(
        "POST", "/v1/chat/completions", chat_body(), {**AUTH, "x-demo-error": "bogus"}
    )
    assert status == 400 and "x-demo-error" in json.loads(body)["error"]["message"]

    status, _, body = raw.request("GET", "/v1/nope", None, AUTH)
    assert status == 404 and json.loads(body)["error"]["message"] == "Invalid URL (GET /v1/nope)"


def test_injected_status_errors(raw: Raw, oai: openai.OpenAI) -> None:
    status, headers, body = raw.request(
        "POST", "/v1/chat/completions", chat_body(), {**AUTH, "x-demo-error": "429"}
    )
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"

    for code in ("500", "503"):
        status, _, body = raw.request(
            "POST", "/v1/chat/completions", chat_body(), {**AUTH, "x-demo-error": code}
        )
        assert status == int(code)
        assert json.loads(body)["error"]["type"] == "server_error"

    status, _, body = raw.request(
        "POST",
        "/v1/messages",
        {"model": "m", "max_tokens": 5, "messages": HELLO},
        {**ANTHROPIC_HEADERS, "x-demo-error": "429"},
    )
    assert status == 429
    assert json.loads(body)["error"]["type"] == "rate_limit_error"

    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="m", messages=HELLO, extra_headers={"x-demo-error": "429"}
        )


def test_disconnect(raw: Raw) -> None:
    conn = raw.connection()
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(chat_body()),
        {
            **AUTH,
            "x-demo-error": "disconnect",
        },
    )
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()


def test_cut_stream_has_no_done(raw: Raw) -> None:
    conn = raw.connection()
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(chat_body(stream=True, stream_options={"include_usage": True})),
        {**AUTH, "x-demo-error": "cut"},
    )
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    conn.close()
    data = sse_data(excinfo.value.partial)
    assert data, "some chunks arrive before the cut"
    assert "[DONE]" not in data
    assert all(json.loads(d)["usage"] is None for d in data)
    assert all(json.loads(d)["choices"][0]["finish_reason"] is None for d in data)


def test_no_usage_stream(raw: Raw) -> None:
    status, _, body = raw.request(
        "POST",
        "/v1/chat/completions",
        chat_body(stream=True, stream_options={"include_usage": True}),
        {**AUTH, "x-demo-error": "no-usage"},
    )
    assert status == 200
    data = sse_data(body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["usage"] is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_latency_and_chunk_delay(raw: Raw) -> None:
    start = time.perf_counter()
    raw.request("POST", "/v1/chat/completions", chat_body(), AUTH)
    fast = time.perf_counter() - start

    start = time.perf_counter()
    status, _, _ = raw.request(
        "POST", "/v1/chat/completions", chat_body(), {**AUTH, "x-demo-latency-ms": "300"}
    )
    slow = time.perf_counter() - start
    assert status == 200
    assert slow >= 0.29
    assert slow < 2.0
    assert fast < 0.25

    start = time.perf_counter()
    status, _, body = raw.request(
        "POST",
        "/v1/chat/completions",
        chat_body(stream=True),
        {**AUTH, "x-demo-chunk-delay-ms": "30", "x-demo-chunks": "5"},
    )
    elapsed = time.perf_counter() - start
    assert status == 200 and sse_data(body)[-1] == "[DONE]"
    assert elapsed >= 0.2  # 8 frames -> 7 gaps of 30 ms


def test_request_recording_and_stats(raw: Raw, oai: openai.OpenAI) -> None:
    raw.json("DELETE", "/_demo/requests")
    assert raw.json("GET", "/_demo/requests")["requests"] == []
    before = raw.json("GET", "/_demo/stats")

    oai.chat.completions.create(
        model="recorded-model", messages=HELLO, extra_headers={"x-trace": "abc"}
    )
    raw.request("POST", "/v1/chat/completions", b"garbage", AUTH)

    recorded = raw.json("GET", "/_demo/requests")["requests"]
    assert [r["path"] for r in recorded] == ["/v1/chat/completions"] * 2
    first = recorded[0]
    assert first["method"] == "POST"
    assert first["body"]["model"] == "recorded-model"
    assert first["body_is_json"] is True
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert headers["x-trace"] == "abc"
    assert headers["authorization"] == "Bearer demo"
    assert recorded[1]["body"] == "garbage" and recorded[1]["body_is_json"] is False
    assert raw.json("GET", "/_demo/requests/last")["body"] == "garbage"

    after = raw.json("GET", "/_demo/stats")
    assert after["requests"] - before["requests"] == 2
    assert raw.json("DELETE", "/_demo/requests")["cleared"] == 2


def test_client_disconnect_is_counted_as_cancelled(server: RunningServer, raw: Raw) -> None:
    before = raw.json("GET", "/_demo/stats")["cancelled"]
    body = json.dumps(chat_body(stream=True)).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo\r\n"
        b"Content-Type: application/json\r\nx-demo-chunk-delay-ms: 50\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection((raw.host, raw.port), timeout=5) as sock:
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")

    def counted() -> dict[str, Any] | None:
        stats = raw.json("GET", "/_demo/stats")
        return stats if stats["cancelled"] > before else None

    stats = wait_until(counted, timeout=3)
    assert stats["cancelled"] == before + 1
    assert stats["in_flight"] == 0


# --------------------------------------------------------------------------------------------
# Python API and CLI
# --------------------------------------------------------------------------------------------


def test_prompt_token_rule() -> None:
    assert estimate_prompt_tokens([{"role": "user", "content": "abcd"}]) == 1 + 4
    assert estimate_prompt_tokens([{"role": "user", "content": "abcde"}]) == 2 + 4
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {}}]
    assert estimate_prompt_tokens([{"role": "user", "content": parts}], system="abcd") == (
        2 + 8 + 765
    )
    low = [{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]
    assert estimate_prompt_tokens([{"role": "user", "content": low}]) == 4 + 85
    tool_result = [{"type": "tool_result", "tool_use_id": "t", "content": "abcdefgh"}]
    assert estimate_prompt_tokens([{"role": "user", "content": tool_result}]) == 2 + 4


def test_config_sources() -> None:
    cfg = config_from_env({"DEMO_UPSTREAM_LATENCY_MS": "25", "DEMO_UPSTREAM_MODELS": "a, b"})
    assert cfg.latency_ms == 25 and cfg.models == ("a", "b")
    assert cfg.completion_tokens == DemoConfig().completion_tokens
    with pytest.raises(ValueError, match="DEMO_UPSTREAM_ERROR"):
        config_from_env({"DEMO_UPSTREAM_ERROR": "nope"})
    with pytest.raises(TypeError):
        make_app(use_env=False, no_such_option=1)


def test_server_wide_config_and_header_override() -> None:
    with start_in_thread(completion_tokens=3, error="500") as running:
        client = openai.OpenAI(base_url=running.base_url, api_key="demo", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=HELLO)
        ok = client.chat.completions.create(
            model="m", messages=HELLO, extra_headers={"x-demo-error": "none"}
        )
        assert ok.choices[0].message.content == "This is a"


def test_cli_serves() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DEMO_UPSTREAM_COMPLETION_TOKENS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.llm", "--host", "127.0.0.1", "--port", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert b"listening on" in proc.stdout.readline()
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0
        )
        reply = client.chat.completions.create(model="m", messages=HELLO)
        assert reply.choices[0].message.content == "This is"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
