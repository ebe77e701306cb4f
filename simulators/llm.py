"""Demo upstream: a local, deterministic simulator of LLM provider HTTP APIs.

There is no internet in the demo, CI or benchmark environments, so the relay talks to this
process instead of OpenAI / Anthropic.  It speaks their wire formats byte-for-byte closely
enough for the official ``openai`` and ``anthropic`` SDKs (and therefore the relay's parsers)
to accept it:

* OpenAI: ``POST /v1/chat/completions`` (plain, SSE streaming, tool calls),
  ``POST /v1/embeddings`` (float and base64), ``GET /v1/models`` and ``GET /v1/models/{id}``.
* Anthropic: ``POST /v1/messages`` (plain, SSE streaming, ``tool_use``),
  ``POST /v1/messages/count_tokens``; ``GET /v1/models`` answers in Anthropic's list format
  when the request carries an ``anthropic-version`` header.
* Test hooks: ``GET|DELETE /_demo/requests``, ``GET /_demo/requests/last``,
  ``GET|DELETE /_demo/stats``, ``GET /_demo/health``.

Behaviour is steered by configuration (``make_app`` keywords, CLI flags or ``DEMO_UPSTREAM_*``
environment variables) and, per request, by ``x-demo-*`` request headers so one test can shape
one request without restarting the server (see :data:`HEADER_FIELDS`, :class:`DemoConfig`):

====================================  =========================================================
``x-demo-latency-ms``                 delay before the first byte (valid, authenticated calls)
``x-demo-chunk-delay-ms``             delay between SSE events
``x-demo-linger-ms``                  keep a stream open this long after its last event
``x-demo-completion-tokens``          tokens to produce (default 16; capped by max_tokens)
``x-demo-prompt-tokens``              override the prompt-token estimate
``x-demo-cached-tokens``              cached prompt tokens to report
``x-demo-cache-creation-tokens``      Anthropic ``cache_creation_input_tokens``
``x-demo-chunks``                     content deltas per stream (default: one per token)
``x-demo-error``                      ``429``/``500``/... error body in the endpoint's shape,
                                      ``disconnect``, ``cut``, ``no-usage``, or ``none``
``x-demo-error-rate``                 probability (0-1) that ``x-demo-error`` applies
``x-demo-retry-after``                ``Retry-After`` seconds sent with 429 (default 1)
====================================  =========================================================

It is also the upstream for latency benchmarks, so the hot path avoids anything heavy: orjson,
no per-request logging, cached filler text / embeddings, and a single socket write for a whole
stream when no inter-chunk delay is requested.

Run it with ``python -m simulators.llm --host 127.0.0.1 --port 8002``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import itertools
import math
import os
import random
import secrets
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import orjson
from aiohttp import web
from aiohttp.log import access_logger

__all__ = [
    "DEFAULT_MODELS",
    "HEADER_FIELDS",
    "DemoConfig",
    "RunningServer",
    "config_from_env",
    "estimate_prompt_tokens",
    "main",
    "make_app",
    "start_in_thread",
]

JSON = Any

FILLER_TEXT = "This is a demo response from the TokenPapa demo upstream."
SYSTEM_FINGERPRINT = "fp_tokenpapa_demo"
DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-5-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "demo-chat",
    "demo-embed",
)
DEFAULT_EMBEDDING_DIMENSIONS = 1024
MAX_EMBEDDING_DIMENSIONS = 16384
ENV_PREFIX = "DEMO_UPSTREAM_"
CLIENT_MAX_SIZE = 64 * 1024 * 1024  # LLM requests with inline images can be large.

_ERROR_WORDS = frozenset({"disconnect", "cut", "no-usage"})


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Server-wide defaults; every field but ``record_limit``/``models`` is per-request too.

    ``error`` is one of ``None``, an HTTP status string (``"429"``, ``"500"``, ...),
    ``"disconnect"``, ``"cut"`` or ``"no-usage"``; ``error_rate`` is the probability (0..1)
    that a request gets that error, so a "flaky upstream" demo can fail only some requests.
    """

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    linger_ms: float = 0.0
    completion_tokens: int = 16
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    error: str | None = None
    error_rate: float = 1.0
    chunks: int | None = None
    retry_after: int = 1
    record_limit: int = 200
    models: tuple[str, ...] = DEFAULT_MODELS


class _BadValue(ValueError):
    """A configuration value (header, env var or flag) that cannot be parsed."""


def _parse_ms(value: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        raise _BadValue(f"expected a number of milliseconds, got {value!r}") from None
    if not math.isfinite(ms) or ms < 0:
        raise _BadValue(f"expected a non-negative number of milliseconds, got {value!r}")
    return ms


def _parse_count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise _BadValue(f"expected a non-negative integer, got {value!r}") from None
    if n < 0:
        raise _BadValue(f"expected a non-negative integer, got {value!r}")
    return n


def _parse_positive(value: str) -> int:
    n = _parse_count(value)
    if n < 1:
        raise _BadValue(f"expected a positive integer, got {value!r}")
    return n


def _parse_rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise _BadValue(f"expected a probability between 0 and 1, got {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise _BadValue(f"expected a probability between 0 and 1, got {value!r}")
    return rate


def _parse_error(value: str) -> str | None:
    """Normalise an error spec; ``""``/``"none"`` clears a server-wide error for one request."""
    spec = value.strip().lower()
    if spec in ("", "none", "0"):
        return None
    if spec in _ERROR_WORDS:
        return spec
    if spec.isdigit() and 400 <= int(spec) <= 599:
        return spec
    raise _BadValue(
        f"expected an HTTP status 400-599, 'disconnect', 'cut', 'no-usage' or 'none', got {value!r}"
    )


def _parse_models(value: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in value.split(",") if m.strip())
    if not models:
        raise _BadValue("expected a comma-separated list of model ids")
    return models


#: Per-request steering headers -> (DemoConfig field, parser).
HEADER_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "x-demo-latency-ms": ("latency_ms", _parse_ms),
    "x-demo-chunk-delay-ms": ("chunk_delay_ms", _parse_ms),
    "x-demo-linger-ms": ("linger_ms", _parse_ms),
    "x-demo-completion-tokens": ("completion_tokens", _parse_count),
    "x-demo-prompt-tokens": ("prompt_tokens", _parse_count),
    "x-demo-cached-tokens": ("cached_tokens", _parse_count),
    "x-demo-cache-creation-tokens": ("cache_creation_tokens", _parse_count),
    "x-demo-error": ("error", _parse_error),
    "x-demo-error-rate": ("error_rate", _parse_rate),
    "x-demo-chunks": ("chunks", _parse_positive),
    "x-demo-retry-after": ("retry_after", _parse_count),
}

_FIELD_PARSERS: dict[str, Callable[[str], Any]] = {
    **{name: parser for name, parser in HEADER_FIELDS.values()},
    "record_limit": _parse_count,
    "models": _parse_models,
}


def config_from_env(
    environ: Mapping[str, str] | None = None, base: DemoConfig | None = None
) -> DemoConfig:
    """Build a config from ``DEMO_UPSTREAM_<FIELD>`` variables, e.g. ``DEMO_UPSTREAM_LATENCY_MS``.

    ``DEMO_UPSTREAM_MODELS`` is comma-separated. Raises ``ValueError`` on unparsable values
    so a typo in ``.env`` fails loudly at start-up instead of silently using a default.
    """
    env = os.environ if environ is None else environ
    overrides: dict[str, Any] = {}
    for name, parser in _FIELD_PARSERS.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        try:
            overrides[name] = parser(raw)
        except _BadValue as exc:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None
    return replace(base or DemoConfig(), **overrides)


def _request_config(base: DemoConfig, headers: Mapping[str, str]) -> DemoConfig:
    """Apply ``x-demo-*`` header overrides; raises ``_BadValue`` naming the header."""
    overrides: dict[str, Any] | None = None
    for header, (name, parser) in HEADER_FIELDS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = parser(raw)
        except _BadValue as exc:
            raise _BadValue(f"invalid {header} header: {exc}") from None
        if overrides is None:
            overrides = {}
        overrides[name] = value
    return base if overrides is None else replace(base, **overrides)


# --------------------------------------------------------------------------------------------
# State shared by the handlers of one app
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class DemoState:
    """Counters and the bounded request log exposed under ``/_demo``."""

    config: DemoConfig
    recent: deque[dict[str, JSON]]
    started_at: float = field(default_factory=time.time)
    seq: int = 0
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    in_flight: int = 0
    errors_injected: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def record(self, request: web.Request, body: JSON, raw: bytes) -> None:
        if not self.recent.maxlen:
            return
        if body is _INVALID:
            body_value: JSON = raw.decode("utf-8", "replace")
            is_json = False
        else:
            body_value, is_json = body, True
        self.recent.append(
            {
                "seq": self.seq,
                "time": time.time(),
                "method": request.method,
                "path": request.path,
                "query_string": request.query_string,
                "headers": {str(k): v for k, v in request.headers.items()},
                "body": body_value,
                "body_is_json": is_json,
            }
        )

    def stats(self) -> dict[str, JSON]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "in_flight": self.in_flight,
            "errors_injected": self.errors_injected,
            "by_path": dict(self.by_path),
            "recorded": len(self.recent),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    def reset_stats(self) -> None:
        self.requests = self.completed = self.cancelled = self.errors_injected = 0
        self.by_path.clear()


STATE_KEY = web.AppKey("demo_state", DemoState)
# Set on a request when this simulator closed the socket on purpose (not a client cancel).
_DROPPED = web.RequestKey("demo_dropped", bool)


class _Invalid:
    """Sentinel type for an unparsable JSON body."""


_INVALID = _Invalid()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

_RUN_TAG = secrets.token_hex(4)  # distinguishes ids across restarts
_COUNTER = itertools.count(1)


def _new_id(prefix: str) -> str:
    """Unique-enough ids without per-request ``uuid4``/urandom calls."""
    return f"{prefix}demo{_RUN_TAG}{next(_COUNTER):012d}"


def _load_json(raw: bytes) -> JSON:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _INVALID


def _json_response(
    status: int, payload: JSON, headers: dict[str, str] | None = None
) -> web.Response:
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return web.Response(status=status, body=orjson.dumps(payload), headers=hdrs)


def _close_transport(request: web.Request) -> None:
    """Drop the TCP connection on purpose; queued bytes are flushed first (FIN, not RST)."""
    request[_DROPPED] = True
    transport = request.transport
    if transport is not None:
        transport.close()


def _drop(request: web.Request) -> web.StreamResponse:
    """Answer nothing: aiohttp's attempt to send the returned response fails quietly."""
    _close_transport(request)
    return web.StreamResponse(status=204)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    """The JSON type name OpenAI uses in ``invalid_type`` errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _bearer_token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def _split_evenly(items: list[str], parts: int) -> list[str]:
    """Join ``items`` into ``parts`` contiguous, nearly equal groups (``parts`` <= len)."""
    n = len(items)
    if n == 0:
        return []
    parts = max(1, min(parts, n))
    if parts == n:
        return items
    return ["".join(items[k * n // parts : (k + 1) * n // parts]) for k in range(parts)]


# --------------------------------------------------------------------------------------------
# Deterministic content
# --------------------------------------------------------------------------------------------

_FILLER_WORDS = FILLER_TEXT.split()


@functools.lru_cache(maxsize=1024)
def _filler_pieces(tokens: int) -> tuple[str, ...]:
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


def _tool_arguments(schema: Any) -> str:
    value = _example_value(schema) if isinstance(schema, dict) else {}
    if not isinstance(value, dict):
        value = {}
    return orjson.dumps(value).decode()


def _argument_fragments(arguments: str, chunks: int | None) -> list[str]:
    """Split tool-call arguments like a model streams them: ~4 characters per delta."""
    chars = list(arguments)
    parts = chunks if chunks is not None else -(-len(chars) // 4)
    return _split_evenly(chars, parts)


@functools.lru_cache(maxsize=4096)
def _embedding_vector(key: bytes, dimensions: int) -> array[float]:
    """Unit-length float32 vector derived from a hash of the input (stable across runs)."""
    raw = array("h")
    raw.frombytes(hashlib.shake_256(key).digest(2 * dimensions))
    if sys.byteorder == "big":
        raw.byteswap()
    values = [v / 32768.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values])


@functools.lru_cache(maxsize=4096)
def _embedding_base64(key: bytes, dimensions: int) -> str:
    """Base64 of little-endian float32, exactly what OpenAI sends for ``encoding_format``."""
    vector = _embedding_vector(key, dimensions)
    if sys.byteorder == "big":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Error bodies
# --------------------------------------------------------------------------------------------

_OPENAI_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request (injected by the demo upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided (injected by the demo upstream).",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests (injected by the demo upstream). Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}

_ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    hdrs = {"x-request-id": _new_id("req_")}
    if headers:
        hdrs.update(headers)
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _json_response(status, payload, hdrs)


def _anthropic_error(
    status: int, message: str, type_: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    request_id = _new_id("req_")
    hdrs = {"request-id": request_id}
    if headers:
        hdrs.update(headers)
    error_type = type_ or _ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    payload = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
    return _json_response(status, payload, hdrs)


def _retry_headers(status: int, cfg: DemoConfig) -> dict[str, str] | None:
    return {"Retry-After": str(cfg.retry_after)} if status == 429 else None


def _openai_injected(status: int, cfg: DemoConfig) -> web.Response:
    message, type_, code = _OPENAI_STATUS_ERRORS.get(
        status,
        (
            f"Injected HTTP {status} from the demo upstream.",
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        ),
    )
    return _openai_error(
        status, message, type_=type_, code=code, headers=_retry_headers(status, cfg)
    )


def _anthropic_injected(status: int, cfg: DemoConfig) -> web.Response:
    return _anthropic_error(
        status,
        f"Injected HTTP {status} from the demo upstream.",
        headers=_retry_headers(status, cfg),
    )


def _active_error(state: DemoState, cfg: DemoConfig) -> str | None:
    error = cfg.error
    if error is None:
        return None
    if cfg.error_rate < 1.0 and random.random() >= cfg.error_rate:
        return None
    state.errors_injected += 1
    return error


async def _sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


# --------------------------------------------------------------------------------------------
# Response writers
# --------------------------------------------------------------------------------------------


async def _send_stream(
    request: web.Request,
    state: DemoState,
    events: list[bytes],
    *,
    delay_ms: float,
    cut: bool,
    headers: dict[str, str],
    linger_ms: float = 0.0,
) -> web.StreamResponse:
    """Send SSE ``events``; with ``cut`` drop the socket after them (no terminating chunk).

    Without an inter-chunk delay the whole stream goes out in one write: the client still
    parses it event by event, and a benchmark upstream should not spend a syscall per token.
    """
    response = web.StreamResponse(status=200, headers=headers)
    try:
        await response.prepare(request)
        if delay_ms <= 0:
            await response.write(b"".join(events))
        else:
            delay = delay_ms / 1000.0
            for i, event in enumerate(events):
                if i:
                    await asyncio.sleep(delay)
                await response.write(event)
        if cut:
            _close_transport(request)
            return response
        await _sleep_ms(linger_ms)  # a provider that ends the body a while after [DONE]
        await response.write_eof()
    except ConnectionResetError:
        # The client went away mid-stream (handler cancellation disabled by the embedder).
        state.cancelled += 1
        request[_DROPPED] = True
    return response


async def _send_cut_body(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Announce the full Content-Length, send half of the body, then drop the connection."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_length = len(body)
    try:
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
    except ConnectionResetError:
        pass
    _close_transport(request)
    return response


def _sse_headers(request_id_header: str) -> dict[str, str]:
    return {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        request_id_header: _new_id("req_"),
    }


def _json_headers(request_id_header: str) -> dict[str, str]:
    return {"Content-Type": "application/json", request_id_header: _new_id("req_")}


# --------------------------------------------------------------------------------------------
# Endpoint plumbing
# --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request, DemoState], Awaitable[web.StreamResponse]]


def _api_endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Count requests and client cancellations around an API handler.

    The server runs with aiohttp's ``handler_cancellation`` on, so a client that disconnects
    (mid-latency or mid-stream) cancels the handler: that is what ``cancelled`` counts, except
    for connections this simulator dropped itself on purpose (``disconnect``/``cut``).
    """

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        state.requests += 1
        state.in_flight += 1
        path = request.path
        state.by_path[path] = state.by_path.get(path, 0) + 1
        try:
            response = await handler(request, state)
        except asyncio.CancelledError:
            if not request.get(_DROPPED):
                state.cancelled += 1
            raise
        finally:
            state.in_flight -= 1
        if not request.get(_DROPPED):
            state.completed += 1
        return response

    return wrapper


async def _read_body(request: web.Request, state: DemoState) -> JSON:
    raw = await request.read()
    body = _load_json(raw)
    state.record(request, body, raw)
    return body


# --------------------------------------------------------------------------------------------
# OpenAI: chat completions
# --------------------------------------------------------------------------------------------

_OPENAI_ROLES = ("system", "user", "assistant", "tool", "function", "developer")


class _ChatRequest(NamedTuple):
    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tool: dict[str, Any] | None  # the chosen function definition, if answering with a tool


def _bad(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return _openai_error(400, message, param=param, code=code)


def _validate_max_tokens(body: dict[str, Any], name: str) -> int | web.Response | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        return _bad(
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            name,
            "invalid_type",
        )
    if value < 1:
        return _bad(
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


def _validate_chat(body: JSON) -> _ChatRequest | web.Response:
    """Validate like OpenAI does (same messages, params and codes for the common mistakes)."""
    if not isinstance(body, dict):
        return _bad(
            f"Invalid type for request body: expected an object, but got {_type_name(body)} "
            "instead.",
            None,
            "invalid_type",
        )
    model = body.get("model")
    if model is None:
        return _bad("you must provide a model parameter")
    if not isinstance(model, str):
        return _bad(
            f"Invalid type for 'model': expected a string, but got {_type_name(model)} instead.",
            "model",
            "invalid_type",
        )
    if "messages" not in body:
        return _bad(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        return _bad(
            f"Invalid type for 'messages': expected an array, but got {_type_name(messages)} "
            "instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return _bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return _bad(
                f"Invalid type for 'messages[{i}]': expected an object, but got "
                f"{_type_name(message)} instead.",
                f"messages[{i}]",
                "invalid_type",
            )
        role = message.get("role")
        if role is None:
            return _bad(
                f"Missing required parameter: 'messages[{i}].role'.",
                f"messages[{i}].role",
                "missing_required_parameter",
            )
        if role not in _OPENAI_ROLES:
            return _bad(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _bad(
            f"Invalid type for 'stream': expected a boolean, but got {_type_name(stream)} instead.",
            "stream",
            "invalid_type",
        )
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            return _bad(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        if not isinstance(stream_options, dict):
            return _bad(
                f"Invalid type for 'stream_options': expected an object, but got "
                f"{_type_name(stream_options)} instead.",
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
            return _bad(
                f"Invalid type for 'tools': expected an array, but got {_type_name(tools)} "
                "instead.",
                "tools",
                "invalid_type",
            )
        if not tools:
            return _bad(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but "
                "got an empty array instead.",
                "tools",
                "empty_array",
            )
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict):
                return _bad(
                    f"Missing required parameter: 'tools[{i}].function'.",
                    f"tools[{i}].function",
                    "missing_required_parameter",
                )
            if not isinstance(fn.get("name"), str):
                return _bad(
                    f"Missing required parameter: 'tools[{i}].function.name'.",
                    f"tools[{i}].function.name",
                    "missing_required_parameter",
                )
    elif body.get("tool_choice") not in (None, "none", "auto"):
        return _bad(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    return _ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=min(caps) if caps else None,
        tool=_choose_openai_tool(body, messages),
    )


def _openai_usage(prompt: int, completion: int, cached: int) -> dict[str, JSON]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion_budget(cfg: DemoConfig, cap: int | None) -> tuple[int, bool]:
    """(tokens to produce, whether the cap truncated them)."""
    wanted = cfg.completion_tokens
    if cap is not None and cap < wanted:
        return cap, True
    return wanted, False


async def chat_completions(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    body = await _read_body(request, state)
    if not _bearer_token(request):
        return _openai_error(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    try:
        cfg = _request_config(state.config, request.headers)
    except _BadValue as exc:
        return _bad(str(exc), None, "invalid_demo_header")
    if body is _INVALID:
        return _bad(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        )
    chat = _validate_chat(body)
    if isinstance(chat, web.Response):
        return chat

    await _sleep_ms(cfg.latency_ms)
    error = _active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return _drop(request)
        if error.isdigit():
            return _openai_injected(int(error), cfg)

    prompt = (
        cfg.prompt_tokens
        if cfg.prompt_tokens is not None
        else estimate_prompt_tokens(chat.messages)
    )
    completion, truncated = _completion_budget(cfg, chat.max_tokens)
    usage = None if error == "no-usage" else _openai_usage(prompt, completion, cfg.cached_tokens)
    completion_id = _new_id("chatcmpl-")
    created = int(time.time())
    tool_call: dict[str, JSON] | None = None
    if chat.tool is not None:
        tool_call = {
            "id": _new_id("call_"),
            "type": "function",
            "function": {
                "name": chat.tool["name"],
                "arguments": _tool_arguments(chat.tool.get("parameters")),
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
        )
        return await _send_stream(
            request,
            state,
            events,
            delay_ms=cfg.chunk_delay_ms,
            cut=error == "cut",
            headers=_sse_headers("x-request-id"),
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
            "content": "".join(_filler_pieces(completion)),
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
        return await _send_cut_body(request, orjson.dumps(payload), _json_headers("x-request-id"))
    return web.Response(body=orjson.dumps(payload), headers=_json_headers("x-request-id"))


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
) -> list[bytes]:
    """``chat.completion.chunk`` SSE frames in OpenAI's order (see module docstring)."""
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
            for fragment in _argument_fragments(function["arguments"], cfg.chunks)
        ]
    else:
        events = [frame({"role": "assistant", "content": "", "refusal": None})]
        pieces = list(_filler_pieces(completion))
        body = [
            frame({"content": text})
            for text in _split_evenly(pieces, cfg.chunks if cfg.chunks else len(pieces))
        ]
    if cut:
        return events + body[: max(1, len(body) // 2)]
    events += body
    events.append(frame({}, finish_reason))
    if include_usage and usage is not None:
        events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


# --------------------------------------------------------------------------------------------
# OpenAI: embeddings and models
# --------------------------------------------------------------------------------------------


_EMBEDDING_INPUT_INVALID = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def _embedding_inputs(value: JSON) -> list[tuple[bytes, int]] | str:
    """Normalise ``input`` to (hash key, token estimate) pairs, or an error message."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(_is_int(v) for v in value):
        items = [value]  # a single token array
    elif isinstance(value, list):
        items = value
    else:
        return _EMBEDDING_INPUT_INVALID
    if not items:
        return "'$.input' is invalid: expected a non-empty string or array."
    out: list[tuple[bytes, int]] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                return "'$.input' is invalid: input strings must not be empty."
            out.append((item.encode(), -(-len(item) // 4)))
        elif isinstance(item, list) and item and all(_is_int(v) for v in item):
            out.append((b"\x00tokens:" + orjson.dumps(item), len(item)))
        else:
            return _EMBEDDING_INPUT_INVALID
    return out


async def embeddings(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/embeddings``: deterministic unit vectors from a hash of each input."""
    body = await _read_body(request, state)
    if not _bearer_token(request):
        return _openai_error(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    try:
        cfg = _request_config(state.config, request.headers)
    except _BadValue as exc:
        return _bad(str(exc), None, "invalid_demo_header")
    if body is _INVALID or not isinstance(body, dict):
        return _bad("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str):
        return _bad("you must provide a model parameter")
    if "input" not in body:
        return _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    inputs = _embedding_inputs(body["input"])
    if isinstance(inputs, str):
        return _bad(inputs, "input", "invalid_value")
    dimensions = body.get("dimensions", None)
    if dimensions is None:
        dimensions = DEFAULT_EMBEDDING_DIMENSIONS
    elif not _is_int(dimensions) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        return _bad(
            f"Invalid value for 'dimensions': expected an integer between 1 and "
            f"{MAX_EMBEDDING_DIMENSIONS}.",
            "dimensions",
            "invalid_value",
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        return _bad(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )

    await _sleep_ms(cfg.latency_ms)
    error = _active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return _drop(request)
        if error.isdigit():
            return _openai_injected(int(error), cfg)

    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": (
                _embedding_base64(key, dimensions)
                if encoding == "base64"
                else _embedding_vector(key, dimensions).tolist()
            ),
        }
        for index, (key, _) in enumerate(inputs)
    ]
    prompt = cfg.prompt_tokens if cfg.prompt_tokens is not None else sum(n for _, n in inputs)
    payload: dict[str, JSON] = {"object": "list", "data": data, "model": model}
    if error != "no-usage":
        payload["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    body_bytes = orjson.dumps(payload)
    if error == "cut":
        return await _send_cut_body(request, body_bytes, _json_headers("x-request-id"))
    return web.Response(body=body_bytes, headers=_json_headers("x-request-id"))


_MODEL_CREATED = 1_700_000_000


def _openai_model(model_id: str) -> dict[str, JSON]:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "tokenpapa"}


def _anthropic_model(model_id: str) -> dict[str, JSON]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": "2025-01-01T00:00:00Z",
    }


def _models_auth_error(request: web.Request) -> web.Response | None:
    if request.headers.get("anthropic-version"):
        if request.headers.get("x-api-key") or _bearer_token(request):
            return None
        return _anthropic_error(401, "x-api-key header is required")
    if _bearer_token(request):
        return None
    return _openai_error(
        401,
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    )


async def list_models(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``GET /v1/models`` in OpenAI's format, or Anthropic's with ``anthropic-version``."""
    state.record(request, None, b"")
    denied = _models_auth_error(request)
    if denied is not None:
        return denied
    models = state.config.models
    if request.headers.get("anthropic-version"):
        payload: dict[str, JSON] = {
            "data": [_anthropic_model(m) for m in models],
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    else:
        payload = {"object": "list", "data": [_openai_model(m) for m in models]}
    return _json_response(200, payload)


async def retrieve_model(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``GET /v1/models/{model}``."""
    state.record(request, None, b"")
    denied = _models_auth_error(request)
    if denied is not None:
        return denied
    model_id = request.match_info["model"]
    anthropic = bool(request.headers.get("anthropic-version"))
    if model_id not in state.config.models:
        if anthropic:
            return _anthropic_error(404, f"model: {model_id}")
        return _openai_error(
            404,
            f"The model '{model_id}' does not exist",
            param="model",
            code="model_not_found",
        )
    return _json_response(200, _anthropic_model(model_id) if anthropic else _openai_model(model_id))


# --------------------------------------------------------------------------------------------
# Anthropic: messages
# --------------------------------------------------------------------------------------------


class _MessagesRequest(NamedTuple):
    model: str
    messages: list[Any]
    system: Any
    max_tokens: int
    stream: bool
    tool: dict[str, Any] | None


def _anthropic_auth(request: web.Request) -> web.Response | None:
    if not (request.headers.get("x-api-key") or _bearer_token(request)):
        return _anthropic_error(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _anthropic_error(400, "anthropic-version: header is required")
    return None


def _choose_anthropic_tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """Same policy as :func:`_choose_openai_tool`, with Anthropic's ``tool_choice`` shapes."""
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
        return _anthropic_error(400, "Input should be an object")
    model = body.get("model")
    if model is None:
        return _anthropic_error(400, "model: Field required")
    if not isinstance(model, str):
        return _anthropic_error(400, "model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if not count_only:
        if max_tokens is None:
            return _anthropic_error(400, "max_tokens: Field required")
        if not _is_int(max_tokens):
            return _anthropic_error(400, "max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            return _anthropic_error(400, "max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if messages is None:
        return _anthropic_error(400, "messages: Field required")
    if not isinstance(messages, list):
        return _anthropic_error(400, "messages: Input should be a valid list")
    if not messages:
        return _anthropic_error(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return _anthropic_error(400, f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            return _anthropic_error(
                400, f"messages.{i}.role: Input should be 'user' or 'assistant'"
            )
        if "content" not in message:
            return _anthropic_error(400, f"messages.{i}.content: Field required")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _anthropic_error(400, "stream: Input should be a valid boolean")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return _anthropic_error(400, "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return _anthropic_error(400, f"tools.{i}.name: Field required")
    return _MessagesRequest(
        model=model,
        messages=messages,
        system=body.get("system"),
        max_tokens=max_tokens if isinstance(max_tokens, int) else 0,
        stream=bool(stream),
        tool=_choose_anthropic_tool(body, messages),
    )


def _anthropic_usage(cfg: DemoConfig, prompt: int, output: int) -> dict[str, JSON]:
    """Anthropic usage: ``input_tokens`` excludes cache reads/writes (OpenAI's includes them).

    So the same ``x-demo-prompt-tokens``/``x-demo-cached-tokens`` describe the same prompt
    on both APIs: ``input + cache_creation + cache_read == prompt``.
    """
    cached = min(cfg.cached_tokens, prompt)
    creation = min(cfg.cache_creation_tokens, prompt - cached)
    return {
        "input_tokens": prompt - cached - creation,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def _anthropic_event(name: bytes, payload: dict[str, JSON]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def messages(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/messages``."""
    body = await _read_body(request, state)
    denied = _anthropic_auth(request)
    if denied is not None:
        return denied
    try:
        cfg = _request_config(state.config, request.headers)
    except _BadValue as exc:
        return _anthropic_error(400, str(exc))
    if body is _INVALID:
        return _anthropic_error(400, "There was an error parsing the body of your request.")
    req = _validate_messages(body)
    if isinstance(req, web.Response):
        return req

    await _sleep_ms(cfg.latency_ms)
    error = _active_error(state, cfg)
    if error is not None:
        if error == "disconnect":
            return _drop(request)
        if error.isdigit():
            return _anthropic_injected(int(error), cfg)

    prompt = (
        cfg.prompt_tokens
        if cfg.prompt_tokens is not None
        else estimate_prompt_tokens(req.messages, req.system)
    )
    output, truncated = _completion_budget(cfg, req.max_tokens)
    message_id = _new_id("msg_")
    usage = None if error == "no-usage" else _anthropic_usage(cfg, prompt, output)
    tool_block: dict[str, JSON] | None = None
    if req.tool is not None:
        tool_block = {
            "type": "tool_use",
            "id": _new_id("toolu_"),
            "name": req.tool["name"],
            "input": orjson.loads(_tool_arguments(req.tool.get("input_schema"))),
        }
        stop_reason = "tool_use"
    else:
        stop_reason = "max_tokens" if truncated else "end_turn"

    if req.stream:
        events = _anthropic_stream_events(
            message_id, req, cfg, output, stop_reason, tool_block, usage, cut=error == "cut"
        )
        return await _send_stream(
            request,
            state,
            events,
            delay_ms=cfg.chunk_delay_ms,
            cut=error == "cut",
            headers=_sse_headers("request-id"),
            linger_ms=cfg.linger_ms,
        )

    content = (
        [tool_block]
        if tool_block is not None
        else [{"type": "text", "text": "".join(_filler_pieces(output))}]
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
        return await _send_cut_body(request, orjson.dumps(payload), _json_headers("request-id"))
    return web.Response(body=orjson.dumps(payload), headers=_json_headers("request-id"))


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
        fragments = ["", *_argument_fragments(arguments, cfg.chunks)]
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    else:
        block = {"type": "text", "text": ""}
        pieces = list(_filler_pieces(output))
        deltas = [
            {"type": "text_delta", "text": text}
            for text in _split_evenly(pieces, cfg.chunks if cfg.chunks else len(pieces))
        ]
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
        message_delta["usage"] = {"output_tokens": output}
    events.append(_anthropic_event(b"message_delta", message_delta))
    events.append(_anthropic_event(b"message_stop", {"type": "message_stop"}))
    return events


async def count_tokens(request: web.Request, state: DemoState) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens`` with the same estimate as ``/v1/messages``."""
    body = await _read_body(request, state)
    denied = _anthropic_auth(request)
    if denied is not None:
        return denied
    try:
        cfg = _request_config(state.config, request.headers)
    except _BadValue as exc:
        return _anthropic_error(400, str(exc))
    if body is _INVALID:
        return _anthropic_error(400, "There was an error parsing the body of your request.")
    req = _validate_messages(body, count_only=True)
    if isinstance(req, web.Response):
        return req
    prompt = (
        cfg.prompt_tokens
        if cfg.prompt_tokens is not None
        else estimate_prompt_tokens(req.messages, req.system)
    )
    return _json_response(200, {"input_tokens": prompt})


async def not_found(request: web.Request, state: DemoState) -> web.StreamResponse:
    """Any other ``/v1/*`` URL: OpenAI's "Invalid URL" error (Anthropic's with its header)."""
    state.record(request, None, b"")
    if request.headers.get("anthropic-version"):
        return _anthropic_error(404, "Not Found")
    return _openai_error(404, f"Invalid URL ({request.method} {request.path})")


# --------------------------------------------------------------------------------------------
# /_demo test hooks
# --------------------------------------------------------------------------------------------


async def demo_requests(request: web.Request) -> web.Response:
    """``GET /_demo/requests[?limit=N][&path=/v1/...]``: recorded requests, oldest first."""
    state = request.app[STATE_KEY]
    entries = list(state.recent)
    path = request.query.get("path")
    if path:
        entries = [e for e in entries if e["path"] == path]
    limit = request.query.get("limit")
    if limit and limit.isdigit():
        entries = entries[-int(limit) :] if int(limit) else []
    return _json_response(200, {"requests": entries, "count": len(entries)})


async def demo_last_request(request: web.Request) -> web.Response:
    """``GET /_demo/requests/last``: the most recent recorded request (404 if none)."""
    state = request.app[STATE_KEY]
    if not state.recent:
        return _json_response(404, {"error": "no requests recorded"})
    return _json_response(200, state.recent[-1])


async def demo_clear_requests(request: web.Request) -> web.Response:
    """``DELETE /_demo/requests``: forget recorded requests."""
    state = request.app[STATE_KEY]
    cleared = len(state.recent)
    state.recent.clear()
    return _json_response(200, {"cleared": cleared})


async def demo_stats(request: web.Request) -> web.Response:
    """``GET /_demo/stats``: request / completion / client-cancellation counters."""
    return _json_response(200, request.app[STATE_KEY].stats())


async def demo_reset_stats(request: web.Request) -> web.Response:
    """``DELETE /_demo/stats``: zero the counters (``in_flight`` is live and kept)."""
    state = request.app[STATE_KEY]
    state.reset_stats()
    return _json_response(200, state.stats())


async def demo_health(request: web.Request) -> web.Response:
    """``GET /_demo/health``: readiness probe for ``make run`` and tests."""
    return _json_response(200, {"status": "ok"})


# --------------------------------------------------------------------------------------------
# App factory, thread runner and CLI
# --------------------------------------------------------------------------------------------


def make_app(
    config: DemoConfig | None = None, *, use_env: bool = True, **overrides: Any
) -> web.Application:
    """Build the aiohttp application.

    Configuration precedence: ``overrides`` (``DemoConfig`` field names, e.g.
    ``latency_ms=50``) > ``config`` > ``DEMO_UPSTREAM_*`` environment variables (only when
    ``use_env``) > built-in defaults.  Per-request ``x-demo-*`` headers override all of them.

    Serve it with ``handler_cancellation=True`` (as :func:`main` and :func:`start_in_thread`
    do) so client disconnects cancel handlers and are counted in ``/_demo/stats``.
    """
    base = config or (config_from_env() if use_env else DemoConfig())
    names = {f.name for f in fields(DemoConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown demo upstream option(s): {', '.join(sorted(unknown))}")
    if "models" in overrides and not isinstance(overrides["models"], tuple):
        overrides["models"] = tuple(overrides["models"])
    cfg = replace(base, **overrides)

    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[STATE_KEY] = DemoState(config=cfg, recent=deque(maxlen=max(0, cfg.record_limit)))
    router = app.router
    router.add_post("/v1/chat/completions", _api_endpoint(chat_completions))
    router.add_post("/v1/embeddings", _api_endpoint(embeddings))
    router.add_get("/v1/models", _api_endpoint(list_models))
    router.add_get("/v1/models/{model}", _api_endpoint(retrieve_model))
    router.add_post("/v1/messages", _api_endpoint(messages))
    router.add_post("/v1/messages/count_tokens", _api_endpoint(count_tokens))
    router.add_route("*", "/v1/{tail:.*}", _api_endpoint(not_found))
    router.add_get("/_demo/requests", demo_requests)
    router.add_get("/_demo/requests/last", demo_last_request)
    router.add_delete("/_demo/requests", demo_clear_requests)
    router.add_get("/_demo/stats", demo_stats)
    router.add_delete("/_demo/stats", demo_reset_stats)
    router.add_get("/_demo/health", demo_health)
    return app


class RunningServer(NamedTuple):
    """What :func:`start_in_thread` returns; unpacks as ``(base_url, stop)``."""

    base_url: str
    stop: Callable[[], None]

    @property
    def root_url(self) -> str:
        """``base_url`` without ``/v1`` (what the Anthropic SDK wants as ``base_url``)."""
        return self.base_url.removesuffix("/v1")

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping a wildcard bind to a connectable address
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def start_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, use_env: bool = False, **config: Any
) -> RunningServer:
    """Serve the simulator from a daemon thread with its own event loop.

    ``port=0`` picks a free port.  ``config`` is passed to :func:`make_app`; unlike
    ``make_app`` the environment is ignored by default so tests are reproducible.
    Returns ``(base_url, stop)`` where ``base_url`` is ``http://host:port/v1``;
    ``stop()`` is idempotent and waits for the thread to finish.
    """
    app = make_app(use_env=use_env, **config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    async def start() -> web.AppRunner:
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(start())
        except BaseException as exc:
            outcome["error"] = exc
            ready.set()
            loop.close()
            return
        outcome["port"] = runner.addresses[0][1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    thread = threading.Thread(target=run, name="demo-upstream", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("demo upstream did not start within 10 s")
    if "error" in outcome:
        raise RuntimeError("demo upstream failed to start") from outcome["error"]

    lock = threading.Lock()

    def stop() -> None:
        with lock:
            if not loop.is_closed() and loop.is_running():
                loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return RunningServer(f"http://{_url_host(host)}:{outcome['port']}/v1", stop)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.llm",
        description="Local simulator of the OpenAI and Anthropic HTTP APIs (demo upstream). "
        "Every option also reads DEMO_UPSTREAM_<OPTION> from the environment; "
        "per-request x-demo-* headers override both.",
    )
    env = os.environ
    parser.add_argument(
        "--host", default=env.get(ENV_PREFIX + "HOST", "127.0.0.1"), help="bind address"
    )
    parser.add_argument(
        "--port", type=int, default=int(env.get(ENV_PREFIX + "PORT", "8002")), help="bind port"
    )
    parser.add_argument("--latency-ms", type=float, help="delay before the first byte")
    parser.add_argument("--chunk-delay-ms", type=float, help="delay between stream chunks")
    parser.add_argument(
        "--linger-ms", type=float, help="keep a stream open this long after its last event"
    )
    parser.add_argument("--completion-tokens", type=int, help="completion tokens (default 16)")
    parser.add_argument("--prompt-tokens", type=int, help="override the prompt token estimate")
    parser.add_argument("--cached-tokens", type=int, help="cached prompt tokens to report")
    parser.add_argument(
        "--cache-creation-tokens", type=int, help="Anthropic cache_creation_input_tokens"
    )
    parser.add_argument(
        "--error", help="inject an error: HTTP status, disconnect, cut, no-usage or none"
    )
    parser.add_argument("--error-rate", type=float, help="probability (0-1) of --error")
    parser.add_argument("--chunks", type=int, help="content chunks per stream")
    parser.add_argument("--retry-after", type=int, help="Retry-After seconds on 429")
    parser.add_argument("--record-limit", type=int, help="recent requests kept (0 disables)")
    parser.add_argument("--models", help="comma-separated model ids for /v1/models")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m simulators.llm --host 127.0.0.1 --port 8002``."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_env()
        raw_overrides = {
            name: getattr(args, name)
            for name in _FIELD_PARSERS
            if getattr(args, name, None) is not None
        }
        # Run flags through the same parsers as headers/env so the rules are identical.
        cfg = replace(cfg, **{k: _FIELD_PARSERS[k](str(v)) for k, v in raw_overrides.items()})
    except ValueError as exc:
        parser.error(str(exc))

    loop: asyncio.AbstractEventLoop | None = None
    if not args.no_uvloop:
        try:
            import uvloop  # optional speed-up

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = None

    app = make_app(cfg)
    url = f"http://{_url_host(args.host)}:{args.port}/v1"
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=access_logger if args.access_log else None,
        handler_cancellation=True,
        shutdown_timeout=2.0,
        print=lambda *_: print(f"demo upstream listening on {url}", flush=True),
        loop=loop,
    )


if __name__ == "__main__":
    main()
