"""Translation between OpenAI Chat Completions and Anthropic Messages, both directions.

Pure functions and small state machines: dicts in, dicts or complete SSE frames out. No I/O,
no clock beyond a default ``created`` timestamp; the relay does the sending, and reads the
upstream's bytes through :class:`relay.sse.SSEParser`.

An OpenAI client, an Anthropic upstream (the client's API is ``chat``):
    :mod:`.chat_request` :func:`openai_request_to_anthropic`;
    :mod:`.chat_response` :func:`anthropic_response_to_openai`,
    :class:`AnthropicStreamToOpenAI`.
An Anthropic client (``POST /v1/messages``, the ``messages`` API), an OpenAI-compatible
upstream:
    :mod:`.messages_request` :func:`validate_anthropic_request`,
    :func:`anthropic_request_to_openai`;
    :mod:`.messages_response` :func:`openai_response_to_anthropic`,
    :class:`OpenAIStreamToAnthropic`;
    :mod:`.errors` :class:`AnthropicError` / :func:`from_relay_error`.
Both, and an Anthropic client on an Anthropic upstream:
    :mod:`.usage` :func:`usage_from_anthropic`, :func:`anthropic_passthrough_usage`, and the
    rule by which Anthropic's token counts are billed.

Mappings that are not one to one (and why) are documented on each function.
"""

from .chat_request import openai_request_to_anthropic
from .chat_response import (
    AnthropicStreamToOpenAI,
    anthropic_response_to_openai,
    recorded_finish_reason,
)
from .errors import AnthropicError, from_relay_error
from .messages_request import anthropic_request_to_openai, validate_anthropic_request
from .messages_response import OpenAIStreamToAnthropic, openai_response_to_anthropic
from .usage import anthropic_passthrough_usage, usage_from_anthropic

__all__ = [
    "AnthropicError",
    "AnthropicStreamToOpenAI",
    "OpenAIStreamToAnthropic",
    "anthropic_passthrough_usage",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "from_relay_error",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "recorded_finish_reason",
    "usage_from_anthropic",
    "validate_anthropic_request",
]
