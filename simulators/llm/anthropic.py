"""Anthropic's Messages API: ``POST /v1/messages`` (plain and SSE) and its ``count_tokens``.

Requests are validated as Anthropic validates them (``field: problem`` messages,
``invalid_request_error``). Usage is split as Anthropic splits it: ``input_tokens`` excludes
cache reads and writes. Tools are chosen by the same policy as on the OpenAI side. A system prompt
that asks for JSON (as the relay's translation of ``response_format`` does) gets JSON text
(see :func:`.text.instructed_reply`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import orjson
from aiohttp import web

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
from .errors import anthropic_error, anthropic_injected
from .text import (
    argument_fragments,
    estimate_prompt_tokens,
    filler_pieces,
    instructed_reply,
    split_evenly,
    tool_arguments,
)
from .usage import anthropic_usage
from .wire import INVALID, JSON, bearer_token, drop, is_int, json_response, new_id


class _MessagesRequest(NamedTuple):
    model: str
    messages: list[Any]
    system: Any
    max_tokens: int
    stream: bool
    tool: dict[str, Any] | None


def _anthropic_auth(request: web.Request) -> web.Response | None:
    if not (request.headers.get("x-api-key") or bearer_token(request)):
        return anthropic_error(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return anthropic_error(400, "anthropic-version: header is required")
    return None


def _choose_anthropic_tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """As :func:`.openai._choose_openai_tool`, with Anthropic's ``tool_choice`` shapes."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and "input_schema" in t]
    if not tools:
        return None
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if kind == "none":
        return None
    if kind == "tool":
        for tool in tools:
            if tool.get("name") == choice.get("name"):
                return tool
        return tools[0]
    if kind != "any":
        last = messages[-1]
        content = last.get("content") if isinstance(last, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            return None
    return tools[0]


def _validate_messages(body: JSON, *, count_only: bool = False) -> _MessagesRequest | web.Response:
    """Validate like Anthropic does (``field: problem`` messages, invalid_request_error)."""
    if not isinstance(body, dict):
        return anthropic_error(400, "Input should be an object")
    model = body.get("model")
    if model is None:
        return anthropic_error(400, "model: Field required")
    if not isinstance(model, str):
        return anthropic_error(400, "model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if not count_only:
        if max_tokens is None:
            return anthropic_error(400, "max_tokens: Field required")
        if not is_int(max_tokens):
            return anthropic_error(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            return anthropic_error(400, "max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if messages is None:
        return anthropic_error(400, "messages: Field required")
    if not isinstance(messages, list):
        return anthropic_error(400, "messages: Input should be a valid list")
    if not messages:
        return anthropic_error(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return anthropic_error(400, f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            return anthropic_error(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            return anthropic_error(400, f"messages.{i}.content: Field required")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return anthropic_error(400, "stream: Input should be a valid boolean")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return anthropic_error(400, "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return anthropic_error(400, f"tools.{i}.name: Field required")
    return _MessagesRequest(
        model=model,
        messages=messages,
        system=body.get("system"),
        max_tokens=max_tokens if isinstance(max_tokens, int) else 0,
        stream=bool(stream),
        tool=_choose_anthropic_tool(body, messages),
    )


def _reply_text(req: _MessagesRequest, output: int) -> str:
    instructed = instructed_reply(req.system)
    return instructed if instructed is not None else "".join(filler_pieces(output))


def _anthropic_event(name: bytes, payload: dict[str, JSON]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def messages(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/messages``."""
    body = await read_body(request, state)
    denied = _anthropic_auth(request)
    if denied is not None:
        return denied
    try:
        cfg = request_config(state.config, request.headers)
    except BadValue as exc:
        return anthropic_error(400, str(exc))
    if body is INVALID:
        return anthropic_error(400, "There was an error parsing the body of your request.")
    req = _validate_messages(body)
    if isinstance(req, web.Response):
        return req

    await sleep_ms(cfg.latency_ms)
    error = active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return drop(request)
        if error.isdigit():
            return anthropic_injected(int(error), cfg)

    prompt = (
        cfg.prompt_tokens
        if cfg.prompt_tokens is not None
        else estimate_prompt_tokens(req.messages, req.system)
    )
    if cfg.prompt_cache_s and not cfg.cached_tokens:
        prefix = state.cached_prefix(cfg.prompt_cache_s, req.model, req.messages, req.system)
        if prefix:
            cached = estimate_prompt_tokens(prefix, req.system)
            cfg = replace(cfg, cached_tokens=min(prompt, cached))
    output, truncated = completion_budget(cfg, req.max_tokens)
    message_id = new_id("msg_")
    usage = None if error == "no-usage" else anthropic_usage(cfg, prompt, output)
    tool_block: dict[str, JSON] | None = None
    if req.tool is not None:
        tool_block = {
            "type": "tool_use",
            "id": new_id("toolu_"),
            "name": req.tool["name"],
            "input": orjson.loads(tool_arguments(req.tool.get("input_schema"))),
        }
        stop_reason = "tool_use"
    else:
        stop_reason = "max_tokens" if truncated else "end_turn"

    if req.stream:
        events = _anthropic_stream_events(
            message_id, req, cfg, output, stop_reason, tool_block, usage, cut=error == "cut"
        )
        return await send_stream(
            request,
            state,
            events,
            delay_ms=cfg.chunk_delay_ms,
            cut=error == "cut",
            headers=sse_headers("request-id"),
            linger_ms=cfg.linger_ms,
        )

    content = (
        [tool_block]
        if tool_block is not None
        else [{"type": "text", "text": _reply_text(req, output)}]
    )
    payload: dict[str, JSON] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    if usage is not None:
        payload["usage"] = usage
    if error == "cut":
        return await send_cut_body(request, orjson.dumps(payload), json_headers("request-id"))
    return web.Response(body=orjson.dumps(payload), headers=json_headers("request-id"))


def _anthropic_stream_events(
    message_id: str,
    req: _MessagesRequest,
    cfg: DemoConfig,
    output: int,
    stop_reason: str,
    tool_block: dict[str, JSON] | None,
    usage: dict[str, JSON] | None,
    *,
    cut: bool,
) -> list[bytes]:
    """Anthropic's event sequence: message_start, content_block_start, ping, deltas, ...

    As in the real API, ``message_start`` reports the input usage with ``output_tokens`` of
    at most 1 and ``message_delta`` carries the final cumulative ``output_tokens``.
    With ``no-usage`` both usage objects are omitted.
    """
    start_message: dict[str, JSON] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if usage is not None:
        start_message["usage"] = {**usage, "output_tokens": min(1, output)}
    events = [
        _anthropic_event(b"message_start", {"type": "message_start", "message": start_message})
    ]
    if tool_block is not None:
        block: dict[str, JSON] = {**tool_block, "input": {}}
        arguments = orjson.dumps(tool_block["input"]).decode()
        fragments = ["", *argument_fragments(arguments, cfg.chunks)]
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    else:
        block = {"type": "text", "text": ""}
        instructed = instructed_reply(req.system)
        if instructed is not None:
            texts = argument_fragments(instructed, cfg.chunks)
        else:
            pieces = list(filler_pieces(output))
            texts = split_evenly(pieces, cfg.chunks if cfg.chunks else len(pieces))
        deltas = [{"type": "text_delta", "text": text} for text in texts]
    events.append(
        _anthropic_event(
            b"content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
    )
    events.append(_anthropic_event(b"ping", {"type": "ping"}))
    delta_events = [
        _anthropic_event(
            b"content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
        for delta in deltas
    ]
    if cut:
        return events + delta_events[: max(1, len(delta_events) // 2)]
    events += delta_events
    events.append(
        _anthropic_event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
    )
    message_delta: dict[str, JSON] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if usage is not None:
        message_delta["usage"] = {"output_tokens": usage["output_tokens"]}
    events.append(_anthropic_event(b"message_delta", message_delta))
    events.append(_anthropic_event(b"message_stop", {"type": "message_stop"}))
    return events


async def count_tokens(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens`` with the same estimate as ``/v1/messages``
    (``x-demo-latency-ms`` and an injected status or ``disconnect`` apply)."""
    body = await read_body(request, state)
    denied = _anthropic_auth(request)
    if denied is not None:
        return denied
    try:
        cfg = request_config(state.config, request.headers)
    except BadValue as exc:
        return anthropic_error(400, str(exc))
    if body is INVALID:
        return anthropic_error(400, "There was an error parsing the body of your request.")
    req = _validate_messages(body, count_only=True)
    if isinstance(req, web.Response):
        return req
    await sleep_ms(cfg.latency_ms)
    error = active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return drop(request)
        if error.isdigit():
            return anthropic_injected(int(error), cfg)
    prompt = (
        cfg.prompt_tokens
        if cfg.prompt_tokens is not None
        else estimate_prompt_tokens(req.messages, req.system)
    )
    return json_response(200, {"input_tokens": prompt})
