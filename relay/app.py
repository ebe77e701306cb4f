"""The relay: an ASGI app serving the OpenAI HTTP API on /v1 (no Django, no SQL).

Per request: check the key's checksum, look it up by digest (cache in front of Redis), resolve
the model, hold the worst-case cost atomically in Redis, forward with one pooled client,
stream bytes back as they arrive, read the usage, settle the hold to the actual cost, and queue
one usage event. Run with ``uvicorn relay.app:app``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from billing.pricing import Price, cost, to_nanos
from keys import format as keyformat

from . import state
from .adapters import openai as openai_adapter
from .config import Config
from .errors import RelayError, bad_request, scrub, unauthorized
from .reporter import Reporter
from .usage import Usage
from .views import Views

log = logging.getLogger("relay")

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


class ClientGone(Exception):
    pass


class Request:
    """What one relayed request has learnt so far; enough to bill it however it ends."""

    __slots__ = (
        "account",
        "body",
        "chunks",
        "disconnected",
        "done",
        "held",
        "id",
        "key",
        "model",
        "price",
        "prompt_estimate",
        "responded",
        "route",
        "started",
        "stream",
        "ttfb",
    )

    def __init__(self) -> None:
        self.id = "req_" + secrets.token_hex(12)
        self.started = time.time()
        self.ttfb: float | None = None
        self.held = False
        self.done = False
        self.responded = False
        self.disconnected = False
        self.stream = False
        self.chunks = 0
        self.prompt_estimate = 0
        self.account: int = 0
        self.key: dict[str, Any] = {}
        self.model: dict[str, Any] = {}
        self.route: dict[str, Any] = {}
        self.price: Price | None = None
        self.body: dict[str, Any] = {}


def _positive_int(body: dict[str, Any], name: str, *, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_request(f"'{name}' must be an integer >= {minimum}.", param=name)
    return value


class Relay:
    def __init__(self, config: Config | None = None) -> None:
        self._config = config
        self.config: Config
        self.redis: aioredis.Redis
        self.views: Views
        self.reporter: Reporter
        self.http: aiohttp.ClientSession
        self.scripts: dict[str, Any] = {}

    # ---- lifespan -------------------------------------------------------------------------

    async def startup(self) -> None:
        self.config = self._config or Config.from_env()
        self.redis = aioredis.Redis.from_url(self.config.redis_url)
        for name, source in (
            ("reserve", state.RESERVE),
            ("settle", state.SETTLE),
            ("release", state.RELEASE),
        ):
            self.scripts[name] = self.redis.register_script(source)
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
            # No total timeout: a long generation is fine as long as bytes keep coming.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.config.connect_timeout,
                sock_read=self.config.read_timeout,
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def shutdown(self) -> None:
        await self.http.close()
        await self.reporter.stop()
        await self.views.stop()
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
                await self.relay(scope, receive, send, req, kind="chat")
            elif path == "/v1/embeddings":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, kind="embeddings")
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
            if req.held:
                await self.release(req)
            if not req.responded:
                await self.respond(send, req, exc.status, exc.body(), exc.headers)
        except ClientGone:
            if req.held:
                await self.release(req)
        except Exception:
            log.exception("unexpected error in request %s", req.id)
            if req.held:
                await self.release(req)
            if not req.responded:
                err = RelayError(500, "Internal error.", type="server_error")
                await self.respond(send, req, 500, err.body())

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
        return {
            "object": "list",
            "data": [self.model_object(m) for m in self.views.models.values()],
        }

    async def respond(
        self, send: Any, req: Request, status: int, body: bytes, extra: Headers | None = None
    ) -> None:
        headers: Headers = [
            (b"content-type", JSON),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", req.id.encode()),
        ]
        if extra:
            headers.extend(extra)
        req.responded = req.done = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # ---- the relayed request ----------------------------------------------------------------

    async def read_body(self, scope: Scope, receive: Any) -> bytes:
        limit = self.config.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise bad_request("Invalid Content-Length.") from None
                if declared > limit:
                    raise RelayError(413, f"Request body exceeds {limit} bytes.", code="too_large")
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
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def authenticate(self, scope: Scope) -> dict[str, Any]:
        secret = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    secret = token.strip()
                break
        if not secret:
            raise unauthorized("Missing API key: send it as 'Authorization: Bearer tp-sk-...'.")
        if not keyformat.is_well_formed(secret):
            raise unauthorized("Invalid API key format.")
        record = await self.views.key(secret)
        if record is None:
            raise unauthorized("Invalid or revoked API key.")
        return record

    def parse(self, raw: bytes, kind: str) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("The request body is not valid JSON (UTF-8).") from None
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required and must be a string.", param="model")
        if kind == "chat":
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

    def worst_case(self, req: Request, raw_size: int, kind: str) -> int:
        """Nano-dollars to hold: the body's size in bytes bounds its tokens (capped by the
        context window), plus the most output the request allows, at catalog prices."""
        assert req.price is not None
        window = req.model.get("context_window") or raw_size
        req.prompt_estimate = min(raw_size, window)
        completion = 0
        if kind == "chat":
            body = req.body
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            completion = (limit or req.model.get("max_output_tokens") or 8192) * (
                body.get("n") or 1
            )
        worst = cost(req.price, prompt_tokens=req.prompt_estimate, completion_tokens=completion)
        return to_nanos(worst)

    async def relay(self, scope: Scope, receive: Any, send: Any, req: Request, kind: str) -> None:
        raw = await self.read_body(scope, receive)
        req.key = await self.authenticate(scope)
        req.account = int(req.key["account"])
        req.body = self.parse(raw, kind)
        model = self.views.model(req.body["model"])
        if model is None or (kind == "embeddings") != bool(model.get("embeddings")):
            raise RelayError(
                404,
                f"The model '{str(req.body['model'])[:100]}' does not exist or is not "
                f"available for this endpoint.",
                param="model",
                code="model_not_found",
            )
        req.model = model
        req.route = model["routes"][0]
        req.price = Price.from_dict(model["price"])
        req.stream = kind == "chat" and bool(req.body.get("stream"))
        await self.hold(req, self.worst_case(req, len(raw), kind))

        # From here on the client's disconnect cancels the upstream request at once.
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, req, task))
        try:
            await self.forward(scope, send, req, kind)
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

    async def hold(self, req: Request, nanos: int) -> None:
        result = await self.scripts["reserve"](
            keys=[state.account(req.account), state.account_holds(req.account), state.HOLD_TIMES],
            args=[req.id, nanos, int(req.started), state.hold_member(req.account, req.id)],
        )
        if result != 1:
            raise RelayError(
                402,
                "Your balance cannot cover this request's maximum cost. Top up, or lower "
                "max_tokens.",
                type="insufficient_quota",
                code="insufficient_quota",
            )
        req.held = True

    async def release(self, req: Request) -> None:
        req.held = False
        await self.scripts["release"](
            keys=[state.account(req.account), state.account_holds(req.account), state.HOLD_TIMES],
            args=[req.id, state.hold_member(req.account, req.id)],
        )

    async def forward(self, scope: Scope, send: Any, req: Request, kind: str) -> None:
        route = req.route
        url = f"{route['base_url']}/{'chat/completions' if kind == 'chat' else 'embeddings'}"
        payload = openai_adapter.request_body(req.body, route["upstream_model"], stream=req.stream)
        headers = openai_adapter.headers(route["api_key"])
        if route.get("demo"):
            for name, value in scope["headers"]:
                if name.startswith(b"x-demo-"):
                    headers[name.decode("latin-1")] = value.decode("latin-1")
        try:
            async with self.http.post(url, data=payload, headers=headers) as resp:
                req.ttfb = time.time()
                if resp.status != 200:
                    raw = await resp.read()
                    raise self.upstream_error(resp.status, raw, resp.headers.get("Retry-After"))
                if req.stream:
                    await self.stream(send, req, resp)
                else:
                    raw = await resp.read()
                    try:
                        usage = openai_adapter.usage_of(orjson.loads(raw))
                    except orjson.JSONDecodeError:
                        raise RelayError(
                            502, "The upstream sent an invalid response.", type="upstream_error"
                        ) from None
                    await self.finish(req, usage)
                    await self.respond(send, req, 200, raw)
        except TimeoutError:
            raise RelayError(504, "The upstream timed out.", type="upstream_error") from None
        except aiohttp.ClientError as exc:
            if req.responded:
                # Cut off after the stream began: bill what reached the client, end the stream.
                await self.finish(req, None, status="upstream_cut", http_status=200)
                req.done = True
                await send({"type": "http.response.body", "body": b""})
                return
            raise RelayError(
                502,
                f"The upstream could not be reached ({type(exc).__name__}).",
                type="upstream_error",
            ) from None

    def upstream_error(self, status: int, raw: bytes, retry_after: str | None) -> RelayError:
        message = scrub(openai_adapter.error_message(raw)) or "no details"
        if status == 400 or status == 422:
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

    async def stream(self, send: Any, req: Request, resp: aiohttp.ClientResponse) -> None:
        wants_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    (b"x-request-id", req.id.encode()),
                ],
            }
        )
        req.responded = True
        usage: Usage | None = None
        finished = False
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
            if b"\n\n" not in buffer:
                continue
            *events, buffer = buffer.split(b"\n\n")
            out = []
            for event in events:
                if not event:
                    continue
                if event.startswith(b"data: [DONE]"):
                    finished = True
                elif b'"usage":{' in event or b'"usage": {' in event:
                    data = orjson.loads(event[event.index(b"{") :])
                    usage = openai_adapter.usage_of(data) or usage
                    if not wants_usage and not data.get("choices"):
                        continue  # the usage-only chunk the client did not ask for
                else:
                    req.chunks += 1
                out.append(event)
            if out:
                out.append(b"")
                await send(
                    {"type": "http.response.body", "body": b"\n\n".join(out), "more_body": True}
                )
        if buffer.strip():
            await send({"type": "http.response.body", "body": buffer, "more_body": True})
        status = "ok" if finished or usage else "upstream_cut"
        await self.finish(req, usage, status=status)
        req.done = True
        await send({"type": "http.response.body", "body": b""})

    async def finish(
        self, req: Request, usage: Usage | None, *, status: str = "ok", http_status: int = 200
    ) -> None:
        """Settle the hold at the actual cost and queue the usage event. Without usage from the
        upstream, output that reached the client is billed as an estimate, never as zero."""
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
        amount = cost(
            req.price,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        )
        await self.scripts["settle"](
            keys=[
                state.account(req.account),
                state.account_holds(req.account),
                state.account_unposted(req.account),
                state.HOLD_TIMES,
            ],
            args=[req.id, to_nanos(amount), state.hold_member(req.account, req.id)],
        )
        req.held = False
        now = time.time()
        self.reporter.add(
            {
                "request_id": req.id,
                "account": req.account,
                "key": req.key["id"],
                "model": req.model["id"],
                "provider": req.route["provider"],
                "upstream_model": req.route["upstream_model"],
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "cost": str(amount),
                "price_version": req.price.version,
                "estimated": usage.estimated,
                "status": status,
                "http_status": http_status,
                "streamed": req.stream,
                "started_at": req.started,
                "duration_ms": int((now - req.started) * 1000),
                "ttfb_ms": int((req.ttfb - req.started) * 1000) if req.ttfb else None,
            }
        )


app = Relay()
