"""Why an answer ended reaches its usage row (``UsageEvent.finish_reason``) from every API the
relay serves, streamed or not, over an OpenAI-shaped and an Anthropic-shaped upstream: in
OpenAI's words, an Anthropic ``stop_reason`` mapped to them."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from billing.usage import Event
from relay.adapters.anthropic import recorded_finish_reason
from relay.adapters.openai import finish_reason_in

from .test_relay import recorded

pytestmark = pytest.mark.usefixtures("catalog")

# The demo upstream writes this many tokens; a max_tokens below it cuts the answer (length).
TOKENS = {"x-demo-completion-tokens": "20", "x-demo-prompt-tokens": "30"}


@pytest.fixture
def client(alice_key: str, relay: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=relay.base_url, api_key=alice_key, max_retries=0)


@pytest.fixture
def claude(alice_key: str, relay: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=relay.base_url.removesuffix("/v1"), api_key=alice_key, max_retries=0
    )


@pytest.mark.parametrize("model", ["mistral-large-2", "claude-sonnet-4"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("max_tokens", "reason"), [(100, "stop"), (5, "length")])
def test_a_chat_answer_records_why_it_ended(
    client: openai.OpenAI, worker: Any, model: str, stream: bool, max_tokens: int, reason: str
) -> None:
    messages: Any = [{"role": "user", "content": "Hello"}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, max_tokens=max_tokens, stream=True, extra_headers=TOKENS
        ) as response:
            request_id = response.headers["x-request-id"]
            chunks = list(response.parse())
        assert chunks[-1].choices[0].finish_reason == reason
    else:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=max_tokens, extra_headers=TOKENS
        )
        request_id = raw.headers["x-request-id"]
        assert raw.parse().choices[0].finish_reason == reason
    event = recorded(request_id)
    assert (event.finish_reason, event.streamed) == (reason, stream)


@pytest.mark.parametrize("model", ["mistral-large-2", "claude-sonnet-4"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_messages_answer_records_it_in_openai_words(
    claude: anthropic.Anthropic, worker: Any, model: str, stream: bool
) -> None:
    messages: Any = [{"role": "user", "content": "Hello"}]
    if stream:
        with claude.messages.with_streaming_response.create(
            model=model, max_tokens=5, messages=messages, stream=True, extra_headers=TOKENS
        ) as response:
            request_id = response.headers["x-request-id"]
            for _ in response.iter_lines():
                pass
    else:
        raw = claude.messages.with_raw_response.create(
            model=model, max_tokens=5, messages=messages, extra_headers=TOKENS
        )
        request_id = raw.headers["x-request-id"]
        assert raw.parse().stop_reason == "max_tokens"
    assert recorded(request_id).finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_answer_records_it(client: openai.OpenAI, worker: Any, stream: bool) -> None:
    if stream:
        with client.responses.with_streaming_response.create(
            model="gpt-4o", input="Hello", stream=True, extra_headers=TOKENS
        ) as response:
            request_id = response.headers["x-request-id"]
            for _ in response.iter_lines():
                pass
    else:
        raw = client.responses.with_raw_response.create(
            model="gpt-4o", input="Hello", extra_headers=TOKENS
        )
        request_id = raw.headers["x-request-id"]
    assert recorded(request_id).finish_reason == "stop"


def test_an_embedding_has_none(client: openai.OpenAI, worker: Any) -> None:
    raw = client.embeddings.with_raw_response.create(model="mistral-embed", input="Hello")
    assert recorded(raw.headers["x-request-id"]).finish_reason == ""


def test_the_stream_reader_finds_the_word_without_parsing() -> None:
    assert finish_reason_in(b'data: {"choices":[{"delta":{},"finish_reason":null}]}') == ""
    assert finish_reason_in(b'data: {"choices":[{"finish_reason": "length"}]}') == "length"
    assert finish_reason_in(b'data: {"choices":[{"delta":{"content":"x"}}]}') == ""
    assert finish_reason_in(b'data: {"finish_reason":"' + b"x" * 100 + b'"}') == "x" * 32


def test_anthropic_words_are_mapped_and_unknown_ones_kept() -> None:
    assert recorded_finish_reason("end_turn") == "stop"
    assert recorded_finish_reason("max_tokens") == "length"
    assert recorded_finish_reason("tool_use") == "tool_calls"
    assert recorded_finish_reason("refusal") == "content_filter"
    assert recorded_finish_reason("brand_new") == "brand_new"
    assert recorded_finish_reason(None) == ""


def test_an_event_without_it_parses_to_empty() -> None:
    raw = {"request_id": "req_1", "account": 1, "key": 1, "model": "m", "started_at": 0}
    assert Event.parse(raw).finish_reason == ""
    assert Event.parse({**raw, "finish_reason": "stop"}).finish_reason == "stop"
