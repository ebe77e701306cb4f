"""``POST /v1/messages/count_tokens``: what is forwarded to an Anthropic upstream, and the
estimate given where the model's upstream has no such endpoint.

The estimate needs no tokenizer (none ships with the relay, and the models behind an
OpenAI-compatible route each have their own): it is

    ceil(characters / 4) + 4 per message (the system prompt counts as one) + 1,600 per image
    or document block

where the characters are those of every text the model reads: text blocks, thinking blocks,
tool results, tool calls' input (as JSON) and the tools' definitions (as JSON). Four
characters a token is the usual rule of thumb for English and code; the figure is meant for
budgeting a context window, never for billing (the request itself is billed on the upstream's
usage).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

# Tokens per message for the role and the turn's framing.
MESSAGE_OVERHEAD = 4
# Tokens of one image or document block: Anthropic's largest image (about 1.15 megapixels).
MEDIA_TOKENS = 1600
# What count_tokens takes beyond the messages (Anthropic's API reference); the rest of a
# Messages request (max_tokens, stream, sampling, metadata) does not change the count.
COUNTED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_format",
        "output_config",
    }
)


def count_request(body: dict[str, Any], upstream_model: str) -> bytes:
    """The body for an Anthropic upstream's ``/v1/messages/count_tokens``."""
    out = {name: value for name, value in body.items() if name in COUNTED_FIELDS}
    out["model"] = upstream_model
    return orjson.dumps(out)


def _chars(content: Any) -> tuple[int, int]:
    """(characters, media blocks) of a message's content or a system prompt."""
    if isinstance(content, str):
        return len(content), 0
    if not isinstance(content, list):
        return 0, 0
    chars = media = 0
    for block in content:
        if isinstance(block, str):
            chars += len(block)
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("image", "document"):
            media += 1
        elif kind == "tool_use":
            chars += len(str(block.get("name") or "")) + len(orjson.dumps(block.get("input")))
        elif kind == "tool_result":
            inner, inner_media = _chars(block.get("content"))
            chars += inner
            media += inner_media
        else:
            for field in ("text", "thinking"):
                text = block.get(field)
                if isinstance(text, str):
                    chars += len(text)
    return chars, media


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """The documented estimate (see the module) of the input tokens of a Messages request."""
    chars = media = 0
    messages = body.get("messages") or []
    count = len(messages)
    system = body.get("system")
    if system:
        chars, media = _chars(system)
        count += 1
    for message in messages:
        if isinstance(message, dict):
            more, more_media = _chars(message.get("content"))
            chars += more
            media += more_media
    tools = body.get("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    return math.ceil(chars / 4) + MESSAGE_OVERHEAD * count + MEDIA_TOKENS * media


def upstream_count(payload: Any) -> int | None:
    """The upstream's ``input_tokens``, if its answer has a sensible one."""
    if isinstance(payload, dict):
        value = payload.get("input_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
