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


_FORMAT_EXAMPLES: dict[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "demo@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "hostname": "example.com",
}


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Follow a local ``$ref`` (``#/$defs/Name``, ``#/definitions/Name``, ``#``)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#"):
        return schema
    target: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return {}
        target = target[part]
    return target


def _merge_all_of(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """One schema from ``allOf``: properties and required lists merged (enough for instances)."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[Any] = list(merged.get("required") or [])
    for part in schema["allOf"]:
        part = _resolve_ref(part, root) if isinstance(part, dict) else {}
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                props.update(value)
            elif key == "required" and isinstance(value, list):
                required.extend(value)
            else:
                merged.setdefault(key, value)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _string_example(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    value = _FORMAT_EXAMPLES.get(fmt, "demo") if isinstance(fmt, str) else "demo"
    low = schema.get("minLength")
    if isinstance(low, int) and len(value) < low:
        value = value + "o" * (low - len(value))
    high = schema.get("maxLength")
    if isinstance(high, int) and len(value) > high:
        value = value[: max(high, 0)]
    return value


def _number_example(schema: dict[str, Any], integer: bool) -> int | float:
    """1 (or 1.5), moved inside ``minimum``/``maximum`` (exclusive bounds too) when needed."""
    value: int | float = 1 if integer else 1.5
    step = 1 if integer else 0.5
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool) and value <= ex_low:
        value = (int(ex_low) + 1) if integer else ex_low + step
    if isinstance(low, (int, float)) and not isinstance(low, bool) and value < low:
        value = -(-low // 1) if integer else low
    if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool) and value >= ex_high:
        value = (-(-ex_high // 1) - 1) if integer else ex_high - step
    if isinstance(high, (int, float)) and not isinstance(high, bool) and value > high:
        value = (high // 1) if integer else high
    return int(value) if integer else float(value)


def schema_instance(schema: Any, root: Any = None, depth: int = 0) -> JSON:
    """A minimal instance of a JSON schema, so tool arguments and structured outputs validate.

    Handles what OpenAI's structured outputs and tool schemas use: ``type`` (or a list of
    types), ``enum``/``const``/``default``, objects (every declared property, required ones
    included), arrays (``minItems`` copies of an instance of ``items``; ``prefixItems``),
    nested schemas, local ``$ref`` to ``$defs``/``definitions``, ``anyOf``/``oneOf`` (the
    first option) and ``allOf`` (merged), string ``format``/``minLength``/``maxLength`` and
    numeric bounds. ``pattern`` is not solved: strings are "demo"-like words.
    """
    if root is None:
        root = schema
    if not isinstance(schema, dict) or depth > 12:
        return "demo"
    if "$ref" in schema:
        return schema_instance(_resolve_ref(schema, root), root, depth + 1)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return schema_instance(_merge_all_of(schema, root), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return schema_instance(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        out: dict[str, JSON] = {}
        if isinstance(props, dict):
            out = {str(k): schema_instance(v, root, depth + 1) for k, v in props.items()}
        required = schema.get("required")
        for name in required if isinstance(required, list) else ():
            if isinstance(name, str) and name not in out:
                out[name] = "demo"
        return out
    if kind == "array":
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        values: list[JSON] = []
        if isinstance(prefix, list):
            values = [schema_instance(p, root, depth + 1) for p in prefix]
        low = schema.get("minItems")
        wanted = max(low if isinstance(low, int) else 0, len(values), 1)
        high = schema.get("maxItems")
        if isinstance(high, int):
            wanted = min(wanted, high)
        if isinstance(items, dict):
            item = schema_instance(items, root, depth + 1)
            values += [item] * (wanted - len(values))
        return values[:wanted]
    if kind in ("integer", "number"):
        return _number_example(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_example(schema)


def tool_arguments(schema: Any) -> str:
    value = schema_instance(schema) if isinstance(schema, dict) else {}
    if not isinstance(value, dict):
        value = {}
    return orjson.dumps(value).decode()


def argument_fragments(arguments: str, chunks: int | None) -> list[str]:
    """Split tool-call arguments like a model streams them: ~4 characters per delta."""
    chars = list(arguments)
    parts = chunks if chunks is not None else -(-len(chars) // 4)
    return split_evenly(chars, parts)


JSON_MODE_REPLY: dict[str, JSON] = {"message": FILLER_TEXT}


def structured_reply(response_format: Any) -> str | None:
    """The content that honours an OpenAI ``response_format``, or None for plain text.

    ``json_object`` gets a small JSON object (``JSON_MODE_REPLY``); ``json_schema`` gets a
    minimal instance of its ``schema`` (:func:`schema_instance`), so it validates whether or
    not ``strict`` is set.
    """
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return orjson.dumps(JSON_MODE_REPLY).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(schema_instance(schema if isinstance(schema, dict) else {})).decode()
    return None


_SCHEMA_MARKER = "JSON Schema:"


def _system_texts(system: Any) -> list[str]:
    if isinstance(system, str):
        return [system]
    if isinstance(system, list):
        return [b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return []


def instructed_reply(system: Any) -> str | None:
    """JSON content for an Anthropic request whose system prompt asks for JSON, or None.

    Anthropic has no ``response_format``: a caller (the relay's OpenAI translation among them)
    asks in the system prompt, and a real model complies. The demo complies with two shapes of
    instruction: a block that starts with "Respond with" and mentions JSON gets
    ``JSON_MODE_REPLY``, unless it ends with "JSON Schema:" and a schema, which gets an instance
    of that schema.
    """
    for text in _system_texts(system):
        if not text.startswith("Respond with") or "JSON" not in text:
            continue
        _, marker, tail = text.partition(_SCHEMA_MARKER)
        if marker:
            try:
                schema = orjson.loads(tail.strip())
            except orjson.JSONDecodeError:
                schema = None
            if isinstance(schema, dict):
                return orjson.dumps(schema_instance(schema)).decode()
        return orjson.dumps(JSON_MODE_REPLY).decode()
    return None
