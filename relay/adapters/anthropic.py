"""Translation between OpenAI Chat Completions and Anthropic Messages, both directions.

Pure functions and small state machines: dicts in, dicts or complete SSE frames out. No I/O,
no clock beyond a default ``created`` timestamp; the relay does the sending.

Direction 1 (client speaks OpenAI, upstream is Anthropic):
    :func:`openai_request_to_anthropic`, :func:`anthropic_response_to_openai`,
    :class:`AnthropicStreamToOpenAI`, :func:`usage_from_anthropic`.
Direction 2 (client speaks Anthropic ``POST /v1/messages``, upstream is OpenAI-compatible):
    :func:`validate_anthropic_request`, :func:`anthropic_request_to_openai`,
    :func:`openai_response_to_anthropic`, :class:`OpenAIStreamToAnthropic`,
    :class:`AnthropicError` / :func:`from_relay_error`.
Pass-through (Anthropic client and upstream): :func:`anthropic_passthrough_usage`.
Both stream classes read upstream bytes through :class:`SSEParser`.

Usage rule (billing): Anthropic reports ``input_tokens`` *excluding* cache reads and cache
writes; our :class:`~relay.usage.Usage` (like OpenAI) counts the whole prompt. So
``prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens`` and
``cached_tokens = cache_read_input_tokens``. Cache writes are billed as ordinary prompt tokens:
the price model has no separate cache-write price (Anthropic charges them at 1.25x input).

Mappings that are not one to one (and why) are documented on each function.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Final, TypeGuard

import orjson

from ..errors import RelayError, bad_request, scrub
from ..usage import Usage
from .openai import usage_of as _openai_usage_of

__all__ = [
    "AnthropicError",
    "AnthropicStreamToOpenAI",
    "OpenAIStreamToAnthropic",
    "SSEParser",
    "anthropic_passthrough_usage",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "from_relay_error",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "usage_from_anthropic",
    "validate_anthropic_request",
]

JSON = dict[str, Any]

_dumps = orjson.dumps

#: Anthropic's image media types; anything else is rejected before it costs an upstream call.
_IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: Anthropic tool_use ids must match ``^[a-zA-Z0-9_-]+$``; other providers' ids may not.
_BAD_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int:
    """A token count from an upstream: tolerant of null, missing and float values."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float):
        return int(value)
    return 0


def _tool_id(raw: str) -> str:
    return _BAD_ID_CHARS.sub("_", raw) if _BAD_ID_CHARS.search(raw) else raw


def usage_from_anthropic(usage: dict[str, Any]) -> Usage:
    """Billing usage from an Anthropic ``usage`` object (see the module docstring's rule)."""
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = (
        _int(usage.get("input_tokens"))
        + cache_read
        + _int(usage.get("cache_creation_input_tokens"))
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_int(usage.get("output_tokens")),
        cached_tokens=cache_read,
    )


def _openai_usage_dict(usage: Usage) -> JSON:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _anthropic_usage_dict(usage: Usage) -> JSON:
    """OpenAI-style figures in Anthropic's split: ``input_tokens`` excludes cache reads.

    OpenAI-compatible upstreams report no cache writes, so ``cache_creation_input_tokens``
    is always 0."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return {
        "input_tokens": usage.prompt_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    }


# --------------------------------------------------------------------------------------------
# SSE parsing
# --------------------------------------------------------------------------------------------


class SSEParser:
    """Incremental server-sent-events parser: bytes in, ``(event, data)`` pairs out.

    ``event`` is the ``event:`` field or ``""``; ``data`` is the payload with multi-line
    ``data:`` fields joined by ``\\n``. ``\\r\\n`` and bare ``\\r`` line ends are accepted
    (a ``\\r`` at the end of one read is held back in case the ``\\n`` is in the next),
    comments (``:`` lines), ``id:`` and ``retry:`` fields are ignored, and an event without
    data is not dispatched, as the SSE spec says.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        buf = self._buf + data if self._buf else data
        tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf + tail
            return []
        *blocks, rest = buf.split(b"\n\n")
        self._buf = rest + tail
        return self._parse_blocks(blocks)

    def flush(self) -> list[tuple[str, bytes]]:
        """At end of stream: dispatch a last event that lacked its blank line (lenient)."""
        buf, self._buf = self._buf.rstrip(b"\r\n"), b""
        return self._parse_blocks([buf]) if buf else []

    @staticmethod
    def _parse_blocks(blocks: list[bytes]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for block in blocks:
            if not block:
                continue
            if block.startswith(b"data: ") and b"\n" not in block:  # the common case
                out.append(("", block[6:]))
                continue
            event = ""
            lines: list[bytes] = []
            for line in block.split(b"\n"):
                if not line or line[0] == 0x3A:  # blank or ":" comment
                    continue
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    lines.append(value)
                elif name == b"event":
                    event = value.decode("utf-8", "replace")
            if lines:
                out.append((event, lines[0] if len(lines) == 1 else b"\n".join(lines)))
        return out


# --------------------------------------------------------------------------------------------
# Direction 1: OpenAI request -> Anthropic request
# --------------------------------------------------------------------------------------------


def _data_url(url: str, param: str) -> tuple[str, str]:
    """``data:<media type>;base64,<data>`` -> (media type, data)."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise bad_request("Only base64 data URLs are supported.", param=param)
    media_type = head[5:-7].lower()
    return media_type, data


def _image_block(part: JSON, param: str) -> JSON:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise bad_request("An image_url part needs image_url.url.", param=param)
    if url.startswith("data:"):
        media_type, data = _data_url(url, param)
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise bad_request(
                f"Unsupported image type {media_type!r}: use image/jpeg, image/png, image/gif "
                "or image/webp.",
                param=param,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request("Image URLs must be https:// or data: URLs.", param=param)


def _file_block(part: JSON, param: str) -> JSON:
    """An OpenAI ``file`` part with inline PDF data -> an Anthropic ``document`` block."""
    file = part.get("file")
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise bad_request(
            "Only inline file parts (file.file_data as a data: URL) are supported.", param=param
        )
    media_type, data = _data_url(data_url, param)
    if media_type != "application/pdf":
        raise bad_request("Only PDF files are supported.", param=param)
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }


def _text_block(part: JSON, param: str) -> JSON | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise bad_request("A text part needs a string text.", param=param)
    if not text:
        return None  # Anthropic rejects empty text blocks
    block: JSON = {"type": "text", "text": text}
    # OpenRouter/LiteLLM convention: a cache_control on an OpenAI text part marks an
    # Anthropic prompt-cache breakpoint; passing it through is how OpenAI clients opt in.
    cache_control = part.get("cache_control")
    if isinstance(cache_control, dict):
        block["cache_control"] = cache_control
    return block


def _content_blocks(content: Any, param: str, *, images: bool) -> str | list[JSON]:
    """OpenAI message content -> an Anthropic string or list of blocks (empty text dropped)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise bad_request("Message content must be a string or an array of parts.", param=param)
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if isinstance(part, str):  # lenient: a bare string part
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            raise bad_request("Content parts must be objects.", param=where)
        kind = part.get("type")
        if kind == "text":
            block = _text_block(part, where)
            if block is not None:
                blocks.append(block)
        elif kind == "refusal":
            refusal = part.get("refusal")
            if isinstance(refusal, str) and refusal:
                blocks.append({"type": "text", "text": refusal})
        elif kind == "image_url" and images:
            blocks.append(_image_block(part, where))
        elif kind == "file" and images:
            blocks.append(_file_block(part, where))
        else:
            raise bad_request(
                f"Content part type {kind!r} is not supported for this model.", param=where
            )
    return blocks


def _system_text(content: Any, param: str) -> list[JSON]:
    blocks = _content_blocks(content, param, images=False)
    if isinstance(blocks, str):
        return [{"type": "text", "text": blocks}] if blocks else []
    return blocks


def _tool_result(message: JSON, param: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request("A tool message needs a tool_call_id.", param=f"{param}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    content = _content_blocks(message.get("content"), f"{param}.content", images=True)
    if content:  # Anthropic rejects empty text; an empty result is simply no content
        block["content"] = content
    return block


def _tool_uses(calls: Any, param: str) -> list[JSON]:
    if not isinstance(calls, list):
        raise bad_request("tool_calls must be an array.", param=param)
    blocks: list[JSON] = []
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request("A tool call needs function.name.", param=f"{where}.function")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request("A tool call needs an id.", param=f"{where}.id")
        arguments = fn.get("arguments")
        if arguments is None or arguments == "":
            value: Any = {}  # a function without parameters is often sent with ""
        elif isinstance(arguments, dict):
            value = arguments
        else:
            try:
                value = orjson.loads(arguments) if isinstance(arguments, str) else None
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                raise bad_request(
                    "Tool call arguments must be a JSON object encoded as a string.",
                    param=f"{where}.function.arguments",
                    code="invalid_tool_arguments",
                )
        blocks.append(
            {"type": "tool_use", "id": _tool_id(call_id), "name": fn["name"], "input": value}
        )
    return blocks


def _append(messages: list[JSON], role: str, content: str | list[JSON]) -> None:
    """Append a turn, merging it into the previous one of the same role.

    Anthropic wants alternating user/assistant turns; OpenAI conversations often have
    consecutive tool results (each its own message) or a tool result followed by a user
    message. Merged user turns keep ``tool_result`` blocks first, as Anthropic requires."""
    if not content:
        return
    if messages and messages[-1]["role"] == role:
        prev = messages[-1]
        old = prev["content"]
        old_blocks = [{"type": "text", "text": old}] if isinstance(old, str) else old
        new_blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        merged = old_blocks + new_blocks
        if role == "user" and any(b.get("type") == "tool_result" for b in new_blocks):
            merged.sort(key=lambda b: b.get("type") != "tool_result")  # stable
        prev["content"] = merged
        return
    messages.append({"role": role, "content": content})


def _response_format_instruction(fmt: Any) -> str | None:
    """``response_format`` has no Anthropic equivalent: best effort is an instruction.

    ``json_object`` asks for a single JSON object; ``json_schema`` includes the schema. The
    model usually complies, but nothing enforces it (unlike OpenAI's strict mode)."""
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return "Respond with a single valid JSON object only: no prose, no Markdown code fences."
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        name = spec.get("name") if isinstance(spec, dict) else None
        label = f" (named {name!r})" if isinstance(name, str) and name else ""
        return (
            f"Respond with JSON only{label}: no prose, no Markdown code fences. The JSON must "
            "conform to this JSON Schema:\n" + _dumps(schema or {}).decode()
        )
    return None


def _anthropic_tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise bad_request("tools must be an array.", param="tools")
    out: list[JSON] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise bad_request("Only function tools are supported.", param=f"tools[{i}].type")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_request("A tool needs function.name.", param=f"tools[{i}].function.name")
        schema = fn.get("parameters")
        converted: JSON = {
            "name": fn["name"],
            # Anthropic requires an input schema; OpenAI allows omitting it for no parameters.
            "input_schema": schema
            if isinstance(schema, dict)
            else {"type": "object", "properties": {}},
        }
        description = fn.get("description")
        if isinstance(description, str) and description:
            converted["description"] = description
        out.append(converted)
    return out


def _anthropic_tool_choice(choice: Any, parallel: Any) -> JSON | None:
    """OpenAI ``tool_choice`` -> Anthropic's (``None``: leave Anthropic's default, auto).

    ``"none"`` becomes ``{"type": "none"}`` rather than dropping the tools, because Anthropic
    rejects a conversation holding ``tool_use``/``tool_result`` blocks without tool
    definitions. ``parallel_tool_calls: false`` becomes ``disable_parallel_tool_use``."""
    result: JSON
    if choice is None or choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise bad_request("tool_choice.function.name is required.", param="tool_choice")
        result = {"type": "tool", "name": name}
    else:
        raise bad_request(
            "tool_choice must be 'auto', 'none', 'required' or a named function.",
            param="tool_choice",
        )
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return result


def _max_tokens(body: JSON, default: int) -> int:
    """``max_completion_tokens`` / ``max_tokens`` (the smaller if both); Anthropic requires
    the field, so a request without either gets the route's default."""
    caps: list[int] = []
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise bad_request(f"{name} must be an integer >= 1.", param=name)
        caps.append(value)
    return min(caps) if caps else default


def openai_request_to_anthropic(
    body: dict[str, Any], upstream_model: str, *, default_max_tokens: int
) -> dict[str, Any]:
    """An OpenAI chat-completions request as an Anthropic Messages request.

    Raises :class:`RelayError` (400, with ``param``) for input Anthropic cannot take.

    Not one to one:

    * ``system`` and ``developer`` messages, wherever they appear, are concatenated (in order)
      into the top-level ``system``: a string when it is one plain string, text blocks
      otherwise (so ``cache_control`` on a part survives).
    * ``tool`` messages become ``tool_result`` blocks in a user turn; consecutive same-role
      turns are merged. Tool-call ids are sanitised to Anthropic's ``[a-zA-Z0-9_-]``
      alphabet, identically in ``tool_use`` and ``tool_result``. Empty text is dropped
      (Anthropic rejects it), and a message left empty disappears.
    * ``temperature`` is clamped to Anthropic's 0..1 (OpenAI's range is 0..2); ``top_p`` of
      1 (a no-op) is dropped, since recent Claude models refuse ``temperature`` with
      ``top_p``. Whitespace-only stop strings are dropped (Anthropic rejects them).
    * ``response_format`` becomes a system instruction (best effort, not enforced).
    * ``n`` > 1 is refused (400); ``logprobs``, ``top_logprobs``, penalties, ``seed``,
      ``logit_bias``, ``stream_options``, ``store``, ``metadata``, ``service_tier`` and
      ``reasoning_effort`` are dropped.
    """
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("This model supports only n=1.", param="n")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad_request("messages must be a non-empty array.", param="messages")

    system: list[JSON] = []
    system_plain = True
    messages: list[JSON] = []
    for i, message in enumerate(raw_messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request("Each message must be an object.", param=param)
        role = message.get("role")
        if role == "user":
            _append(
                messages,
                "user",
                _content_blocks(message.get("content"), f"{param}.content", images=True),
            )
        elif role == "assistant":
            content = _content_blocks(message.get("content"), f"{param}.content", images=False)
            calls = message.get("tool_calls")
            if calls:
                if isinstance(content, str):
                    content = [{"type": "text", "text": content}] if content else []
                content = content + _tool_uses(calls, f"{param}.tool_calls")
            _append(messages, "assistant", content)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message, param)])
        elif role in ("system", "developer"):
            blocks = _system_text(message.get("content"), f"{param}.content")
            if not isinstance(message.get("content"), str) or system:
                system_plain = False
            system.extend(blocks)
        elif role == "function":
            raise bad_request(
                "Legacy function messages are not supported: use tools and tool messages.",
                param=f"{param}.role",
            )
        else:
            raise bad_request(
                f"Invalid role {role!r}: expected system, developer, user, assistant or tool.",
                param=f"{param}.role",
            )
    if not messages:
        raise bad_request(
            "messages must contain at least one user or assistant message with content.",
            param="messages",
        )

    out: JSON = {
        "model": upstream_model,
        "messages": messages,
        "max_tokens": _max_tokens(body, default_max_tokens),
    }

    instruction = _response_format_instruction(body.get("response_format"))
    if instruction is not None:
        system.append({"type": "text", "text": instruction})
        system_plain = False
    if system:
        out["system"] = system[0]["text"] if system_plain and len(system) == 1 else system

    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad_request("stop must be a string or an array of strings.", param="stop")
        sequences = [s for s in stops if s.strip()]
        if sequences:
            out["stop_sequences"] = sequences

    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature):
            raise bad_request("temperature must be a number.", param="temperature")
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    top_p = body.get("top_p")
    if top_p is not None:
        if not _is_number(top_p):
            raise bad_request("top_p must be a number.", param="top_p")
        if top_p < 1:
            out["top_p"] = top_p
    top_k = body.get("top_k")  # not OpenAI's, but sent by some OpenAI-compatible clients
    if _is_int(top_k) and top_k > 0:
        out["top_k"] = top_k

    tools = body.get("tools")
    if tools:
        out["tools"] = _anthropic_tools(tools)
        choice = _anthropic_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice

    if body.get("stream") is True:
        out["stream"] = True
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user[:256]}
    return out


# --------------------------------------------------------------------------------------------
# Direction 1: Anthropic response -> OpenAI response
# --------------------------------------------------------------------------------------------

_FINISH_REASONS: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _finish_reason(stop_reason: Any) -> str:
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_response_to_openai(
    resp: dict[str, Any], model: str, *, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``.

    Text blocks are concatenated; ``tool_use`` blocks become ``tool_calls`` (arguments are
    the JSON of ``input``); thinking and server-tool blocks are not represented in the
    OpenAI shape and are left out. ``pause_turn`` maps to ``stop`` and
    ``model_context_window_exceeded`` to ``length``."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for block in resp.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id") or f"call_{len(tool_calls)}",
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": _dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: JSON = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    out: JSON = {
        "id": f"chatcmpl-{resp.get('id') or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(resp.get("stop_reason")),
            }
        ],
    }
    usage = resp.get("usage")
    if isinstance(usage, dict):
        out["usage"] = _openai_usage_dict(usage_from_anthropic(usage))
    return out


def _openai_error_type(anthropic_type: Any) -> str:
    if anthropic_type == "rate_limit_error":
        return "rate_limit_error"
    if anthropic_type == "invalid_request_error":
        return "invalid_request_error"
    return "upstream_error"


class AnthropicStreamToOpenAI:
    """Anthropic stream events -> OpenAI ``chat.completion.chunk`` SSE frames.

    Feed it every parsed event (``feed(event_name, data)``); each call returns the complete
    frames to send. Anthropic block indexes are mapped to OpenAI ``tool_calls[].index`` in
    order of appearance (text blocks do not count). Thinking, citation and server-tool
    events have no OpenAI counterpart and are skipped.

    :attr:`usage` is exact once ``message_delta`` arrived (its ``output_tokens`` is the
    cumulative figure and replaces ``message_start``'s, never adds to it; input figures in
    it, when present, are cumulative too). Before that, a cut-off stream still yields the
    prompt from ``message_start`` with the larger of its ``output_tokens`` and the number of
    content chunks sent, marked ``estimated``.
    """

    __slots__ = (
        "_cache_creation",
        "_cache_read",
        "_created",
        "_finish_sent",
        "_finished",
        "_have_input",
        "_id",
        "_include_usage",
        "_input",
        "_model",
        "_output",
        "_prefix",
        "_start_output",
        "_started",
        "_tool_index",
        "chunks",
        "failed",
    )

    def __init__(
        self,
        model: str,
        include_usage: bool,
        *,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = completion_id
        self._created = created if created is not None else int(time.time())
        self._prefix: bytes | None = None
        self._started = False
        self._finish_sent = False
        self._finished = False
        self._tool_index: dict[int, int] = {}
        self._input = 0
        self._cache_read = 0
        self._cache_creation = 0
        self._have_input = False
        self._start_output = 0
        self._output: int | None = None
        #: content frames sent (text and tool-argument deltas), for estimates.
        self.chunks = 0
        #: an ``error`` event arrived; nothing more is sent.
        self.failed = False

    @property
    def finished(self) -> bool:
        """``message_stop`` arrived and ``[DONE]`` was sent."""
        return self._finished

    @property
    def usage(self) -> Usage | None:
        if self._output is None and not self._have_input:
            return None
        prompt = self._input + self._cache_read + self._cache_creation
        if self._output is not None:
            return Usage(prompt, self._output, self._cache_read, estimated=not self._have_input)
        return Usage(prompt, max(self._start_output, self.chunks), self._cache_read, estimated=True)

    def _envelope(self) -> bytes:
        if self._id is None:
            self._id = f"chatcmpl-{uuid.uuid4().hex}"
        return (
            b'{"id":'
            + _dumps(self._id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + _dumps(self._model)
        )

    def _frame(self, delta: JSON, finish: str | None = None) -> bytes:
        # Every chunk shares its envelope: serialise it once, splice each delta in.
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = (
                b"data: " + self._envelope() + b',"choices":[{"index":0,"delta":'
            )
        return (
            prefix
            + _dumps(delta)
            + b',"logprobs":null,"finish_reason":'
            + (b"null" if finish is None else _dumps(finish))
            + b"}]}\n\n"
        )

    def _start(self) -> bytes:
        """The first chunk, as OpenAI sends it: the role and an empty content."""
        self._started = True
        return self._frame({"role": "assistant", "content": ""})

    def _read_usage(self, usage: Any, *, final: bool) -> None:
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage and usage["input_tokens"] is not None:
            self._input = _int(usage["input_tokens"])
            self._have_input = True
        if usage.get("cache_read_input_tokens") is not None:
            self._cache_read = _int(usage["cache_read_input_tokens"])
        if usage.get("cache_creation_input_tokens") is not None:
            self._cache_creation = _int(usage["cache_creation_input_tokens"])
        if "output_tokens" in usage:
            if final:
                self._output = _int(usage["output_tokens"])
            else:
                self._start_output = _int(usage["output_tokens"])

    def feed(self, event: str, data: dict[str, Any]) -> list[bytes]:
        """Translate one upstream event (``event`` may be ``""``: ``data["type"]`` is used)."""
        if self._finished or self.failed:
            return []
        kind = event or data.get("type") or ""
        if kind == "content_block_delta":  # the hot path
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if not text:
                    return []
                frame = self._frame({"content": text})
            elif dtype == "input_json_delta":
                partial = delta.get("partial_json")
                index = self._tool_index.get(data.get("index", -1))
                if not partial or index is None:
                    return []
                frame = self._frame(
                    {"tool_calls": [{"index": index, "function": {"arguments": partial}}]}
                )
            else:
                return []  # thinking, signature, citations: nothing to say in OpenAI's shape
            self.chunks += 1
            return [frame] if self._started else [self._start(), frame]
        if kind == "message_start":
            message = data.get("message") or {}
            if self._id is None and isinstance(message.get("id"), str):
                self._id = f"chatcmpl-{message['id']}"
            self._read_usage(message.get("usage"), final=False)
            return [] if self._started else [self._start()]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use":
                index = len(self._tool_index)
                self._tool_index[_int(data.get("index"))] = index
                call = {
                    "index": index,
                    "id": block.get("id") or f"call_{index}",
                    "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""},
                }
                frame = self._frame({"tool_calls": [call]})
            elif btype == "text" and block.get("text"):
                self.chunks += 1
                frame = self._frame({"content": block["text"]})
            else:
                return []
            return [frame] if self._started else [self._start(), frame]
        if kind == "message_delta":
            self._read_usage(data.get("usage"), final=True)
            if self._finish_sent:
                return []
            self._finish_sent = True
            reason = _finish_reason((data.get("delta") or {}).get("stop_reason"))
            frame = self._frame({}, reason)
            return [frame] if self._started else [self._start(), frame]
        if kind == "message_stop":
            out = [] if self._started else [self._start()]
            if not self._finish_sent:
                self._finish_sent = True
                out.append(self._frame({}, "stop"))
            usage = self.usage
            if self._include_usage and usage is not None:
                head = self._envelope() + b',"choices":[],"usage":'
                out.append(b"data: " + head + _dumps(_openai_usage_dict(usage)) + b"}\n\n")
            out.append(b"data: [DONE]\n\n")
            self._finished = True
            return out
        if kind == "error":
            self.failed = True
            error = data.get("error")
            if not isinstance(error, dict):
                error = {}
            message = error.get("message")
            etype = error.get("type")
            body = {
                "error": {
                    "message": scrub(message) if isinstance(message, str) else "Upstream error.",
                    "type": _openai_error_type(etype),
                    "param": None,
                    "code": etype if isinstance(etype, str) else None,
                }
            }
            return [b"data: " + _dumps(body) + b"\n\n"]
        return []  # ping, content_block_stop and event types added after this was written


def anthropic_passthrough_usage(
    event: str, data: dict[str, Any], current: Usage | None
) -> Usage | None:
    """Usage read from an Anthropic stream passed through unchanged (Anthropic client and
    upstream). ``message_start`` gives the prompt side (its ``output_tokens``, usually 1, is
    kept but marked ``estimated``); ``message_delta`` gives the cumulative ``output_tokens``
    that replaces it, and any cumulative input figures it carries replace the earlier ones.
    Other events return ``current`` unchanged."""
    kind = event or data.get("type")
    if kind == "message_start":
        usage = (data.get("message") or {}).get("usage")
        if not isinstance(usage, dict):
            return current
        start = usage_from_anthropic(usage)
        return Usage(start.prompt_tokens, start.completion_tokens, start.cached_tokens, True)
    if kind != "message_delta":
        return current
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return current
    output = _int(usage.get("output_tokens"))
    if usage.get("input_tokens") is not None:
        cached = (
            _int(usage["cache_read_input_tokens"])
            if usage.get("cache_read_input_tokens") is not None
            else (current.cached_tokens if current else 0)
        )
        prompt = (
            _int(usage["input_tokens"]) + cached + _int(usage.get("cache_creation_input_tokens"))
        )
        return Usage(prompt, output, cached)
    if current is None:
        return Usage(0, output, 0, estimated=True)
    return Usage(current.prompt_tokens, output, current.cached_tokens)


# --------------------------------------------------------------------------------------------
# Direction 2: errors in Anthropic's shape
# --------------------------------------------------------------------------------------------

_ANTHROPIC_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicError(RelayError):
    """An error rendered in Anthropic's shape: ``{"type":"error","error":{"type","message"}}``.

    A :class:`RelayError`, so the relay's existing ``except RelayError`` handling (status,
    headers such as Retry-After, ``body()``) renders it without a special case."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(status, message, type=type, headers=headers)

    def body(self) -> bytes:
        return _dumps({"type": "error", "error": {"type": self.type, "message": self.message}})

    def sse(self) -> bytes:
        """The same error as a stream ``error`` event (for failures after the stream began)."""
        return b"event: error\ndata: " + self.body() + b"\n\n"


def _anthropic_error_type(status: int) -> str:
    found = _ANTHROPIC_ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def from_relay_error(error: RelayError) -> AnthropicError:
    """An OpenAI-style relay error as Anthropic's: same status, message and headers; the
    type follows the status (402 ``billing_error``, 503 ``overloaded_error``, 504
    ``timeout_error`` ...), as Anthropic's SDKs pick their exception class by status."""
    if isinstance(error, AnthropicError):
        return error
    return AnthropicError(
        error.status, _anthropic_error_type(error.status), error.message, headers=error.headers
    )


def _invalid(message: str) -> AnthropicError:
    return AnthropicError(400, "invalid_request_error", message)


# --------------------------------------------------------------------------------------------
# Direction 2: Anthropic request -> OpenAI request
# --------------------------------------------------------------------------------------------


def validate_anthropic_request(body: Any) -> None:
    """Check what Anthropic checks first, with its ``field: problem`` messages; raises
    :class:`AnthropicError` (400). Block-level problems are found during conversion."""
    if not isinstance(body, dict):
        raise _invalid("Input should be an object")
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _invalid(f"messages.{i}.content: Field required")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise _invalid(
                        f"messages.{i}.content.{j}: Input should be a valid content block"
                    )
        elif not isinstance(content, str):
            raise _invalid(f"messages.{i}.content: Input should be a valid string or list")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _invalid("system: Input should be a valid string or list")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and not _is_number(value):
            raise _invalid(f"{name}: Input should be a valid number")
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise _invalid("stop_sequences: Input should be a valid list of strings")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _invalid(f"tools.{i}.name: Field required")
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")
    ):
        raise _invalid("tool_choice: Input tag should be 'auto', 'any', 'tool' or 'none'")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        if not isinstance(choice.get("name"), str):
            raise _invalid("tool_choice.tool.name: Field required")


def _image_part(block: JSON, where: str) -> JSON:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise _invalid(f"{where}.source: media_type and data are required")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _invalid(f"{where}.source.type: only base64 and url image sources are supported")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: JSON, where: str) -> JSON:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text" and isinstance(source, dict) and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if (
        kind == "base64"
        and isinstance(source, dict)
        and source.get("media_type") == "application/pdf"
        and isinstance(source.get("data"), str)
    ):
        title = block.get("title")
        return {
            "type": "file",
            "file": {
                "filename": title if isinstance(title, str) and title else "document.pdf",
                "file_data": f"data:application/pdf;base64,{source['data']}",
            },
        }
    raise _invalid(f"{where}.source: only base64 PDF and plain-text documents are supported")


def _tool_result_text(block: JSON, where: str) -> tuple[str, list[JSON]]:
    """A ``tool_result``'s content as (text, image parts): OpenAI tool messages hold text only,
    so images in a result travel in a user message right after the tool messages."""
    content = block.get("content")
    images: list[JSON] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts: list[str] = []
        for k, item in enumerate(content):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text" and isinstance(item, dict):
                texts.append(str(item.get("text") or ""))
            elif kind == "image" and isinstance(item, dict):
                images.append(_image_part(item, f"{where}.content.{k}"))
            elif kind == "document" and isinstance(item, dict):
                images.append(_document_part(item, f"{where}.content.{k}"))
            else:
                raise _invalid(f"{where}.content.{k}: unsupported tool result content {kind!r}")
        text = "\n".join(texts)
    else:
        raise _invalid(f"{where}.content: Input should be a valid string or list")
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return text, images


def _user_content(parts: list[JSON]) -> str | list[JSON]:
    """Text-only content becomes one string: some OpenAI-compatible upstreams accept only
    string content. Several text blocks are joined with a blank line."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _openai_messages(messages: list[JSON]) -> list[JSON]:
    out: list[JSON] = []
    for i, message in enumerate(messages):
        role = message["role"]
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if role == "assistant":
            texts: list[str] = []
            calls: list[JSON] = []
            for j, block in enumerate(content):
                kind = block["type"]
                if kind == "text":
                    texts.append(str(block.get("text") or ""))
                elif kind == "tool_use":
                    if not isinstance(block.get("id"), str) or not isinstance(
                        block.get("name"), str
                    ):
                        raise _invalid(f"messages.{i}.content.{j}: tool_use needs id and name")
                    calls.append(
                        {
                            "id": block["id"],
                            "type": "function",
                            "function": {
                                "name": block["name"],
                                "arguments": _dumps(block.get("input") or {}).decode(),
                            },
                        }
                    )
                elif kind in ("thinking", "redacted_thinking"):
                    continue  # the upstream cannot verify Anthropic's signed thinking
                else:
                    raise _invalid(f"messages.{i}.content.{j}.type: {kind!r} is not supported here")
            assistant: JSON = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                assistant["tool_calls"] = calls
            elif assistant["content"] is None:
                assistant["content"] = ""
            out.append(assistant)
            continue
        parts: list[JSON] = []
        for j, block in enumerate(content):
            kind = block["type"]
            where = f"messages.{i}.content.{j}"
            if kind == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise _invalid(f"{where}.text: Field required")
                parts.append({"type": "text", "text": text})
            elif kind == "image":
                parts.append(_image_part(block, where))
            elif kind == "document":
                parts.append(_document_part(block, where))
            elif kind == "tool_result":
                tool_use_id = block.get("tool_use_id")
                if not isinstance(tool_use_id, str):
                    raise _invalid(f"{where}.tool_use_id: Field required")
                text, extra = _tool_result_text(block, where)
                # Tool messages must directly follow the assistant's tool_calls message.
                out.append({"role": "tool", "tool_call_id": tool_use_id, "content": text})
                parts.extend(extra)
            else:
                raise _invalid(f"{where}.type: {kind!r} is not supported here")
        if parts:
            out.append({"role": "user", "content": _user_content(parts)})
    return out


def _system_message(system: Any) -> JSON | None:
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    texts = [
        str(block.get("text") or "")
        for block in system
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    joined = "\n\n".join(t for t in texts if t)
    return {"role": "system", "content": joined} if joined else None


def _openai_tools(tools: list[JSON]) -> list[JSON]:
    out: list[JSON] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind not in (None, "custom") or not isinstance(tool.get("input_schema"), dict):
            raise _invalid(
                f"tools.{i}: server tool {kind or tool.get('name')!r} is not supported by this "
                "model; define a custom tool with an input_schema"
            )
        fn: JSON = {"name": tool["name"], "parameters": tool["input_schema"]}
        description = tool.get("description")
        if isinstance(description, str) and description:
            fn["description"] = description
        out.append({"type": "function", "function": fn})
    return out


def anthropic_request_to_openai(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An Anthropic Messages request (already validated) as an OpenAI chat request.

    Raises :class:`AnthropicError` (400) for blocks it cannot carry. Not one to one:

    * ``system`` blocks are joined with blank lines into one system message.
    * Text-only user content becomes one string (blocks joined with blank lines); with
      images it stays a parts list (base64 sources become data URLs). PDF documents become
      ``file`` parts, plain-text documents text.
    * Each ``tool_result`` becomes a ``tool`` message (text joined; ``is_error`` prefixes
      ``"Error: "``), emitted before the rest of that user turn; images inside a result
      move to a user message after the tool messages.
    * ``thinking``/``redacted_thinking`` blocks, ``top_k``, ``thinking``, ``cache_control``
      and ``service_tier`` are dropped; server tools (web search, ...) are refused.
    * ``disable_parallel_tool_use`` becomes ``parallel_tool_calls: false``.
    """
    messages = _openai_messages(body["messages"])
    system = body.get("system")
    if system:
        first = _system_message(system)
        if first is not None:
            messages.insert(0, first)
    out: JSON = {"model": upstream_model, "messages": messages, "max_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops:
        out["stop"] = stops
    tools = body.get("tools")
    if tools:
        out["tools"] = _openai_tools(tools)
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "any":
                out["tool_choice"] = "required"
            elif kind == "tool":
                out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
            elif kind in ("auto", "none"):
                out["tool_choice"] = kind
            if choice.get("disable_parallel_tool_use") is True and kind != "none":
                out["parallel_tool_calls"] = False
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


# --------------------------------------------------------------------------------------------
# Direction 2: OpenAI response -> Anthropic response
# --------------------------------------------------------------------------------------------

_STOP_REASONS: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _tool_input(arguments: Any) -> dict[str, Any]:
    """Parsed tool arguments; anything that is not a JSON object is kept as ``{"_raw": ...}``
    because Anthropic's ``input`` must be an object and the client should see what came."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def _message_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id:
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex


def openai_response_to_anthropic(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``.

    ``content_filter`` maps to ``refusal`` (as does a ``refusal`` text, which becomes a
    text block); a ``stop`` that nevertheless carries tool calls (some compatible servers
    do that) maps to ``tool_use``. ``stop_sequence`` is always null: OpenAI does not say
    which stop string matched. Reasoning text some upstreams add is not carried."""
    message_id = _message_id(resp.get("id"))
    content: list[JSON] = []
    finish: Any = None
    refused = False
    choices = resp.get("choices")
    if isinstance(choices, list) and choices:
        choice = choices[0]
        finish = choice.get("finish_reason")
        message = choice.get("message") or {}
        text = message.get("content")
        if isinstance(text, list):  # a few compatible servers answer with parts
            text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            refused = True
            text = f"{text}{refusal}" if isinstance(text, str) else refusal
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
        for k, call in enumerate(message.get("tool_calls") or ()):
            fn = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{message_id[4:]}_{k}",
                    "name": fn.get("name") or "",
                    "input": _tool_input(fn.get("arguments")),
                }
            )
    has_tools = any(block["type"] == "tool_use" for block in content)
    stop_reason = _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if refused:
        stop_reason = "refusal"
    elif has_tools and stop_reason == "end_turn":
        stop_reason = "tool_use"
    usage = _openai_usage_of(resp) or Usage(0, 0)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage_dict(usage),
    }


# --------------------------------------------------------------------------------------------
# Direction 2: OpenAI stream -> Anthropic stream
# --------------------------------------------------------------------------------------------


def _event(name: bytes, payload: JSON) -> bytes:
    return b"event: " + name + b"\ndata: " + _dumps(payload) + b"\n\n"


class _ToolCall:
    __slots__ = ("args", "block", "closed", "complete", "id", "name")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.args = ""  # every fragment received
        self.block: int | None = None  # Anthropic block index once started
        self.closed = False
        self.complete = False


_TEXT: Final = 1
_TOOL: Final = 2


class OpenAIStreamToAnthropic:
    """OpenAI ``chat.completion.chunk`` dicts -> Anthropic SSE frames (``event:`` + ``data:``).

    ``message_start`` goes out with the first chunk, with zero usage as a placeholder:
    OpenAI reports usage only at the end, so the real figures (``input_tokens``, cache reads,
    ``output_tokens``) travel in ``message_delta``'s usage, which the Anthropic SDKs take as
    cumulative totals. ``message_delta``/``message_stop`` are sent as soon as usage arrives
    with or after the finish reason, or else by :meth:`finish` at ``[DONE]`` / end of
    stream (then without upstream usage, ``output_tokens`` is the chunk count, an estimate).

    Anthropic blocks are strictly sequential (start, deltas, stop), while OpenAI tool-call
    fragments are keyed by index and may interleave. A tool call streams live while it is
    the open block; a new call (or text) replaces the open call only once the open call's
    arguments parse as a complete JSON object, otherwise it is buffered and sent whole when
    that becomes true or at the end. So interleaved parallel calls arrive intact, just later.
    """

    __slots__ = (
        "_active",
        "_active_block",
        "_active_tool",
        "_finished",
        "_id",
        "_model",
        "_next_block",
        "_pending_text",
        "_queued",
        "_refused",
        "_started",
        "_stop_reason",
        "_tools",
        "_usage",
        "chunks",
        "failed",
    )

    def __init__(self, model: str, message_id: str) -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._finished = False
        self._active = 0  # 0: no open block, _TEXT or _TOOL
        self._active_block = -1
        self._active_tool: _ToolCall | None = None
        self._next_block = 0
        self._tools: dict[int, _ToolCall] = {}
        self._queued: list[_ToolCall] = []
        self._pending_text: list[str] = []
        self._stop_reason: str | None = None
        self._refused = False
        self._usage: Usage | None = None
        #: content fragments received (text and tool-argument pieces), for estimates.
        self.chunks = 0
        #: the upstream sent an error chunk; an ``error`` event went out, nothing more will.
        self.failed = False

    @property
    def finished(self) -> bool:
        """``message_stop`` was sent."""
        return self._finished

    @property
    def usage(self) -> Usage | None:
        """The upstream's usage, or None if it sent none (the relay then estimates)."""
        return self._usage

    def _message_start(self) -> bytes:
        self._started = True
        return _event(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self._id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 0,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 0,
                    },
                },
            },
        )

    # -- blocks ------------------------------------------------------------------------------

    def _close(self, out: list[bytes]) -> None:
        if not self._active:
            return
        out.append(
            _event(
                b"content_block_stop", {"type": "content_block_stop", "index": self._active_block}
            )
        )
        if self._active_tool is not None:
            self._active_tool.closed = True
            self._active_tool = None
        self._active = 0

    def _open_text(self, out: list[bytes]) -> None:
        self._close(out)
        index = self._active_block = self._next_block
        self._next_block += 1
        self._active = _TEXT
        out.append(
            _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )

    def _text_delta(self, text: str) -> bytes:
        return _event(
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._active_block,
                "delta": {"type": "text_delta", "text": text},
            },
        )

    def _open_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        self._close(out)
        index = self._active_block = call.block = self._next_block
        self._next_block += 1
        self._active = _TOOL
        self._active_tool = call
        out.append(
            _event(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": {},
                    },
                },
            )
        )
        if call.args:
            out.append(self._json_delta(call.args))

    def _json_delta(self, fragment: str) -> bytes:
        return _event(
            b"content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._active_block,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            },
        )

    def _active_tool_done(self) -> bool:
        """Whether the open tool call's arguments already form a complete JSON object."""
        call = self._active_tool
        if call is None:
            return True
        if not call.complete and call.args:
            try:
                call.complete = isinstance(orjson.loads(call.args), dict)
            except orjson.JSONDecodeError:
                return False
        return call.complete

    def _on_text(self, text: str, out: list[bytes]) -> None:
        self.chunks += 1
        if self._active == _TEXT:
            out.append(self._text_delta(text))
        elif self._active == _TOOL and not self._active_tool_done():
            self._pending_text.append(text)
        else:
            self._open_text(out)
            out.append(self._text_delta(text))

    def _on_tool(self, tc: JSON, out: list[bytes]) -> None:
        fn = tc.get("function") or {}
        fragment = fn.get("arguments") or ""
        raw_index = tc.get("index")
        if _is_int(raw_index):
            index = raw_index
        else:
            # A few servers omit the index: a new id means a new call, else the last one.
            new = tc.get("id") and all(c.id != tc["id"] for c in self._tools.values())
            index = len(self._tools) if new or not self._tools else max(self._tools)
        call = self._tools.get(index)
        if fragment:
            self.chunks += 1
        if call is None:
            raw_id = tc.get("id")
            call = _ToolCall(
                raw_id if isinstance(raw_id, str) and raw_id else f"toolu_{self._id}_{index}",
                str(fn.get("name") or ""),
            )
            call.args = fragment
            self._tools[index] = call
            if self._active == _TOOL and not self._active_tool_done():
                self._queued.append(call)
            else:
                self._open_tool(call, out)
            return
        if not call.name and fn.get("name"):
            call.name = str(fn["name"])  # only matters while still queued
        if not fragment:
            return
        if call is self._active_tool:
            call.args += fragment
            out.append(self._json_delta(fragment))
        elif call.block is None:
            call.args += fragment
            if self._active_tool_done():
                self._queued.remove(call)
                self._open_tool(call, out)
        # else: a fragment after the call's arguments were complete and its block closed;
        # nothing valid can follow a complete JSON object, so it is dropped.

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._finished or self.failed:
            return []
        out: list[bytes] = [] if self._started else [self._message_start()]
        error = chunk.get("error")
        if error:
            self.failed = True
            message = error.get("message") if isinstance(error, dict) else error
            text = scrub(message) if isinstance(message, str) and message else "Upstream error."
            out.append(AnthropicError(502, "api_error", text).sse())
            return out
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content and isinstance(content, str):
                    self._on_text(content, out)
                refusal = delta.get("refusal")
                if refusal and isinstance(refusal, str):
                    self._refused = True
                    self._on_text(refusal, out)
                calls = delta.get("tool_calls")
                if calls:
                    for tc in calls:
                        if isinstance(tc, dict):
                            self._on_tool(tc, out)
            finish = choice.get("finish_reason")
            if finish:
                self._stop_reason = _STOP_REASONS.get(finish, "end_turn")
        if chunk.get("usage"):
            usage = _openai_usage_of(chunk)
            if usage is not None:
                self._usage = usage
                # Usage in or after the finish chunk is final. Servers that put a running
                # total on every chunk (vLLM's continuous usage) are closed by finish().
                if self._stop_reason is not None:
                    self._end(out)
        return out

    def finish(self) -> list[bytes]:
        """Close the message at ``[DONE]`` or end of stream (idempotent; after an error
        event it sends nothing)."""
        if self._finished or self.failed:
            return []
        out: list[bytes] = [] if self._started else [self._message_start()]
        self._end(out)
        return out

    def _end(self, out: list[bytes]) -> None:
        self._close(out)
        for call in self._queued:
            self._open_tool(call, out)
            self._close(out)
        self._queued.clear()
        if self._pending_text:
            self._open_text(out)
            out.append(self._text_delta("".join(self._pending_text)))
            self._close(out)
            self._pending_text.clear()
        stop_reason = self._stop_reason or "end_turn"
        if self._refused:
            stop_reason = "refusal"
        elif self._tools and stop_reason == "end_turn":
            stop_reason = "tool_use"
        usage: JSON = (
            _anthropic_usage_dict(self._usage)
            if self._usage is not None
            else {"output_tokens": self.chunks}
        )
        out.append(
            _event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(_event(b"message_stop", {"type": "message_stop"}))
        self._finished = True
