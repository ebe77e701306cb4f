"""What every API endpoint of the demo upstream shares.

Per-app state (counters, and the bounded log of received requests that the ``/_demo`` hooks
expose), the wrapper that counts requests and client cancellations, reading and recording a body,
drawing an injected error, and the response writers for SSE streams and cut-off bodies.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .config import DemoConfig
from .errors import anthropic_error, openai_error
from .wire import DROPPED, INVALID, JSON, bearer_token, close_transport, load_json, new_id

# --------------------------------------------------------------------------------------------
# State shared by the handlers of one app
# --------------------------------------------------------------------------------------------


# Prompt prefixes an upstream's cache holds at most (the oldest go first).
PROMPT_CACHE_LIMIT = 100_000


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
    # The prompt cache: a digest of (model, system, the first k messages) -> when it expires.
    prompt_cache: dict[str, float] = field(default_factory=dict)

    def record(self, request: web.Request, body: JSON, raw: bytes) -> None:
        if not self.recent.maxlen:
            return
        if body is INVALID:
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

    def cached_prefix(
        self, ttl: float, model: str, messages: list[Any], system: Any = None
    ) -> list[Any]:
        """The longest prefix of ``messages`` this upstream's prompt cache holds (a provider
        caches a prompt's prefixes, whole messages here), then every prefix of this prompt
        cached for ``ttl`` seconds more. Only digests are kept."""
        now = time.time()
        cache = self.prompt_cache
        if len(cache) > PROMPT_CACHE_LIMIT:
            for digest in [d for d, until in cache.items() if until <= now]:
                del cache[digest]
            while len(cache) > PROMPT_CACHE_LIMIT:
                del cache[next(iter(cache))]
        hit = 0
        digests = []
        for k in range(1, len(messages) + 1):
            material = orjson.dumps([model, system, messages[:k]], option=orjson.OPT_SORT_KEYS)
            digest = hashlib.blake2b(material, digest_size=16).hexdigest()
            digests.append(digest)
            if cache.get(digest, 0.0) > now:
                hit = k
        for digest in digests:
            cache.pop(digest, None)
            cache[digest] = now + ttl
        return messages[:hit]

    def reset_stats(self) -> None:
        self.requests = self.completed = self.cancelled = self.errors_injected = 0
        self.by_path.clear()


STATE_KEY = web.AppKey("demo_state", DemoState)


# --------------------------------------------------------------------------------------------
# Per-request steering: injected errors and delays
# --------------------------------------------------------------------------------------------


def active_error(state: DemoState, cfg: DemoConfig) -> str | None:
    error = cfg.error
    if error is None:
        return None
    if cfg.error_rate < 1.0 and random.random() >= cfg.error_rate:  # noqa: S311 - not a secret
        return None
    state.errors_injected += 1
    return error


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


# --------------------------------------------------------------------------------------------
# Response writers
# --------------------------------------------------------------------------------------------


async def send_stream(
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
            close_transport(request)
            return response
        await sleep_ms(linger_ms)  # a provider that ends the body a while after [DONE]
        await response.write_eof()
    except ConnectionResetError:
        # The client went away mid-stream (handler cancellation disabled by the embedder).
        state.cancelled += 1
        request[DROPPED] = True
    return response


async def send_cut_body(
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
    close_transport(request)
    return response


def sse_headers(request_id_header: str) -> dict[str, str]:
    return {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        request_id_header: new_id("req_"),
    }


def json_headers(request_id_header: str) -> dict[str, str]:
    return {"Content-Type": "application/json", request_id_header: new_id("req_")}


# --------------------------------------------------------------------------------------------
# Endpoint plumbing
# --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request, DemoState], Awaitable[web.StreamResponse]]


def api_endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
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
            refused = unknown_key(request, state.config)
            if refused is not None:
                await request.read()
                state.record(request, INVALID, b"")
                return refused
            response = await handler(request, state)
        except asyncio.CancelledError:
            if not request.get(DROPPED):
                state.cancelled += 1
            raise
        finally:
            state.in_flight -= 1
        if not request.get(DROPPED):
            state.completed += 1
        return response

    return wrapper


def unknown_key(request: web.Request, cfg: DemoConfig) -> web.Response | None:
    """With ``api_keys`` configured, the provider's 401 for a key it does not know (none when
    no key was sent: each endpoint answers that in its own words). OpenAI's quotes the key;
    Anthropic's does not."""
    if not cfg.api_keys:
        return None
    anthropic_style = bool(request.headers.get("x-api-key")) or request.path.startswith(
        "/v1/messages"
    )
    key = request.headers.get("x-api-key") or bearer_token(request)
    if not key or key in cfg.api_keys:
        return None
    if anthropic_style:
        return anthropic_error(401, "invalid x-api-key")
    return openai_error(
        401,
        f"Incorrect API key provided: {key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        type_="invalid_request_error",
        code="invalid_api_key",
    )


async def read_body(request: web.Request, state: DemoState) -> JSON:
    raw = await request.read()
    body = load_json(raw)
    state.record(request, body, raw)
    return body
