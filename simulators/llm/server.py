"""The demo upstream's HTTP server: routing, the ``/_demo`` test hooks, and running it.

:func:`make_app` builds the aiohttp application, every route in one place; :func:`start_in_thread`
serves it from a daemon thread (tests, benchmarks). The ``/_demo`` hooks expose what
:class:`~simulators.llm.endpoint.DemoState` counted and recorded of the received requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, NamedTuple

from aiohttp import web

from .anthropic import count_tokens, messages
from .completions import completions, fim_completions
from .config import DemoConfig, config_from_env
from .embeddings import embeddings
from .endpoint import STATE_KEY, DemoState, api_endpoint
from .errors import anthropic_error, openai_error
from .models import list_models, retrieve_model
from .openai import chat_completions
from .wire import json_response

CLIENT_MAX_SIZE = 64 * 1024 * 1024  # LLM requests with inline images can be large.


async def not_found(request: web.Request, state: DemoState) -> web.StreamResponse:
    """Any other ``/v1/*`` URL: OpenAI's "Invalid URL" error (Anthropic's with its header)."""
    state.record(request, None, b"")
    if request.headers.get("anthropic-version"):
        return anthropic_error(404, "Not Found")
    return openai_error(404, f"Invalid URL ({request.method} {request.path})")


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
    return json_response(200, {"requests": entries, "count": len(entries)})


async def demo_last_request(request: web.Request) -> web.Response:
    """``GET /_demo/requests/last``: the most recent recorded request (404 if none)."""
    state = request.app[STATE_KEY]
    if not state.recent:
        return json_response(404, {"error": "no requests recorded"})
    return json_response(200, state.recent[-1])


async def demo_clear_requests(request: web.Request) -> web.Response:
    """``DELETE /_demo/requests``: forget recorded requests."""
    state = request.app[STATE_KEY]
    cleared = len(state.recent)
    state.recent.clear()
    return json_response(200, {"cleared": cleared})


async def demo_stats(request: web.Request) -> web.Response:
    """``GET /_demo/stats``: request / completion / client-cancellation counters."""
    return json_response(200, request.app[STATE_KEY].stats())


async def demo_reset_stats(request: web.Request) -> web.Response:
    """``DELETE /_demo/stats``: zero the counters (``in_flight`` is live and kept)."""
    state = request.app[STATE_KEY]
    state.reset_stats()
    return json_response(200, state.stats())


async def demo_health(request: web.Request) -> web.Response:
    """``GET /_demo/health``: readiness probe for ``make run`` and tests."""
    return json_response(200, {"status": "ok"})


# --------------------------------------------------------------------------------------------
# App factory and thread runner
# --------------------------------------------------------------------------------------------


def make_app(
    config: DemoConfig | None = None, *, use_env: bool = True, **overrides: Any
) -> web.Application:
    """Build the aiohttp application.

    Configuration precedence: ``overrides`` (``DemoConfig`` field names, e.g.
    ``latency_ms=50``) > ``config`` > ``DEMO_UPSTREAM_*`` environment variables (only when
    ``use_env``) > built-in defaults.  Per-request ``x-demo-*`` headers override all of them.

    Serve it with ``handler_cancellation=True`` (as :func:`.cli.main` and :func:`start_in_thread`
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
    router.add_post("/v1/chat/completions", api_endpoint(chat_completions))
    router.add_post("/v1/embeddings", api_endpoint(embeddings))
    router.add_post("/v1/completions", api_endpoint(completions))
    router.add_post("/v1/fim/completions", api_endpoint(fim_completions))
    router.add_get("/v1/models", api_endpoint(list_models))
    router.add_get("/v1/models/{model}", api_endpoint(retrieve_model))
    router.add_post("/v1/messages", api_endpoint(messages))
    router.add_post("/v1/messages/count_tokens", api_endpoint(count_tokens))
    router.add_route("*", "/v1/{tail:.*}", api_endpoint(not_found))
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


def url_host(host: str) -> str:
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

    return RunningServer(f"http://{url_host(host)}:{outcome['port']}/v1", stop)
