"""``POST /v1/messages/count_tokens``: Anthropic's token count, never billed.

The key is checked as for ``/v1/messages`` (revoked, expiry, model allowlist, IP allowlist),
and the request counts against the key's requests-per-minute limit (one request, no tokens):
nothing is held, charged or recorded. Where one of the model's routes is Anthropic-shaped, its
upstream's ``/v1/messages/count_tokens`` answers (with the provider's key and the upstream's
model name); where none is, or none answers in time, the relay's documented estimate
(:mod:`relay.adapters.anthropic.count`). The ``x-token-count`` response header says which:
``upstream`` or ``estimate``. The client's ``anthropic-beta`` header goes to the upstream with
the count (beta fields change what is counted). Errors are in Anthropic's shape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

from core import state

from . import http1, limits
from .adapters.anthropic import count
from .adapters.openai import error_message
from .errors import RelayError, scrub
from .request import ClientSide, Request, Scope

log = logging.getLogger("relay")

# The longest an upstream's count may take before the estimate answers instead.
COUNT_TIMEOUT = 15.0
ANTHROPIC_VERSION = "2023-06-01"


class Counting(ClientSide):
    """The token count (a part of :class:`relay.app.Relay`)."""

    http: http1.Client
    redis: aioredis.Redis
    trusted: list[limits.Network]

    async def count_tokens(self, scope: Scope, receive: Any, send: Any, req: Request) -> None:
        req.body_pending = True
        req.key = await self.authenticate(scope)
        req.account = int(req.key["account"])
        raw = await self.read_body(scope, receive, req)
        body = self.parse(raw, "count_tokens")
        model = self.views.model(body["model"])
        if model is None or model.get("embeddings"):
            raise RelayError(
                404,
                f"The model '{str(body['model'])[:100]}' does not exist or is not available "
                f"for this endpoint.",
                param="model",
                code="model_not_found",
            )
        ip = limits.client_ip(scope, self.trusted)
        limits.check(req.key, model["id"], ip, req.started)
        req.model = model
        await self._count_request(req)
        tokens = await self._upstream_count(scope, req, body)
        source = b"upstream"
        if tokens is None:
            tokens = count.estimate_input_tokens(body)
            source = b"estimate"
        await self.respond(
            send, req, 200, orjson.dumps({"input_tokens": tokens}), [(b"x-token-count", source)]
        )

    async def _count_request(self, req: Request) -> None:
        """One request against the key's requests-per-minute limit, where it has one."""
        rpm = req.key.get("rpm")
        if rpm is None:
            return
        minute = int(req.started // 60)
        window = state.rate_window(req.account, req.key["id"], "r", minute)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(window)
        pipe.expire(window, 120)
        used, _ = await pipe.execute()
        if int(used) > int(rpm):
            await self.redis.decr(window)
            reset = 60 - int(req.started) % 60
            raise RelayError(
                429,
                f"Rate limit reached for this key: requests per minute. Retry in {reset}s.",
                type="requests",
                code="rate_limit_exceeded",
                headers=[(b"retry-after", str(reset).encode())],
            )

    async def _upstream_count(self, scope: Scope, req: Request, body: dict[str, Any]) -> int | None:
        """The count of the first Anthropic-shaped route that gives one; None where no route
        is Anthropic-shaped or none answered (a 404, a 5xx, a timeout). The upstream's 400
        (the request is wrong) is the client's answer."""
        for route in req.model["routes"]:
            if route.get("shape") != "anthropic":
                continue
            req.route = route
            headers = {
                "x-api-key": route["api_key"],
                "anthropic-version": ANTHROPIC_VERSION,
                "Content-Type": "application/json",
                "Accept-Encoding": "identity",
            }
            # Beta features (context management, MCP servers...) change what is counted.
            beta = ",".join(
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"anthropic-beta"
            )
            if beta:
                headers["anthropic-beta"] = beta
            if route.get("demo"):
                for name, value in scope["headers"]:
                    if name.startswith(b"x-demo-"):
                        headers[name.decode("latin-1")] = value.decode("latin-1")
                headers["x-demo-provider"] = route["provider"]
            url = f"{route['base_url']}/messages/count_tokens"
            payload = count.count_request(body, route["upstream_model"])
            try:
                async with asyncio.timeout(min(COUNT_TIMEOUT, self.config.first_byte_timeout)):
                    async with self.http.post(url, data=payload, headers=headers) as resp:
                        raw = await resp.read()
                        status = resp.status
            except (TimeoutError, http1.ClientError) as exc:
                log.info("count_tokens via %s failed: %s", route["provider"], type(exc).__name__)
                continue
            if status == 200:
                try:
                    tokens = count.upstream_count(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    tokens = None
                if tokens is not None:
                    return tokens
                continue
            if status in (400, 413, 422):
                secret = "" if route.get("demo") else route.get("api_key", "")
                raise self.count_error(status, raw, secret)
            log.info("count_tokens via %s answered %d", route["provider"], status)
        return None

    @staticmethod
    def count_error(status: int, raw: bytes, secret: str) -> RelayError:
        message = scrub(error_message(raw), secret=secret) or "no details"
        code = 413 if status == 413 else 400
        return RelayError(code, f"The upstream rejected the request: {message}")
