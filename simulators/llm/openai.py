"""OpenAI's chat completions, ``POST /v1/chat/completions``, plain and streamed (SSE).

Requests are validated as OpenAI validates them, with the same message, ``param`` and ``code``
for the common mistakes. The answer is filler text, or a call of one of the request's tools with
arguments made from its JSON schema (see :func:`_choose_openai_tool`), or, with a
``response_format`` of json_object or json_schema, JSON content (:func:`.text.structured_reply`).

A stream is ``chat.completion.chunk`` events in OpenAI's order: a first delta with the role and
empty content, the content (or tool-call argument) deltas, an empty delta with the
``finish_reason``, then, with ``stream_options.include_usage``, a chunk with empty ``choices``
and the usage (every earlier chunk then carries ``"usage": null``), and ``data: [DONE]``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from . import providers
from .config import BadValue, DemoConfig, completion_budget, request_config
from .endpoint import (
    DemoState,
    active_error,
    json_headers,
    read_body,
    send_cut_body,
    send_stream,
    sleep_ms,
    sse_headers,
)
from .errors import bad_request, openai_injected, openai_missing_key
from .text import (
    argument_fragments,
    estimate_prompt_tokens,
    filler_pieces,
    split_evenly,
    structured_reply,
    tool_arguments,
)
from .usage import openai_usage
from .wire import INVALID, JSON, bearer_token, drop, is_int, new_id, type_name

SYSTEM_FINGERPRINT = "fp_tokenpapa_demo"

_OPENAI_ROLES = ("system", "user", "assistant", "tool", "function", "developer")


class _ChatRequest(NamedTuple):
    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tool: dict[str, Any] | None  # the chosen function definition, if answering with a tool
    structured: str | None  # JSON content that honours ``response_format``, if any


def _validate_max_tokens(body: dict[str, Any], name: str) -> int | web.Response | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_int(value):
        return bad_request(
            f"Invalid type for '{name}': expected an integer, but got {type_name(value)} instead.",
            name,
            "invalid_type",
        )
    if value < 1:
        return bad_request(
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
            f"{value} instead.",
            name,
            "integer_below_min_value",
        )
    return int(value)


def _choose_openai_tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """Pick the function to "call", or None to answer with text.

    ``tool_choice`` "none" -> text; a named function -> that one; "required" -> the first.
    With "auto" (the default) the first function is called, unless the conversation ends with
    a tool result: then the "model" answers in text, so demo agent loops terminate.
    """
    tools = body.get("tools")
    if not tools:
        return None
    choice = body.get("tool_choice")
    functions: list[dict[str, Any]] = [t["function"] for t in tools]
    if choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for fn in functions:
            if fn.get("name") == wanted:
                return fn
        return functions[0]
    if choice != "required":
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") in ("tool", "function"):
            return None
    return functions[0]


_RESPONSE_FORMATS = ("json_object", "json_schema", "text")


def _validate_response_format(value: Any) -> web.Response | None:
    """OpenAI's checks of ``response_format``: a known ``type``; a json_schema needs a name."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return bad_request(
            f"Invalid type for 'response_format': expected an object, but got "
            f"{type_name(value)} instead.",
            "response_format",
            "invalid_type",
        )
    kind = value.get("type")
    if kind not in _RESPONSE_FORMATS:
        return bad_request(
            f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and "
            "'text'.",
            "response_format.type",
            "invalid_value",
        )
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            return bad_request(
                "Missing required parameter: 'response_format.json_schema'.",
                "response_format.json_schema",
                "missing_required_parameter",
            )
        if not isinstance(spec.get("name"), str):
            return bad_request(
                "Missing required parameter: 'response_format.json_schema.name'.",
                "response_format.json_schema.name",
                "missing_required_parameter",
            )
    return None


def _validate_chat(body: JSON) -> _ChatRequest | web.Response:
    """Validate like OpenAI does (same messages, params and codes for the common mistakes)."""
    if not isinstance(body, dict):
        return bad_request(
            f"Invalid type for request body: expected an object, but got {type_name(body)} "
            "instead.",
            None,
            "invalid_type",
        )
    model = body.get("model")
    if model is None:
        return bad_request("you must provide a model parameter")
    if not isinstance(model, str):
        return bad_request(
            f"Invalid type for 'model': expected a string, but got {type_name(model)} instead.",
            "model",
            "invalid_type",
        )
    if "messages" not in body:
        return bad_request(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        return bad_request(
            f"Invalid type for 'messages': expected an array, but got {type_name(messages)} "
            "instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return bad_request(
                f"Invalid type for 'messages[{i}]': expected an object, but got "
                f"{type_name(message)} instead.",
                f"messages[{i}]",
                "invalid_type",
            )
        role = message.get("role")
        if role is None:
            return bad_request(
                f"Missing required parameter: 'messages[{i}].role'.",
                f"messages[{i}].role",
                "missing_required_parameter",
            )
        if role not in _OPENAI_ROLES:
            return bad_request(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return bad_request(
            f"Invalid type for 'stream': expected a boolean, but got {type_name(stream)} instead.",
            "stream",
            "invalid_type",
        )
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            return bad_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        if not isinstance(stream_options, dict):
            return bad_request(
                f"Invalid type for 'stream_options': expected an object, but got "
                f"{type_name(stream_options)} instead.",
                "stream_options",
                "invalid_type",
            )
        include_usage = stream_options.get("include_usage") is True
    caps: list[int] = []
    for name in ("max_tokens", "max_completion_tokens"):
        cap = _validate_max_tokens(body, name)
        if isinstance(cap, web.Response):
            return cap
        if cap is not None:
            caps.append(cap)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return bad_request(
                f"Invalid type for 'tools': expected an array, but got {type_name(tools)} instead.",
                "tools",
                "invalid_type",
            )
        if not tools:
            return bad_request(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but "
                "got an empty array instead.",
                "tools",
                "empty_array",
            )
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict):
                return bad_request(
                    f"Missing required parameter: 'tools[{i}].function'.",
                    f"tools[{i}].function",
                    "missing_required_parameter",
                )
            if not isinstance(fn.get("name"), str):
                return bad_request(
                    f"Missing required parameter: 'tools[{i}].function.name'.",
                    f"tools[{i}].function.name",
                    "missing_required_parameter",
                )
    elif body.get("tool_choice") not in (None, "none", "auto"):
        return bad_request(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    bad_format = _validate_response_format(body.get("response_format"))
    if bad_format is not None:
        return bad_format
    return _ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=min(caps) if caps else None,
        tool=_choose_openai_tool(body, messages),
        structured=structured_reply(body.get("response_format")),
    )


async def chat_completions(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    body = await read_body(request, state)
    if not bearer_token(request):
        return openai_missing_key()
    try:
        cfg = request_config(state.config, request.headers)
    except BadValue as exc:
        return bad_request(str(exc), None, "invalid_demo_header")
    if body is INVALID:
        return bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        )
    chat = _validate_chat(body)
    if isinstance(chat, web.Response):
        return chat
    refused = providers.refusal(body, cfg.provider)
    if refused is not None:
        return refused

    await sleep_ms(cfg.latency_ms)
    error = active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return drop(request)
        if error.isdigit():
            return openai_injected(int(error), cfg)

    prompt = (
        cfg.prompt_tokens
        if cfg.prompt_tokens is not None
        else estimate_prompt_tokens(chat.messages)
    )
    if cfg.prompt_cache_s and not cfg.cached_tokens:
        prefix = state.cached_prefix(cfg.prompt_cache_s, chat.model, chat.messages)
        if prefix:
            cfg = replace(cfg, cached_tokens=min(prompt, estimate_prompt_tokens(prefix)))
    completion, truncated = completion_budget(cfg, chat.max_tokens)
    usage = None if error == "no-usage" else openai_usage(cfg, chat.model, prompt, completion)
    completion_id = new_id("chatcmpl-")
    created = int(time.time())
    tool_call: dict[str, JSON] | None = None
    if chat.tool is not None:
        tool_call = {
            "id": new_id("call_"),
            "type": "function",
            "function": {
                "name": chat.tool["name"],
                "arguments": tool_arguments(chat.tool.get("parameters")),
            },
        }
        finish_reason = "tool_calls"
    else:
        finish_reason = "length" if truncated else "stop"

    if chat.stream:
        events = _openai_stream_events(
            completion_id,
            created,
            chat,
            cfg,
            completion,
            finish_reason,
            tool_call,
            usage,
            cut=error == "cut",
            usage_on_finish=providers.usage_on_last_chunk(cfg.provider),
        )
        return await send_stream(
            request,
            state,
            events,
            delay_ms=cfg.chunk_delay_ms,
            cut=error == "cut",
            headers=sse_headers("x-request-id"),
            linger_ms=cfg.linger_ms,
        )

    if tool_call is not None:
        message: dict[str, JSON] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [tool_call],
            "refusal": None,
            "annotations": [],
        }
    else:
        message = {
            "role": "assistant",
            "content": (
                chat.structured
                if chat.structured is not None
                else "".join(filler_pieces(completion))
            ),
            "refusal": None,
            "annotations": [],
        }
    payload: dict[str, JSON] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": chat.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        payload["usage"] = usage
    payload["service_tier"] = "default"
    payload["system_fingerprint"] = SYSTEM_FINGERPRINT
    if error == "cut":
        return await send_cut_body(request, orjson.dumps(payload), json_headers("x-request-id"))
    return web.Response(body=orjson.dumps(payload), headers=json_headers("x-request-id"))


def _openai_stream_events(
    completion_id: str,
    created: int,
    chat: _ChatRequest,
    cfg: DemoConfig,
    completion: int,
    finish_reason: str,
    tool_call: dict[str, JSON] | None,
    usage: dict[str, JSON] | None,
    *,
    cut: bool,
    usage_on_finish: bool = False,
) -> list[bytes]:
    """``chat.completion.chunk`` SSE frames in OpenAI's order (see module docstring); with
    ``usage_on_finish`` (Mistral's way) the usage rides on the chunk with the
    ``finish_reason``, asked for or not."""
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": chat.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    include_usage = chat.include_usage

    # Every chunk shares the same envelope: serialise it once and splice each delta in,
    # which is ~10x cheaper than dumping a fresh dict per token (this is a benchmark upstream).
    prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
    tail = b"}]" + (b',"usage":null' if include_usage else b"") + b"}\n\n"

    def frame(delta: dict[str, JSON], finish: str | None = None) -> bytes:
        return (
            prefix
            + orjson.dumps(delta)
            + b',"logprobs":null,"finish_reason":'
            + orjson.dumps(finish)
            + tail
        )

    if tool_call is not None:
        function = tool_call["function"]
        events = [
            frame(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": tool_call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ],
                    "refusal": None,
                }
            )
        ]
        body = [
            frame({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
            for fragment in argument_fragments(function["arguments"], cfg.chunks)
        ]
    elif chat.structured is not None:
        events = [frame({"role": "assistant", "content": "", "refusal": None})]
        body = [
            frame({"content": fragment})
            for fragment in argument_fragments(chat.structured, cfg.chunks)
        ]
    else:
        events = [frame({"role": "assistant", "content": "", "refusal": None})]
        pieces = list(filler_pieces(completion))
        body = [
            frame({"content": text})
            for text in split_evenly(pieces, cfg.chunks if cfg.chunks else len(pieces))
        ]
    if cut:
        return events + body[: max(1, len(body) // 2)]
    events += body
    last = frame({}, finish_reason)
    if usage_on_finish and usage is not None:
        last = last[: -len(tail)] + b'}],"usage":' + orjson.dumps(usage) + b"}\n\n"
    events.append(last)
    if include_usage and usage is not None:
        events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events
