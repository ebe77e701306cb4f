"""A client's Anthropic Messages request (``POST /v1/messages``): validated as Anthropic
validates it (:func:`validate_anthropic_request`), then translated for an OpenAI-compatible
upstream (:func:`anthropic_request_to_openai`)."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import _invalid
from .usage import JSON, _is_int, _is_number

_dumps = orjson.dumps


def validate_anthropic_request(body: Any, *, count_only: bool = False) -> None:
    """Check what Anthropic checks first, with its ``field: problem`` messages; raises
    :class:`AnthropicError` (400). Block-level problems are found during conversion. With
    ``count_only`` (``POST /v1/messages/count_tokens``) ``max_tokens`` is not required."""
    if not isinstance(body, dict):
        raise _invalid("Input should be an object")
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if not count_only:
            raise _invalid("max_tokens: Field required")
    elif not _is_int(max_tokens):
        raise _invalid("max_tokens: Input should be a valid integer")
    elif max_tokens < 1:
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
