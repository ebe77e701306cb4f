"""An OpenAI chat-completions request as an Anthropic Messages request (an OpenAI client, an
Anthropic upstream): :func:`openai_request_to_anthropic`."""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from ...errors import bad_request
from .usage import JSON, _is_int, _is_number

_dumps = orjson.dumps

#: Anthropic's image media types; anything else is rejected before it costs an upstream call.
_IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: Anthropic tool_use ids must match ``^[a-zA-Z0-9_-]+$``; other providers' ids may not.
_BAD_ID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(raw: str) -> str:
    return _BAD_ID_CHARS.sub("_", raw) if _BAD_ID_CHARS.search(raw) else raw


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
