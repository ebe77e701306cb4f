"""Deterministic content of the demo upstream: filler text, token estimates, tool arguments.

The demo has no model and no tokenizer. A completion is words of one filler sentence, one word
per token; prompt tokens follow one crude, documented rule (:func:`estimate_prompt_tokens`); and
tool-call arguments are example values of the tool's JSON schema, so that they validate.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import orjson

from .wire import JSON

FILLER_TEXT = "This is a demo response from the TokenPapa demo upstream."


def split_evenly(items: list[str], parts: int) -> list[str]:
    """Join ``items`` into ``parts`` contiguous, nearly equal groups (``parts`` <= len)."""
    n = len(items)
    if n == 0:
        return []
    parts = max(1, min(parts, n))
    if parts == n:
        return items
    return ["".join(items[k * n // parts : (k + 1) * n // parts]) for k in range(parts)]


_FILLER_WORDS = FILLER_TEXT.split()


@functools.lru_cache(maxsize=1024)
def filler_pieces(tokens: int) -> tuple[str, ...]:
    """``tokens`` token-ish pieces of the filler text: one word each, leading space included.

    One piece is one "token": the demo has no tokenizer and a word-per-token rule keeps the
    reported ``completion_tokens`` equal to the number of streamed pieces, which is what
    usage-accounting tests want to compare.
    """
    words = _FILLER_WORDS
    return tuple(
        words[i % len(words)] if i == 0 else " " + words[i % len(words)] for i in range(tokens)
    )


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += len(text)
                elif "content" in part:  # Anthropic tool_result blocks nest their content
                    total += _text_chars(part["content"])
        return total
    return 0


# Prompt tokens of one image, as real providers bill them whatever the request's size: OpenAI's
# ``detail: low`` (85) and its largest ``high`` image for GPT-4o (765), Anthropic's largest
# (about 1,600 for 1.15 megapixels).
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS = 765
ANTHROPIC_IMAGE_TOKENS = 1600


def _image_tokens(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "image_url":
            image = part.get("image_url")
            low = isinstance(image, dict) and image.get("detail") == "low"
            total += IMAGE_TOKENS_LOW if low else IMAGE_TOKENS
        elif kind == "image":
            total += ANTHROPIC_IMAGE_TOKENS
        elif kind == "tool_result":
            total += _image_tokens(part.get("content"))
    return total


def estimate_prompt_tokens(messages: Iterable[Any], system: Any = None) -> int:
    """Deterministic prompt-token estimate:
    ``ceil(text_chars / 4) + 4 * message_count + image_tokens``.

    ``text_chars`` counts the characters of every message's text content: a string
    ``content``, the ``text`` of content parts / blocks, and the (nested) ``content`` of
    Anthropic ``tool_result`` blocks.  Each image costs a fixed number of tokens, as real
    providers bill images on their content rather than the request's bytes (``IMAGE_TOKENS``;
    ``IMAGE_TOKENS_LOW`` for ``detail: low``; ``ANTHROPIC_IMAGE_TOKENS`` for Anthropic image
    blocks).  Tool definitions and tool-call arguments are not counted.  An Anthropic
    top-level ``system`` prompt counts as one more message.  The rule is crude on purpose: it
    is cheap, stable and easy to assert in tests.
    """
    chars = 0
    count = 0
    images = 0
    if system:
        chars += _text_chars(system)
        count += 1
    for message in messages:
        count += 1
        if isinstance(message, dict):
            content = message.get("content")
            chars += _text_chars(content)
            images += _image_tokens(content)
    return -(-chars // 4) + 4 * count + images


def _example_value(schema: Any, depth: int = 0) -> JSON:
    """A plausible value for a JSON schema, so tool-call arguments validate against it."""
    if not isinstance(schema, dict) or depth > 6:
        return "demo"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _example_value(options[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {str(k): _example_value(v, depth + 1) for k, v in props.items()}
    if kind == "array":
        items = schema.get("items")
        return [_example_value(items, depth + 1)] if isinstance(items, dict) else []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "demo"


def tool_arguments(schema: Any) -> str:
    value = _example_value(schema) if isinstance(schema, dict) else {}
    if not isinstance(value, dict):
        value = {}
    return orjson.dumps(value).decode()


def argument_fragments(arguments: str, chunks: int | None) -> list[str]:
    """Split tool-call arguments like a model streams them: ~4 characters per delta."""
    chars = list(arguments)
    parts = chunks if chunks is not None else -(-len(chars) // 4)
    return split_evenly(chars, parts)
