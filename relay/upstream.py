"""Forwarding one request upstream: the model's routes in order, one attempt per route until
something reaches the client (failover), the answer whole or streamed, and its end: the hold
settled at the actual cost and the usage event queued."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from core import state

from . import http1, prices, sticky
from .adapters import openai as openai_adapter
from .breaker import Breakers
from .errors import RelayError, scrub
from .exchange import make_exchange
from .exchange_types import Exchange
from .holds import Holds
from .reporter import Reporter
from .request import ClientSide, Request, Scope
from .usage import Usage

log = logging.getLogger("relay")


class Retryable(Exception):
    """An upstream failure before the first byte: the next route may be tried."""

    def __init__(self, error: RelayError) -> None:
        super().__init__(error.message)
        self.error = error


def outcome(error: RelayError) -> str:
    """How a failed attempt counts in its route's figures (billing.routestats): a 429 and a
    request the upstream refused are not the route's failures; a 5xx, an upstream unreachable
    or timed out (and one that refused our provider key: a 502 here) are."""
    if error.status == 429:
        return "rate_limited"
    if error.status >= 500:
        return "upstream_error"
    return "client_error"


def ordered_routes(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lowest priority number first; within one priority, a weighted random order."""
    if len(routes) == 1:
        return routes
    ordered: list[dict[str, Any]] = []
    for priority in sorted({r.get("priority", 0) for r in routes}):
        group = [r for r in routes if r.get("priority", 0) == priority]
        while group:
            weights = [max(1, int(r.get("weight", 1))) for r in group]
            pick = random.choices(range(len(group)), weights=weights)[0]  # noqa: S311 - load spread
            ordered.append(group.pop(pick))
    return ordered


class Upstream(ClientSide, Holds):
    """The upstream side of a request (a part of :class:`relay.app.Relay`)."""

    http: http1.Client
    redis: aioredis.Redis
    reporter: Reporter
    breakers: Breakers

    async def forward(self, scope: Scope, send: Any, req: Request, api: str) -> None:
        """Try the model's routes in order (or the tries of a request with routing preferences,
        :mod:`relay.routing`); move on only while nothing reached the client."""
        error: RelayError | None = None
        breakers = self.breakers
        model = req.model
        plan = req.plan
        pin = None
        if plan is None:
            routes = ordered_routes(req.routes)
            if len(routes) > 1 and self.config.sticky_ttl > 0:
                pin = await self._pinned(scope, req, routes)
                if pin is not None:
                    routes = pin[1]
            tries = [(model, route) for route in routes]
        else:
            tries = plan.tries
            if tries[0][0] is not model:  # the first model has no route the preferences admit
                model = tries[0][0]
                self._serve_as(req, model)
            if plan.pinnable > 1 and self.config.sticky_ttl > 0:
                # The pin chooses only among the first routes the preferences rank alike.
                first = [route for _, route in tries[: plan.pinnable]]
                pin = await self._pinned(scope, req, first)
                if pin is not None:
                    tries = [(model, route) for route in pin[1]] + tries[plan.pinnable :]
        uniform = plan is None and prices.uniform(model)
        for serving, route in tries:
            if serving is not model:
                self._serve_as(req, serving)
                model = serving
            if not uniform:
                req.price = prices.of_route(model, route)
            own = bool(route.get("byok"))
            # The account's own key failing says nothing of the route: no breaker for it.
            health = (
                ""
                if own
                else state.route_id(model["id"], route["provider"], route["upstream_model"])
            )
            probe = False
            if breakers.open and not own:
                due = breakers.due(health)
                if due is False or (due and not await breakers.lease(health)):
                    continue  # open: skipped without a connection (see relay.breaker)
                probe = bool(due)
            req.route = route
            exchange = make_exchange(
                api,
                req.body,
                route,
                stream=req.stream,
                max_output=int(model.get("max_output_tokens") or 8192),
                request_id=req.id,
                original=req.original,
            )
            if route.get("demo"):
                for name, value in scope["headers"]:
                    if name.startswith(b"x-demo-"):
                        exchange.headers[name.decode("latin-1")] = value.decode("latin-1")
                # The demo upstream follows this provider's rules (simulators.llm.providers).
                exchange.headers["x-demo-provider"] = route["provider"]
            verdict: bool | None = None  # did the upstream fail? None: no answer either way
            try:
                await self.attempt(send, req, exchange)
                verdict = False
                if pin is not None and model is tries[0][0]:
                    await self._pin(pin[0], route)
                return
            except Retryable as exc:
                error = exc.error
                verdict = outcome(error) == "upstream_error"
                if not own:
                    req.attempts.append(
                        [route["provider"], route["upstream_model"], outcome(error)]
                    )
                log.info(
                    "route %s%s failed for %s: %s",
                    route["provider"],
                    " (the account's own key)" if own else "",
                    req.id,
                    error.message,
                )
            except RelayError as exc:
                # The upstream refused this request (no other route would take it).
                verdict = False
                if not req.responded:
                    if not own:
                        req.attempts.append(
                            [route["provider"], route["upstream_model"], outcome(exc)]
                        )
                    self.report_failure(req)
                raise
            finally:
                if not own:
                    await self._health(health, verdict, probe)
        if error is None:
            # Every route's breaker is open: fail at once rather than wait on dead upstreams.
            raise RelayError(
                503,
                "Every route of this model is failing; retry shortly.",
                type="upstream_error",
                code="upstream_unavailable",
                headers=[(b"retry-after", str(breakers.retry_after()).encode())],
            )
        self.report_failure(req)
        raise error

    @staticmethod
    def _serve_as(req: Request, model: dict[str, Any]) -> None:
        """The next tries are of a fallback model (the ``models`` list): the request is that
        model's from here on (its answer names it, its usage is billed at its price); the
        attempts of the models before it keep their model's id (a 4th element, read by
        billing.routestats), so that they count against the routes that failed."""
        given_up = str(req.model["id"])
        for attempt in req.attempts:
            if len(attempt) == 3:
                attempt.append(given_up)
        req.model = model
        req.body["model"] = model["id"]
        if req.original is not None:
            req.original["model"] = model["id"]

    async def _pinned(
        self, scope: Scope, req: Request, routes: list[dict[str, Any]]
    ) -> tuple[str, list[dict[str, Any]]] | None:
        """(the conversation's key, ``routes`` with its pinned route first); None when the
        request names no conversation (see :mod:`relay.sticky`). Redis failing costs the
        conversation its pin, never the request."""
        session = None
        for name, value in scope["headers"]:
            if name == sticky.SESSION_HEADER:
                session = value
                break
        key = sticky.conversation(req.account, req.model["id"], req.body, session)
        if key is None:
            return None
        try:
            token = await self.redis.get(key)
        except redis.exceptions.RedisError:
            return None
        if token:
            text = token.decode() if isinstance(token, bytes) else str(token)
            routes = sticky.pin_first(routes, text)
        return key, routes

    async def _pin(self, key: str, route: dict[str, Any]) -> None:
        """Pins the route that answered (again: each use restarts the idle expiry). Sent
        after the answer has gone: the client does not wait for it."""
        try:
            await self.redis.set(key, sticky.route_token(route), ex=self.config.sticky_ttl)
        except redis.exceptions.RedisError as exc:
            log.info("could not pin a route: %s", type(exc).__name__)

    async def _health(self, route: str, failed: bool | None, probe: bool) -> None:
        """Tell the route's breaker how the attempt went: a success is counted here (sent with
        the next poll), a failure or a probe's outcome at once."""
        if failed is None:
            if probe:
                await self.breakers.release(route)
        elif failed or probe:
            await self.breakers.record(route, failed=failed, probe=probe)
        else:
            self.breakers.succeeded(route)

    def report_failure(self, req: Request) -> None:
        """A request no route served costs nothing and leaves no usage row; its attempts still
        count in each route's figures (billing.routestats)."""
        self.reporter.add(
            {
                "kind": "failed",
                "request_id": req.id,
                "model": req.model["id"],
                "started_at": req.started,
                "attempts": req.attempts,
            }
        )

    async def attempt(self, send: Any, req: Request, exchange: Exchange) -> None:
        config = self.config
        req.upstream_sent, req.upstream_done = time.time(), 0.0
        try:
            async with asyncio.timeout(config.first_byte_timeout) as deadline:
                async with self.http.post(
                    exchange.url, data=exchange.body, headers=exchange.headers
                ) as resp:
                    if resp.status != 200:
                        raw = await resp.read()
                        own = bool(req.route.get("byok"))
                        error = self.upstream_error(
                            resp.status,
                            raw,
                            resp.headers.get("Retry-After"),
                            # (the demo upstream's key is no secret, and a common word)
                            secret="" if req.route.get("demo") else req.route.get("api_key", ""),
                        )
                        if own:
                            error.message = (
                                f"With your own {req.route['provider']} key: {error.message}"
                            )
                        if resp.status == 429 or resp.status >= 500:
                            raise Retryable(error)
                        if own and resp.status in (401, 402, 403, 404):
                            # The account's key was refused, is out of credit or may not use
                            # the model: the operator's routes may still serve ("prioritised").
                            raise Retryable(error)
                        raise error
                    if req.stream:
                        await self.stream(send, req, resp, exchange, deadline)
                        return
                    req.ttfb = time.time()
                    deadline.reschedule(asyncio.get_running_loop().time() + config.chunk_timeout)
                    raw = await resp.read()
                    req.upstream_done = time.time()
                    body, usage = exchange.response(raw)
                    req.finish_reason = exchange.finish_reason
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
        except http1.ClientError as exc:
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
        translator = req.translator
        complete = translator is not None and translator.finished
        await self.finish(req, None, status="ok" if complete else "upstream_cut", http_status=200)
        req.done = True
        tail = translator.cut() if translator is not None and not complete else b""
        await send({"type": "http.response.body", "body": tail})

    def upstream_error(
        self, status: int, raw: bytes, retry_after: str | None, *, secret: str = ""
    ) -> RelayError:
        message = scrub(openai_adapter.error_message(raw), secret=secret) or "no details"
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
        resp: http1.Response,
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
        req.status = 200
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
        req.upstream_done = time.time()
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
        assert req.price is not None  # noqa: S101 - narrows for mypy: priced before it is held
        nanos = self.charge(req, usage)
        await self.settle(req, nanos, usage)
        req.held = False
        now = time.time()
        translator = req.translator
        self.reporter.add(
            {
                "request_id": req.id,
                "account": req.account,
                "key": req.key["id"],
                "model": req.model["id"],
                "provider": req.route["provider"],
                "upstream_model": req.route["upstream_model"],
                # prompt, completion, cached, cache-write, reasoning and audio tokens
                **usage.counts(),
                "images": req.media.images,
                "audio_ms": req.media.audio_ms,
                "cost": str(prices.amount(nanos)),
                "hold": str(prices.amount(req.hold_nanos)),
                "price_version": req.price.price.version,
                "estimated": usage.estimated,
                "status": status,
                "http_status": http_status,
                "streamed": req.stream,
                "finish_reason": (
                    translator.finish_reason if translator is not None else req.finish_reason
                ),
                "started_at": req.started,
                "duration_ms": int((now - req.started) * 1000),
                "ttfb_ms": int((req.ttfb - req.started) * 1000) if req.ttfb else None,
                "client_net": req.client_net,
                # The routes that failed before this one (each [provider, model, outcome]).
                "attempts": req.attempts,
                # Served with the account's own provider key: ``cost`` is this per cent of the
                # price (the worker computes it again with the same percentage).
                **(
                    {"byok": True, "fee_percent": str(self.config.byok_fee_percent)}
                    if req.route.get("byok")
                    else {}
                ),
            }
        )
