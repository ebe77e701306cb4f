"""Text completions: Mistral's fill-in-the-middle ``POST /v1/fim/completions`` (Codestral) and
OpenAI's legacy ``POST /v1/completions``.

* FIM takes ``model``, ``prompt``, ``suffix``, ``max_tokens``, ``min_tokens``,
  ``temperature``, ``top_p``, ``stream``, ``stop`` and ``random_seed``; as Mistral's strict
  schema does, any other field is refused with a 422 ``extra_forbidden`` body. The answer is
  shaped as a chat completion (``object: "chat.completion"``, ``choices[].message.content``),
  a stream as ``chat.completion.chunk`` events with the usage on the chunk that carries the
  ``finish_reason``, then ``data: [DONE]``.
* Legacy completions answer ``object: "text_completion"`` with ``choices[].text``; a stream is
  ``text_completion`` chunks, with ``stream_options.include_usage`` a last chunk with empty
  ``choices`` and the usage, then ``data: [DONE]``.

Prompt tokens: ``ceil((len(prompt) + len(suffix)) / 4)`` unless ``x-demo-prompt-tokens`` says;
completion tokens as for chat (``x-demo-completion-tokens``, capped by ``max_tokens``).
``x-demo-error`` works as on chat: an injected status, ``disconnect``, ``cut`` (half the stream,
or half the body, then the connection dropped) and ``no-usage``.
"""

from __future__ import annotations

import math
import time
from typing import Any

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
from .errors import bad_request, openai_injected, openai_missing_key
from .text import filler_pieces, split_evenly
from .wire import INVALID, JSON, bearer_token, drop, is_int, json_response, new_id, type_name

FIM_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "min_tokens",
        "temperature",
        "top_p",
        "stream",
        "stop",
        "random_seed",
    }
)


def _mistral_invalid(problems: list[dict[str, Any]]) -> web.Response:
    """Mistral's 422 body for a request its schema refuses."""
    return json_response(
        422,
        {
            "object": "error",
            "message": {"detail": problems},
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
    )


def _prompt_tokens(cfg: DemoConfig, prompt: str, suffix: str) -> int:
    if cfg.prompt_tokens is not None:
        return cfg.prompt_tokens
    return math.ceil((len(prompt) + len(suffix)) / 4)


def _usage(prompt: int, completion: int) -> dict[str, JSON]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def _steer(request: web.Request, state: DemoState) -> tuple[Any, DemoConfig] | web.Response:
    """The body and the request's configuration, or the answer that ends the request here."""
    body = await read_body(request, state)
    if not bearer_token(request):
        return openai_missing_key()
    try:
        cfg = request_config(state.config, request.headers)
    except BadValue as exc:
        return bad_request(str(exc), None, "invalid_demo_header")
    if body is INVALID or not isinstance(body, dict):
        return bad_request("We could not parse the JSON body of your request.")
    return body, cfg


def _cap(body: dict[str, Any]) -> int | web.Response | None:
    cap = body.get("max_tokens")
    if cap is None:
        return None
    if not is_int(cap) or cap < 0:
        return bad_request(
            f"Invalid 'max_tokens': expected a non-negative integer, got {type_name(cap)}.",
            "max_tokens",
        )
    return int(cap)


async def fim_completions(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/fim/completions`` (Mistral)."""
    steered = await _steer(request, state)
    if isinstance(steered, web.Response):
        return steered
    body, cfg = steered
    problems: list[dict[str, Any]] = [
        {
            "type": "extra_forbidden",
            "loc": ["body", name],
            "msg": "Extra inputs are not permitted",
            "input": body[name],
        }
        for name in body
        if name not in FIM_FIELDS
    ]
    for name in ("model", "prompt"):
        if not isinstance(body.get(name), str):
            problems.append(
                {"type": "string_type", "loc": ["body", name], "msg": "Input should be a string"}
            )
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        problems.append(
            {"type": "string_type", "loc": ["body", "suffix"], "msg": "Input should be a string"}
        )
    if problems:
        return _mistral_invalid(problems)
    cap = _cap(body)
    if isinstance(cap, web.Response):
        return cap

    await sleep_ms(cfg.latency_ms)
    error = active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return drop(request)
        if error.isdigit():
            return openai_injected(int(error), cfg)
    prompt = _prompt_tokens(cfg, body["prompt"], suffix or "")
    completion, truncated = completion_budget(cfg, cap)
    usage = None if error == "no-usage" else _usage(prompt, completion)
    finish_reason = "length" if truncated else "stop"
    completion_id = new_id("cmpl-")
    created = int(time.time())
    model = body["model"]
    pieces = list(filler_pieces(completion))
    if body.get("stream"):
        head = {"id": completion_id, "object": "chat.completion.chunk", "created": created}

        def frame(delta: dict[str, JSON], finish: str | None = None, **extra: JSON) -> bytes:
            chunk = {
                **head,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        events = [frame({"role": "assistant", "content": ""})]
        body_events = [
            frame({"content": text})
            for text in split_evenly(pieces, cfg.chunks if cfg.chunks else len(pieces))
        ]
        cut = error == "cut"
        if cut:
            events += body_events[: max(1, len(body_events) // 2)]
        else:
            events += body_events
            last: dict[str, JSON] = {"usage": usage} if usage is not None else {}
            events.append(frame({"content": ""}, finish_reason, **last))
            events.append(b"data: [DONE]\n\n")
        return await send_stream(
            request,
            state,
            events,
            delay_ms=cfg.chunk_delay_ms,
            cut=cut,
            headers=sse_headers("x-request-id"),
            linger_ms=cfg.linger_ms,
        )
    payload: dict[str, JSON] = {
        "id": completion_id,
        "object": "chat.completion",
        "model": model,
        "created": created,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(pieces),
                    "tool_calls": None,
                    "prefix": False,
                },
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        payload["usage"] = usage
    if error == "cut":
        return await send_cut_body(request, orjson.dumps(payload), json_headers("x-request-id"))
    return web.Response(body=orjson.dumps(payload), headers=json_headers("x-request-id"))


async def completions(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/completions`` (OpenAI's legacy text completions)."""
    steered = await _steer(request, state)
    if isinstance(steered, web.Response):
        return steered
    body, cfg = steered
    model = body.get("model")
    if not isinstance(model, str):
        return bad_request("you must provide a model parameter")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        return bad_request("'prompt' must be a string here.", "prompt")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        return bad_request("'suffix' must be a string.", "suffix")
    cap = _cap(body)
    if isinstance(cap, web.Response):
        return cap
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    await sleep_ms(cfg.latency_ms)
    error = active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return drop(request)
        if error.isdigit():
            return openai_injected(int(error), cfg)
    completion, truncated = completion_budget(cfg, 16 if cap is None else cap)
    usage = (
        None
        if error == "no-usage"
        else _usage(_prompt_tokens(cfg, prompt, suffix or ""), completion)
    )
    finish_reason = "length" if truncated else "stop"
    head = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    pieces = list(filler_pieces(completion))
    if body.get("stream"):

        def frame(text: str, finish: str | None = None) -> bytes:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        events = [
            frame(text) for text in split_evenly(pieces, cfg.chunks if cfg.chunks else len(pieces))
        ]
        cut = error == "cut"
        if cut:
            events = events[: max(1, len(events) // 2)]
        else:
            events.append(frame("", finish_reason))
            if include_usage and usage is not None:
                usage_chunk = {**head, "choices": [], "usage": usage}
                events.append(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
            events.append(b"data: [DONE]\n\n")
        return await send_stream(
            request,
            state,
            events,
            delay_ms=cfg.chunk_delay_ms,
            cut=cut,
            headers=sse_headers("x-request-id"),
            linger_ms=cfg.linger_ms,
        )
    payload: dict[str, JSON] = {
        **head,
        "choices": [
            {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        payload["usage"] = usage
    if error == "cut":
        return await send_cut_body(request, orjson.dumps(payload), json_headers("x-request-id"))
    return web.Response(body=orjson.dumps(payload), headers=json_headers("x-request-id"))
