"""A client's Responses request (``POST /v1/responses``) as a Chat Completions request.

The relay stores no content (DESIGN.md, invariant 7), so what the Responses API keeps on
OpenAI's side is refused with a 400 naming the parameter: ``store: true``,
``previous_response_id``, ``conversation``, ``background: true``, stored ``prompt`` templates
and ``item_reference`` input items. An absent ``store`` is taken as false (OpenAI's default is
true; the official SDKs send nothing unless asked), and the docs say so. Everything else that
Chat Completions can carry is translated; the rest (server tools such as web search) is
refused rather than silently dropped, so a client never believes a tool ran that did not.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from ...errors import RelayError, bad_request

JSON = dict[str, Any]

# Parameters that need the conversation stored on our side, which it never is.
_STORED: tuple[str, ...] = ("previous_response_id", "conversation", "prompt")
_ROLES: dict[str, str] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    # Chat upstreams other than OpenAI's (Mistral, Anthropic's translation) know no
    # "developer" role; its instructions are a system message's.
    "developer": "system",
}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _not_stored(param: str) -> RelayError:
    return bad_request(
        f"'{param}' is not supported: this relay never stores conversations or responses. "
        "Send the whole conversation as 'input' on each request.",
        param=param,
        code="unsupported_parameter",
    )


def validate_responses_request(body: JSON) -> None:
    """The refusals that need no translation (the body is an object with a model)."""
    if body.get("store") is True:
        raise _not_stored("store")
    if body.get("background") is True:
        raise bad_request(
            "'background' is not supported: responses are answered while the client waits.",
            param="background",
            code="unsupported_parameter",
        )
    for param in _STORED:
        if body.get(param) is not None:
            raise _not_stored(param)
    value = body.get("input")
    if not isinstance(value, str | list) or not value:
        raise bad_request("'input' must be a non-empty string or array.", param="input")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    cap = body.get("max_output_tokens")
    if cap is not None and (not _is_int(cap) or cap < 1):
        raise bad_request("'max_output_tokens' must be an integer >= 1.", param="max_output_tokens")
    for name in ("temperature", "top_p"):
        if body.get(name) is not None and not _is_number(body[name]):
            raise bad_request(f"'{name}' must be a number.", param=name)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("'instructions' must be a string.", param="instructions")


# ---- input items ------------------------------------------------------------------------------


def _image_part(part: JSON, where: str) -> JSON:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        # file_id points at OpenAI's file storage, which no other upstream can read.
        raise bad_request(f"{where}: only 'image_url' images are supported.", param="input")
    image: JSON = {"url": url}
    detail = part.get("detail")
    if isinstance(detail, str):
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file_part(part: JSON, where: str) -> JSON:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise bad_request(
            f"{where}: only files sent inline as 'file_data' are supported.", param="input"
        )
    file: JSON = {"file_data": data}
    name = part.get("filename")
    if isinstance(name, str) and name:
        file["filename"] = name
    return {"type": "file", "file": file}


def _content(content: Any, where: str) -> str | list[JSON]:
    """A message's content as chat content: text-only content becomes one string (some
    OpenAI-compatible upstreams accept string content only), with images a parts list."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array.", param="input")
    parts: list[JSON] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise bad_request(f"{at} must be an object.", param="input")
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{at}.text must be a string.", param="input")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            parts.append(_image_part(part, at))
        elif kind == "input_file":
            parts.append(_file_part(part, at))
        else:
            raise bad_request(f"{at}.type {kind!r} is not supported.", param="input")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tool_output(output: Any, where: str) -> str:
    """A function_call_output's output: chat tool messages carry text only."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                raise bad_request(
                    f"{where}.output[{j}]: only text parts are supported in a function output.",
                    param="input",
                )
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise bad_request(f"{where}.output must be a string or an array.", param="input")


def _messages(items: list[Any]) -> list[JSON]:
    """Input items as chat messages. Consecutive ``function_call`` items (parallel calls) join
    one assistant message, after its text if the assistant's message came just before, as
    chat expects; ``reasoning`` items are dropped (their encrypted content is OpenAI's own,
    and no chat upstream reads reasoning back)."""
    out: list[JSON] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object.", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(str(item.get("role")))
            if role is None:
                raise bad_request(
                    f"{where}.role must be 'user', 'assistant', 'system' or 'developer'.",
                    param="input",
                )
            out.append({"role": role, "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise bad_request(
                    f"{where}: a function_call needs call_id and name.", param="input"
                )
            arguments = item.get("arguments")
            call = {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": arguments if isinstance(arguments, str) else "{}",
                },
            }
            last = out[-1] if out else None
            if (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last.get("content"), str | type(None))
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise bad_request(f"{where}: a function_call_output needs call_id.", param="input")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": _tool_output(item.get("output"), where),
                }
            )
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise _not_stored("input")
        else:
            raise bad_request(f"{where}.type {kind!r} is not supported.", param="input")
    for message in out:  # an assistant turn that was only calls has no text
        if message["role"] == "assistant" and message.get("content") == "":
            message["content"] = None if message.get("tool_calls") else ""
    return out


# ---- tools and formats ------------------------------------------------------------------------


def _tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", param="tools")
    out: list[JSON] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function" or not isinstance(tool, dict):
            raise bad_request(
                f"tools[{i}]: tools of type {kind!r} are not supported; define a function tool.",
                param="tools",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"tools[{i}].name is required.", param="tools")
        fn: JSON = {"name": name}
        for field in ("description", "parameters", "strict"):
            if tool.get(field) is not None:
                fn[field] = tool[field]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise bad_request(
        "'tool_choice' must be 'auto', 'none', 'required' or a function by name.",
        param="tool_choice",
    )


def _response_format(text: Any) -> JSON | None:
    """``text.format`` as chat's ``response_format`` (None: plain text)."""
    if not isinstance(text, dict):
        return None
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt, dict):
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise bad_request("'text.format' json_schema needs a name and a schema.", param="text")
        spec: JSON = {"name": name, "schema": schema}
        for field in ("description", "strict"):
            if fmt.get(field) is not None:
                spec[field] = fmt[field]
        return {"type": "json_schema", "json_schema": spec}
    raise bad_request(
        "'text.format.type' must be 'text', 'json_object' or 'json_schema'.", param="text"
    )


def responses_request_to_chat(body: JSON) -> JSON:
    """A validated Responses request as a chat request, the client's model name kept (the
    relay resolves it like a chat request's). Not one to one:

    * ``instructions`` becomes the first, system, message; ``developer`` messages are system
      messages too.
    * ``max_output_tokens`` becomes ``max_tokens`` (each route's rules rename it to
      ``max_completion_tokens`` where the provider wants that).
    * ``reasoning.effort`` becomes ``reasoning_effort`` (the relay drops it for a model that
      does not reason); ``reasoning.summary`` has no chat counterpart.
    * A stream always asks for usage: the bill is made from it.
    * ``metadata`` is echoed in the response, never sent upstream; ``include``,
      ``truncation``, ``service_tier``, ``top_logprobs`` and ``max_tool_calls`` are accepted
      and not forwarded (chat has no counterpart that would change the answer).
    """
    messages: list[JSON] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    value = body["input"]
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    else:
        messages.extend(_messages(value))
    if not messages:
        raise bad_request("'input' holds no message.", param="input")
    out: JSON = {"model": body["model"], "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user", "prompt_cache_key", "safety_identifier"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = body.get("tool_choice")
    if choice is not None:
        converted = _tool_choice(choice)
        if out.get("tools"):
            out["tool_choice"] = converted
        elif choice not in ("auto", "none"):
            # Without tools only the choices that change nothing mean anything; the others
            # are sent by no working client, and some upstreams refuse any tool_choice alone.
            raise bad_request("'tool_choice' needs 'tools' to choose from.", param="tool_choice")
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out
