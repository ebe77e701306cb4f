"""The relay: an ASGI app serving the OpenAI HTTP API on /v1 (no Django, no SQL).

Per request: check the key's checksum, look it up by digest (cache in front of Redis), resolve
the model, hold the worst-case cost atomically in Redis, forward with one pooled client,
stream bytes back as they arrive, read the usage, settle the hold to the actual cost, and queue
one usage event. Run with ``uvicorn relay.app:app``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
import redis.exceptions

from keys import format as keyformat

from . import limits, media, prices, scripts, state
from .adapters import anthropic
from .adapters import openai as openai_adapter
from .config import Config
from .errors import RelayError, bad_request, scrub, unauthorized
from .exchange import Exchange, StreamTranslator, make_exchange
from .reporter import Reporter
from .usage import Usage
from .views import Views

log = logging.getLogger("relay")

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


# Prompt tokens held for a request with an image, audio or a file when the model's context
# window is not in the catalog.
MEDIA_PROMPT_CEILING = 1_000_000
# Providers write a prompt of their own around tool definitions (Anthropic's is about 350
# tokens): a small body with tools can be billed more prompt tokens than it has bytes.
TOOLS_PROMPT_ALLOWANCE = 1024


class ClientGone(Exception):
    pass


class Retryable(Exception):
    """An upstream failure before the first byte: the next route may be tried."""

    def __init__(self, error: RelayError) -> None:
        super().__init__(error.message)
        self.error = error


class Request:
    """What one relayed request has learnt so far; enough to bill it however it ends."""

    __slots__ = (
        "account",
        "api",
        "body",
        "body_pending",
        "body_reserved",
        "cap_key",
        "chunks",
        "client_net",
        "disconnected",
        "done",
        "held",
        "hold_nanos",
        "id",
        "key",
        "media",
        "model",
        "price",
        "prompt_estimate",
        "rate_headers",
        "responded",
        "route",
        "started",
        "stream",
        "tokens_counted",
        "tpm_key",
        "translator",
        "ttfb",
    )

    def __init__(self) -> None:
        self.id = "req_" + os.urandom(12).hex()  # what secrets.token_hex(12) does, inlined
        self.api = ""
        self.started = time.time()
        self.ttfb: float | None = None
        self.held = False
        self.hold_nanos = 0  # the most this request may be charged
        self.media = media.NONE
        self.done = False
        self.body_pending = False  # the client's body is (perhaps) not read to its end
        self.body_reserved = 0  # bytes of the relay's body budget this request holds
        self.responded = False
        self.disconnected = False
        self.stream = False
        self.chunks = 0
        self.prompt_estimate = 0
        self.tokens_counted = 0
        self.account: int = 0
        self.key: dict[str, Any] = {}
        self.model: dict[str, Any] = {}
        self.route: dict[str, Any] = {}
        self.price: prices.NanoPrice | None = None
        self.body: dict[str, Any] = {}
        self.cap_key = ""
        self.client_net = ""
        self.tpm_key = ""
        self.rate_headers: list[tuple[bytes, bytes]] = []
        self.translator: StreamTranslator | None = None


def _positive_int(body: dict[str, Any], name: str, *, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_request(f"'{name}' must be an integer >= {minimum}.", param=name)
    return value


def ordered_routes(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lowest priority number first; within one priority, a weighted random order."""
    if len(routes) == 1:
        return routes
    ordered: list[dict[str, Any]] = []
    for priority in sorted({r.get("priority", 0) for r in routes}):
        group = [r for r in routes if r.get("priority", 0) == priority]
        while group:
            weights = [max(1, int(r.get("weight", 1))) for r in group]
            pick = random.choices(range(len(group)), weights=weights)[0]
            ordered.append(group.pop(pick))
    return ordered


class Relay:
    def __init__(self, config: Config | None = None) -> None:
        self._config = config
        self.config: Config
        self.redis: aioredis.Redis
        self.views: Views
        self.reporter: Reporter
        self.http: aiohttp.ClientSession
        self.scripts: dict[str, Any] = {}
        self.script_client: scripts.ScriptClient | None = None
        self.trusted: list[limits.Network] = []
        # Bytes of request bodies being read or held by requests in flight, against
        # config.body_budget_bytes: what many large bodies at once can pin in memory.
        self.body_bytes = 0

    # ---- lifespan -------------------------------------------------------------------------

    async def startup(self) -> None:
        self.config = self._config or Config.from_env()
        self.trusted = limits.networks(list(self.config.trusted_proxies))
        # A bounded pool that waits for a free connection: a burst of requests queues for
        # Redis instead of opening connections without limit (or failing past the limit).
        pool = aioredis.BlockingConnectionPool.from_url(
            self.config.redis_url,
            max_connections=self.config.redis_connections,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        # The balance scripts run on every request: over the lean pipelined client when the
        # URL is a plain one it speaks (TCP, optional password and db), else over redis-py.
        self.script_client = (
            scripts.ScriptClient(self.config.redis_url, connect_timeout=2, timeout=5)
            if scripts.supports(self.config.redis_url)
            else None
        )
        for name, source in (
            ("reserve", state.RESERVE),
            ("settle", state.SETTLE),
            ("release", state.RELEASE),
        ):
            self.scripts[name] = (
                scripts.Script(self.script_client, source)
                if self.script_client is not None
                else self.redis.register_script(source)
            )
        self.views = Views(self.redis, self.config.pepper)
        await self.views.start()
        self.reporter = Reporter(
            self.config.broker_url,
            self.config.spool_dir,
            batch_size=self.config.batch_size,
            interval=self.config.batch_interval,
            replay_interval=self.config.replay_interval,
        )
        await self.reporter.start()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.config.upstream_connections, ttl_dns_cache=300
            ),
            # First-byte and between-chunk timeouts are applied per request (see attempt()).
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.config.connect_timeout, sock_read=None
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        # What start-up built (modules, the catalog, clients) lives as long as the process: out
        # of the collector's way, so a full collection scans only what requests left behind
        # instead of ~57,000 start-up objects too (a 10-20 ms pause here, timed by gc.collect()).
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        await self.http.close()
        await self.reporter.stop()
        await self.views.stop()
        if self.script_client is not None:
            await self.script_client.aclose()
        await self.redis.aclose()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self.startup()
                    except BaseException as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        raise
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # ---- routing --------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Any, send: Any) -> None:
        req = Request()
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path == "/v1/chat/completions":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="chat")
            elif path == "/v1/embeddings":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="embeddings")
            elif path == "/v1/messages":
                req.api = "messages"  # errors in Anthropic's shape from here on
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="messages")
            elif path == "/v1/models":
                self._allow(method, "GET")
                await self.respond(send, req, 200, orjson.dumps(self.model_list()))
            elif path.startswith("/v1/models/"):
                self._allow(method, "GET")
                model = self.views.model(path[len("/v1/models/") :])
                if model is None:
                    raise RelayError(404, "The model does not exist.", code="model_not_found")
                await self.respond(send, req, 200, orjson.dumps(self.model_object(model)))
            elif path in ("/healthz", "/v1/healthz"):
                await self.respond(send, req, 200, b'{"status":"ok"}')
            else:
                raise RelayError(404, f"Unknown path {path[:100]}.", code="unknown_url")
        except RelayError as exc:
            await self._fail(send, req, exc)
        except ClientGone:
            await self._release_quietly(req)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.error("Redis unavailable while serving %s: %s", req.id, exc)
            await self._fail(
                send,
                req,
                RelayError(
                    503,
                    "The service is temporarily unavailable; retry shortly.",
                    type="server_error",
                    code="service_unavailable",
                    headers=[(b"retry-after", b"1")],
                ),
            )
        except Exception:
            log.exception("unexpected error in request %s", req.id)
            await self._fail(send, req, RelayError(500, "Internal error.", type="server_error"))
        finally:
            if req.body_reserved:
                self.body_bytes -= req.body_reserved

    async def _fail(self, send: Any, req: Request, exc: RelayError) -> None:
        await self._release_quietly(req)
        if req.api == "messages" and not isinstance(exc, anthropic.AnthropicError):
            exc = anthropic.from_relay_error(exc)
        if not req.responded:
            await self.respond(send, req, exc.status, exc.body(), exc.headers)

    async def _release_quietly(self, req: Request) -> None:
        if req.held:
            try:
                await self.release(req)
            except Exception:  # the stale-hold sweep will release it
                log.warning("could not release the hold of %s", req.id)

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise RelayError(405, f"Method {method} not allowed.", code="method_not_allowed")

    def model_object(self, model: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": model["id"],
            "object": "model",
            "created": model.get("created", 0),
            "owned_by": model["provider"],
        }

    def model_list(self) -> dict[str, Any]:
        models = [self.model_object(m) for m in self.views.models.values()]
        return {"object": "list", "data": models}

    async def respond(
        self, send: Any, req: Request, status: int, body: bytes, extra: Headers | None = None
    ) -> None:
        headers: Headers = [
            (b"content-type", JSON),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", req.id.encode()),
            *req.rate_headers,
        ]
        if extra:
            headers.extend(extra)
        if req.body_pending:
            # Answered before the body was read (a bad key, a body too large): the rest of it
            # is not waited for, and the connection cannot carry another request.
            headers.append((b"connection", b"close"))
        req.responded = req.done = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # ---- the relayed request ----------------------------------------------------------------

    async def read_body(self, scope: Scope, receive: Any, req: Request) -> bytes:
        """The body, read only after the key was checked. A declared length above the limit is
        refused before a byte is read; the bytes read are counted against the relay's body
        budget until the request ends, so many large bodies at once are refused (503) rather
        than held in memory."""
        limit = self.config.max_body_bytes
        declared = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise bad_request("Invalid Content-Length.") from None
                if declared > limit:
                    raise RelayError(413, f"Request body exceeds {limit} bytes.", code="too_large")
        self._reserve_body(req, declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RelayError(413, f"Request body exceeds {limit} bytes.", code="too_large")
            if size > req.body_reserved:  # no length was declared (chunked), or a wrong one
                self._reserve_body(req, size)
            chunks.append(chunk)
            if not message.get("more_body"):
                req.body_pending = False
                return b"".join(chunks)

    def _reserve_body(self, req: Request, size: int) -> None:
        more = size - req.body_reserved
        if more <= 0:
            return
        if self.body_bytes + more > self.config.body_budget_bytes and self.body_bytes > 0:
            raise RelayError(
                503,
                "The relay is receiving too many large requests at once; retry shortly.",
                type="server_error",
                code="service_unavailable",
                headers=[(b"retry-after", b"1")],
            )
        self.body_bytes += more
        req.body_reserved = size

    async def authenticate(self, scope: Scope) -> dict[str, Any]:
        """The key from ``Authorization: Bearer`` (OpenAI SDKs) or ``x-api-key`` (Anthropic's)."""
        secret = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    secret = token.strip()
                    break
            elif name == b"x-api-key":
                secret = value.decode("latin-1").strip()
        if not secret:
            raise unauthorized("Missing API key: send it as 'Authorization: Bearer tp-sk-...'.")
        if not keyformat.is_well_formed(secret):
            raise unauthorized("Invalid API key format.")
        record = await self.views.key(secret)
        if record is None:
            raise unauthorized("Invalid or revoked API key.")
        return record

    def parse(self, raw: bytes, api: str) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("The request body is not valid JSON (UTF-8).") from None
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required and must be a string.", param="model")
        if api == "messages":
            anthropic.validate_anthropic_request(body)
        elif api == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise bad_request("'messages' must be a non-empty array.", param="messages")
            if not all(isinstance(m, dict) for m in messages):
                raise bad_request("Each message must be an object.", param="messages")
            stream = body.get("stream", False)
            if stream is not None and not isinstance(stream, bool):
                raise bad_request("'stream' must be a boolean.", param="stream")
            options = body.get("stream_options")
            if options is not None and not isinstance(options, dict):
                raise bad_request("'stream_options' must be an object.", param="stream_options")
            _positive_int(body, "max_tokens")
            _positive_int(body, "max_completion_tokens")
            _positive_int(body, "n")
        else:
            value = body.get("input")
            if not isinstance(value, str | list) or not value:
                raise bad_request("'input' must be a non-empty string or array.", param="input")
        return body

    def worst_case(self, req: Request, raw_size: int, api: str) -> int:
        """Nano-dollars to hold: the most the request can cost at catalog prices.

        The prompt: text is bounded by the body's size in bytes (capped by the context window),
        plus an allowance for the prompt a provider writes around tool definitions; an image,
        audio or a file is billed on its content, so a request with one holds the whole
        context window. Its images and seconds of audio at their own prices where the model
        has them, and the most output the request allows. Also sets the tokens the request
        counts against a tokens-per-minute limit."""
        assert req.price is not None
        window = req.model.get("context_window") or 0
        req.prompt_estimate = min(raw_size, window) if window else raw_size
        price = req.price.price
        req.media = media.inspect(req.body, api, measure_audio=price.audio_second > 0)
        if req.media.other:
            prompt = window or MEDIA_PROMPT_CEILING
        else:
            prompt = raw_size + (TOOLS_PROMPT_ALLOWANCE if req.body.get("tools") else 0)
            if window:
                prompt = min(prompt, window)
        completion = 0
        requested = 0
        if api == "chat":
            body = req.body
            n = body.get("n") or 1
            requested = (body.get("max_completion_tokens") or body.get("max_tokens") or 0) * n
            completion = requested or (req.model.get("max_output_tokens") or 8192) * n
        elif api == "messages":
            requested = completion = int(req.body["max_tokens"])
        req.tokens_counted = math.ceil(raw_size / 4) + requested
        return req.price.nanos(
            prompt_tokens=prompt,
            completion_tokens=completion,
            images=req.media.images,
            audio_ms=req.media.audio_ms,
        )

    async def relay(self, scope: Scope, receive: Any, send: Any, req: Request, api: str) -> None:
        # The key first: a client without one never has its body read.
        req.body_pending = True
        req.key = await self.authenticate(scope)
        req.account = int(req.key["account"])
        raw = await self.read_body(scope, receive, req)
        req.body = self.parse(raw, api)
        model = self.views.model(req.body["model"])
        if model is None or (api == "embeddings") != bool(model.get("embeddings")):
            raise RelayError(
                404,
                f"The model '{str(req.body['model'])[:100]}' does not exist or is not "
                f"available for this endpoint.",
                param="model",
                code="model_not_found",
            )
        ip = limits.client_ip(scope, self.trusted)
        limits.check(req.key, model["id"], ip, req.started)
        req.client_net = limits.coarse(ip)
        req.model = model
        req.price = prices.of_model(model)
        req.stream = api in ("chat", "messages") and bool(req.body.get("stream"))
        await self.hold(req, self.worst_case(req, len(raw), api))

        # From here on the client's disconnect cancels the upstream request at once.
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, req, task))
        try:
            await self.forward(scope, send, req, api)
        except asyncio.CancelledError:
            if not req.disconnected:
                raise
            task.uncancel()
            await self.finish(req, None, status="client_closed", http_status=499)
        finally:
            watcher.cancel()

    async def _watch(self, receive: Any, req: Request, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not req.done:
                    req.disconnected = True
                    task.cancel()
                return

    # ---- money and limits in Redis ----------------------------------------------------------

    async def hold(self, req: Request, nanos: int) -> None:
        key = req.key
        account = req.account
        cap = key.get("cap")
        if cap is not None:
            period, _, end = state.period_bounds(key.get("cap_period") or "month", req.started)
            req.cap_key = state.key_cap(account, key["id"], period)
            cap_ttl = state.period_ttl(end, req.started)
        else:
            req.cap_key = state.no_cap(account)
            cap_ttl = 0
        rpm, tpm = key.get("rpm"), key.get("tpm")
        minute = int(req.started // 60)
        req.tpm_key = state.rate_window(account, key["id"], "t", minute)
        req.hold_nanos = nanos
        status, requests_used, tokens_used = await self.scripts["reserve"](
            keys=[
                state.account(account),
                state.account_holds(account),
                state.hold_times(account),
                req.cap_key,
                state.rate_window(account, key["id"], "r", minute),
                req.tpm_key,
            ],
            args=[
                req.id,
                nanos,
                int(req.started),
                cap if cap is not None else -1,
                cap_ttl,
                rpm if rpm is not None else -1,
                tpm if tpm is not None else -1,
                req.tokens_counted,
                120,
            ],
        )
        reset = 60 - int(req.started) % 60
        if rpm is not None or tpm is not None:
            req.rate_headers = self._rate_headers(rpm, tpm, requests_used, tokens_used, reset)
        if status == 1:
            req.held = True
            return
        if status in (-3, -4):
            what = "requests" if status == -3 else "tokens"
            raise RelayError(
                429,
                f"Rate limit reached for this key: {what} per minute. Retry in {reset}s.",
                type=what,
                code="rate_limit_exceeded",
                headers=[(b"retry-after", str(reset).encode())],
            )
        if status == -2:
            raise RelayError(
                402,
                "This key's spend cap for the period is reached.",
                type="insufficient_quota",
                code="spend_cap_reached",
            )
        raise RelayError(
            402,
            "Your balance cannot cover this request's maximum cost. Top up, or lower max_tokens.",
            type="insufficient_quota",
            code="insufficient_quota",
        )

    @staticmethod
    def _rate_headers(
        rpm: int | None, tpm: int | None, requests: int, tokens: int, reset: int
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if rpm is not None:
            out += [
                (b"x-ratelimit-limit-requests", str(rpm).encode()),
                (b"x-ratelimit-remaining-requests", str(max(0, rpm - requests)).encode()),
                (b"x-ratelimit-reset-requests", f"{reset}s".encode()),
            ]
        if tpm is not None:
            out += [
                (b"x-ratelimit-limit-tokens", str(tpm).encode()),
                (b"x-ratelimit-remaining-tokens", str(max(0, tpm - tokens)).encode()),
                (b"x-ratelimit-reset-tokens", f"{reset}s".encode()),
            ]
        return out

    async def release(self, req: Request) -> None:
        req.held = False
        await self.scripts["release"](
            keys=[
                state.account(req.account),
                state.account_holds(req.account),
                state.hold_times(req.account),
                req.cap_key or state.no_cap(req.account),
            ],
            args=[req.id],
        )

    # ---- upstream -----------------------------------------------------------------------------

    async def forward(self, scope: Scope, send: Any, req: Request, api: str) -> None:
        """Try the model's routes in order; move on only while nothing reached the client."""
        error: RelayError | None = None
        for route in ordered_routes(req.model["routes"]):
            req.route = route
            exchange = make_exchange(
                api,
                req.body,
                route,
                stream=req.stream,
                max_output=int(req.model.get("max_output_tokens") or 8192),
                request_id=req.id,
            )
            if route.get("demo"):
                for name, value in scope["headers"]:
                    if name.startswith(b"x-demo-"):
                        exchange.headers[name.decode("latin-1")] = value.decode("latin-1")
            try:
                await self.attempt(send, req, exchange)
                return
            except Retryable as exc:
                error = exc.error
                log.info("route %s failed for %s: %s", route["provider"], req.id, error.message)
        assert error is not None
        raise error

    async def attempt(self, send: Any, req: Request, exchange: Exchange) -> None:
        config = self.config
        try:
            async with asyncio.timeout(config.first_byte_timeout) as deadline:
                async with self.http.post(
                    exchange.url, data=exchange.body, headers=exchange.headers
                ) as resp:
                    if resp.status != 200:
                        raw = await resp.read()
                        error = self.upstream_error(
                            resp.status, raw, resp.headers.get("Retry-After")
                        )
                        if resp.status == 429 or resp.status >= 500:
                            raise Retryable(error)
                        raise error
                    if req.stream:
                        await self.stream(send, req, resp, exchange, deadline)
                        return
                    req.ttfb = time.time()
                    deadline.reschedule(asyncio.get_running_loop().time() + config.chunk_timeout)
                    raw = await resp.read()
                    body, usage = exchange.response(raw)
                    deadline.reschedule(None)
                    # The answer does not wait for Redis's reply to the settle. The settle is
                    # sent in the loop's next step, before this relay can read the client's next
                    # request, and the lean script client keeps one connection's commands in
                    # order: that request is held after this one is settled (at worst, with
                    # redis-py's pool, it sees the larger hold: a 402, never an overspend).
                    # The usage event still leaves only once the settle has succeeded.
                    settled = asyncio.ensure_future(self.finish(req, usage))
                    try:
                        await self.respond(send, req, 200, body)
                    finally:
                        await settled
        except TimeoutError:
            if req.responded:
                await self._cut(send, req)
                return
            raise Retryable(
                RelayError(504, "The upstream timed out.", type="upstream_error")
            ) from None
        except aiohttp.ClientError as exc:
            if req.responded:
                await self._cut(send, req)
                return
            raise Retryable(
                RelayError(
                    502,
                    f"The upstream could not be reached ({type(exc).__name__}).",
                    type="upstream_error",
                )
            ) from None

    async def _cut(self, send: Any, req: Request) -> None:
        """The upstream failed after the stream began: bill what reached the client, end it.
        (After its last event it is only late to end the body: the answer was complete.)"""
        complete = req.translator is not None and req.translator.finished
        await self.finish(req, None, status="ok" if complete else "upstream_cut", http_status=200)
        req.done = True
        await send({"type": "http.response.body", "body": b""})

    def upstream_error(self, status: int, raw: bytes, retry_after: str | None) -> RelayError:
        message = scrub(openai_adapter.error_message(raw)) or "no details"
        if status in (400, 422):
            return RelayError(400, f"The upstream rejected the request: {message}")
        if status == 413:
            return RelayError(413, f"The upstream rejected the request size: {message}")
        if status == 429:
            headers = [(b"retry-after", retry_after.encode())] if retry_after else []
            return RelayError(
                429,
                f"The upstream is rate limiting: {message}",
                type="rate_limit_error",
                code="upstream_rate_limited",
                headers=headers,
            )
        return RelayError(502, f"The upstream answered {status}: {message}", type="upstream_error")

    async def stream(
        self,
        send: Any,
        req: Request,
        resp: aiohttp.ClientResponse,
        exchange: Exchange,
        deadline: asyncio.Timeout,
    ) -> None:
        """Headers go to the client only with the upstream's first bytes, so a route that
        fails before that can still be replaced by the next one."""
        loop = asyncio.get_running_loop()
        translator = req.translator = exchange.translator()
        content = resp.content
        first = await content.readany()
        if not first:
            raise Retryable(
                RelayError(502, "The upstream closed the stream at once.", type="upstream_error")
            )
        req.ttfb = time.time()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    (b"x-request-id", req.id.encode()),
                    *req.rate_headers,
                ],
            }
        )
        req.responded = True
        chunk_timeout = self.config.chunk_timeout
        data = first
        while data:
            out = translator.feed(data)
            req.chunks = translator.chunks
            if translator.finished:
                # The answer is complete: a client that hangs up from here on (SDKs do, as
                # soon as they read [DONE]) no longer cancels it. Reading on to the end of the
                # body keeps the upstream connection reusable.
                req.done = True
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            deadline.reschedule(loop.time() + chunk_timeout)
            data = await content.readany()
        deadline.reschedule(None)
        rest = translator.close()
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        usage = translator.usage
        status = "ok" if translator.finished or usage else "upstream_cut"
        await self.finish(req, usage, status=status)
        req.done = True
        await send({"type": "http.response.body", "body": b""})

    async def finish(
        self, req: Request, usage: Usage | None, *, status: str = "ok", http_status: int = 200
    ) -> None:
        """Settle the hold at the actual cost and queue the usage event. Without usage from the
        upstream, output that reached the client is billed as an estimate, never as zero."""
        if usage is None and req.translator is not None:
            usage = req.translator.usage  # a stream that ended early may have sent it already
        if usage is None:
            completion = req.chunks
            if completion == 0 and status != "ok":
                await self.release(req)
                return
            usage = Usage(
                prompt_tokens=math.ceil(req.prompt_estimate / 4),
                completion_tokens=completion,
                estimated=True,
            )
        assert req.price is not None
        reported = req.price.nanos(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            images=req.media.images,
            audio_ms=req.media.audio_ms,
        )
        # Never more than the hold: the balance and the key's cap were checked for that much
        # and no more. Above it (an upstream reporting more than the request could use), the
        # rest is the operator's to bear; the worker records it as unbilled.
        nanos = reported if reported <= req.hold_nanos else req.hold_nanos
        if reported > nanos:
            log.warning(
                "usage of %s (%s via %s) above its hold: %d > %d nano-dollars",
                req.id,
                req.model["id"],
                req.route["provider"],
                reported,
                nanos,
            )
        account = req.account
        await self.scripts["settle"](
            keys=[
                state.account(account),
                state.account_holds(account),
                state.account_unposted(account),
                state.hold_times(account),
                req.cap_key or state.no_cap(account),
                req.tpm_key or state.rate_window(account, 0, "t", 0),
            ],
            args=[
                req.id,
                nanos,
                usage.prompt_tokens + usage.completion_tokens - req.tokens_counted,
            ],
        )
        req.held = False
        now = time.time()
        self.reporter.add(
            {
                "request_id": req.id,
                "account": account,
                "key": req.key["id"],
                "model": req.model["id"],
                "provider": req.route["provider"],
                "upstream_model": req.route["upstream_model"],
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "images": req.media.images,
                "audio_ms": req.media.audio_ms,
                "cost": str(prices.amount(nanos)),
                "hold": str(prices.amount(req.hold_nanos)),
                "price_version": req.price.price.version,
                "estimated": usage.estimated,
                "status": status,
                "http_status": http_status,
                "streamed": req.stream,
                "started_at": req.started,
                "duration_ms": int((now - req.started) * 1000),
                "ttfb_ms": int((req.ttfb - req.started) * 1000) if req.ttfb else None,
                "client_net": req.client_net,
            }
        )


app = Relay()
