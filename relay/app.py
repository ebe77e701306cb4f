"""The relay: an ASGI app serving the OpenAI HTTP API on /v1 (no Django, no SQL).

Per request: check the key's checksum, look it up by digest (cache in front of Redis), resolve
the model, hold the worst-case cost atomically in Redis, forward with one pooled client,
stream bytes back as they arrive, read the usage, settle the hold to the actual cost, and queue
one usage event. Run with ``uvicorn relay.app:app``.

The parts, one module each: :mod:`relay.request` (the request and its client's side),
:mod:`relay.holds` (the money held in Redis), :mod:`relay.upstream` (routes, attempts,
streaming, the bill), :mod:`relay.routing` (a request's provider preferences and fallback
models); here the ASGI app: lifespan, routing and the shape of errors.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from core import jsonlog, state
from core import routing as core_routing
from core.network import coarse

from . import byok, http1, limits, listing, metrics, routing, scripts
from .adapters import anthropic, completions, quirks, responses
from .breaker import Breakers
from .cluster import ClusterScriptClient
from .config import Config
from .counting import Counting
from .errors import RelayError, bad_request
from .reporter import Reporter
from .request import ClientGone, Request, Scope
from .upstream import Upstream, ordered_routes
from .views import Views

log = logging.getLogger("relay")

# Allocations between the young generation's collections (gc.set_threshold; Python's is 700).
GC_THRESHOLD = 20_000

# The balance scripts' lean clients (relay.scripts, relay.cluster).
Lean = scripts.ScriptClient | ClusterScriptClient

# The relayed API's paths: what the request metrics count.
RELAYED = frozenset(
    (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/responses",
    )
)


# OpenRouter's model-name suffixes and the sort each stands for.
SHORTCUTS = {"floor": "price", "nitro": "throughput"}


def reasons(model: dict[str, Any]) -> bool:
    """Whether the model takes a reasoning effort: its supported parameters say so, or,
    where they say nothing, one of its routes is a reasoning model by its provider's rules."""
    listed = model.get("supported_parameters")
    if listed:
        return "reasoning" in listed
    return any(quirks.of_route(route).reasoning for route in model["routes"])


class Relay(Upstream, Counting):
    """The ASGI app; its parts are :class:`~relay.request.ClientSide`,
    :class:`~relay.holds.Holds`, :class:`~relay.upstream.Upstream` and
    :class:`~relay.counting.Counting`."""

    def __init__(self, config: Config | None = None) -> None:
        self._config = config
        self.config: Config
        self.redis: aioredis.Redis
        self.views: Views
        self.metrics: metrics.Exposition
        self.reporter: Reporter
        self.http: http1.Client
        self.scripts = {}
        self.script_client: Lean | None = None
        self.trusted: list[limits.Network] = []
        # Bytes of request bodies being read or held by requests in flight, against
        # config.body_budget_bytes: what many large bodies at once can pin in memory.
        self.body_bytes = 0

    # ---- lifespan -------------------------------------------------------------------------

    async def startup(self) -> None:
        self.config = self._config or Config.from_env()
        self.metrics = metrics.Exposition(self.config.spool_dir, self.config.metrics_token)
        self.trusted = limits.networks(list(self.config.trusted_proxies))
        self.redis, self.script_client = self.connect_redis()
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
        self.views = Views(self.redis, self.config.pepper, self.config.secrets_keys)
        await self.views.start()
        self.breakers = Breakers(self.redis, self.config.breaker)
        await self.breakers.start()
        self.reporter = Reporter(
            self.config.broker_url,
            self.config.spool_dir,
            batch_size=self.config.batch_size,
            interval=self.config.batch_interval,
            replay_interval=self.config.replay_interval,
        )
        await self.reporter.start()
        self.http = http1.Client(
            limit=self.config.upstream_connections,
            connect_timeout=self.config.connect_timeout,
        )
        # What start-up built (modules, the catalog, clients) lives as long as the process: out
        # of the collector's way, so a full collection scans only what requests left behind
        # instead of ~57,000 start-up objects too (a 10-20 ms pause here, timed by gc.collect()).
        gc.collect()
        gc.freeze()
        # A request's objects are freed by their reference counts as it ends; the collector
        # looks for cycles, and by default it runs after every 700 net allocations: hundreds of
        # times a second under load, each pass walking what requests in flight hold. Every
        # 20,000 allocations instead: the relay's CPU per request 4-5% lower (0.296 / 0.288 ms
        # against 0.278 / 0.279 in interleaved pairs of the bench's CPU phase), its RSS flat in
        # the 10-minute soak (tests/bench/README.md). The older generations' thresholds stay.
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])

    def connect_redis(self) -> tuple[aioredis.Redis, Lean | None]:
        """redis-py's client, and the lean one the balance scripts run on (on every request)
        where the URL is one it speaks (TCP, optional password and db), else None (redis-py's
        then runs them). On a Redis Cluster: redis-py's cluster client, and the lean cluster
        client that sends each script call to the master of its account's slot."""
        config = self.config
        if config.redis_cluster:
            cluster: Any = aioredis.RedisCluster.from_url(
                config.redis_url,
                max_connections=config.redis_connections,
                socket_connect_timeout=2,
                socket_timeout=5,
            )
            return cluster, ClusterScriptClient(config.redis_url, connect_timeout=2, timeout=5)
        # A bounded pool that waits for a free connection: a burst of requests queues for
        # Redis instead of opening connections without limit (or failing past the limit).
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis_url,
            max_connections=config.redis_connections,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
        )
        lean = (
            scripts.ScriptClient(config.redis_url, connect_timeout=2, timeout=5)
            if scripts.supports(config.redis_url)
            else None
        )
        return aioredis.Redis(connection_pool=pool), lean

    async def shutdown(self) -> None:
        await self.http.close()
        await self.reporter.stop()
        await self.breakers.stop()
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
        jsonlog.REQUEST_ID.set(req.id)  # each request runs in a task of its own (a context)
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path == "/v1/chat/completions":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="chat")
            elif path == "/v1/embeddings":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="embeddings")
            elif path == "/v1/responses":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="responses")
            elif path == "/v1/messages":
                req.api = "messages"  # errors in Anthropic's shape from here on
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="messages")
            elif path == "/v1/messages/count_tokens":
                req.api = "messages"
                self._allow(method, "POST")
                await self.count_tokens(scope, receive, send, req)
            elif path == "/v1/completions":
                self._allow(method, "POST")
                await self.relay(scope, receive, send, req, api="completions")
            elif path == "/v1/models":
                self._allow(method, "GET")
                await self.check_presented_key(scope)
                await self.respond(send, req, 200, self.views.listing.body)
            elif path.startswith("/v1/models/"):
                self._allow(method, "GET")
                await self.check_presented_key(scope)
                body = await self.model_info(path[len("/v1/models/") :])
                await self.respond(send, req, 200, body)
            elif path in ("/healthz", "/v1/healthz"):
                await self.respond(send, req, 200, b'{"status":"ok"}')
            elif path == "/readyz":
                status, body = await self.readiness()
                await self.respond(send, req, status, body)
            elif path == "/metrics":
                await self.scrape(scope, send, req)
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
            if path in RELAYED:
                metrics.observe(req, time.time())

    async def readiness(self) -> tuple[int, bytes]:
        """Ready: Redis answers a PING (within a second; a cluster, that it serves every
        slot) and a catalog is loaded."""
        try:
            async with asyncio.timeout(1):
                redis_ok = bool(await self.redis.ping())
                if self.config.redis_cluster:
                    info = await self.redis.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
                    redis_ok = redis_ok and info.get("cluster_state") == "ok"
        except (TimeoutError, redis.exceptions.RedisError, OSError):
            redis_ok = False
        checks = {"redis": redis_ok, "catalog": bool(self.views.models)}
        ready = all(checks.values())
        body = {"status": "ready" if ready else "unavailable", "checks": checks}
        return (200 if ready else 503), orjson.dumps(body)

    async def scrape(self, scope: Scope, send: Any, req: Request) -> None:
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not self.metrics.allowed(authorization):
            raise RelayError(401, "A valid metrics token is required.", type="authentication_error")
        body = self.metrics.render()
        req.responded = req.done = True
        req.status = 200
        headers = [(b"content-type", metrics.CONTENT_TYPE), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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

    async def model_info(self, name: str) -> bytes:
        """``/v1/models/{id}`` or ``/v1/models/{id}/endpoints``; ids hold slashes, so the whole
        rest of the path is tried as an id first."""
        model = self.views.model(name)
        if model is not None:
            return self.views.listing.objects[model["id"]]
        base, _, last = name.rpartition("/")
        model = self.views.model(base) if last == "endpoints" else None
        if model is None:
            raise RelayError(404, "The model does not exist.", code="model_not_found")
        raw = await self.redis.hget(state.ROUTE_FIGURES, model["id"])
        return listing.endpoints(model, orjson.loads(raw) if raw else None)

    # ---- the relayed request ----------------------------------------------------------------

    def _model(self, name: str, api: str) -> dict[str, Any]:
        model = self.views.model(name)
        if model is None or (api == "embeddings") != bool(model.get("embeddings")):
            raise self._not_found(name)
        return model

    @staticmethod
    def _not_found(name: str) -> RelayError:
        return RelayError(
            404,
            f"The model '{str(name)[:100]}' does not exist or is not available for this endpoint.",
            param="model",
            code="model_not_found",
        )

    def _shortcut(self, req: Request, api: str, given: Any) -> tuple[dict[str, Any], Any]:
        """(the model, the provider object with its ``sort``) for ``<model>:floor`` or
        ``<model>:nitro``; the model's 404 otherwise (a ``sort`` the request gives wins)."""
        name = str(req.body["model"])
        base, _, suffix = name.rpartition(":")
        sort = SHORTCUTS.get(suffix)
        if sort is None or not base or not (given is None or isinstance(given, dict)):
            raise self._not_found(name)
        model = self._model(base, api)
        req.body["model"] = base
        if req.original is not None:
            req.original["model"] = base
        return model, {"sort": sort, **(given or {})}

    @staticmethod
    def _routes(
        model: dict[str, Any], body: dict[str, Any], api: str, shape: str
    ) -> list[dict[str, Any]]:
        if api == "completions":
            return completions.routes_for(model, body)
        return quirks.routes_for(model, body, shape)

    async def plan(
        self,
        req: Request,
        api: str,
        shape: str,
        ip: str | None,
        given: Any,
        fallbacks: Any,
        defaults: dict[str, Any] | None,
    ) -> routing.Plan:
        """The tries of a request with routing preferences (see :mod:`relay.routing`): a 400
        for preferences that are not valid, a 404 when they leave no route."""
        try:
            own = core_routing.parse(given) if given is not None else None
            names = core_routing.parse_models(fallbacks) if fallbacks is not None else []
        except core_routing.PreferenceError as exc:
            raise bad_request(exc.message, param=exc.param, code="invalid_routing") from None
        if own:
            known = self.views.providers
            for name in ("order", "only", "ignore"):
                unknown = [slug for slug in own.get(name, ()) if slug not in known]
                if unknown:
                    raise bad_request(
                        f"'provider.{name}' names unknown providers: {', '.join(unknown)[:200]}.",
                        param=f"provider.{name}",
                        code="unknown_provider",
                    )
        prefs = core_routing.Preferences.of(core_routing.merge(defaults, own))
        models = [(req.model, req.routes)]
        refused: list[str] = []
        for name in names:
            model = self._model(name, api)
            if any(m is model for m, _ in models):
                continue
            limits.check(req.key, model["id"], ip, req.started)
            try:
                models.append((model, self._routes(model, req.body, api, shape)))
            except RelayError as exc:  # a fallback that cannot take the request is passed over
                refused.append(f"{model['id']}: {exc.message}")
        figures: dict[str, routing.Figures | None] = {}
        if prefs.sort in ("throughput", "latency"):
            ids = [m["id"] for m, _ in models]
            raw = await self.redis.hmget(state.ROUTE_FIGURES, ids)
            figures = {i: routing.hour_figures(r) for i, r in zip(ids, raw, strict=True)}
        tries: list[routing.Try] = []
        pinnable = 0
        for model, routes in models:
            kept, why = routing.admissible(model, routes, prefs)
            if not kept:
                refused.append(f"{model['id']}: {why}")
                continue
            arranged, alike = routing.arrange(
                model, ordered_routes(kept), prefs, figures.get(model["id"])
            )
            if not tries:
                pinnable = alike
            tries.extend((model, route) for route in arranged)
        if not tries:
            # Each refusal reads "<model id>: <why>"; one model's needs no name twice.
            if len(refused) == 1:
                named, _, reasons_ = refused[0].partition(": ")
                about = f"model {named}"
            else:
                named = ", ".join(r.partition(": ")[0] for r in refused)
                about, reasons_ = f"any of the models {named}", "; ".join(refused)
            raise RelayError(
                404,
                f"No route for {about} matches your provider preferences: {reasons_}.",
                param="provider",
                code="no_route_matches_preferences",
            )
        return routing.Plan(tries, pinnable)

    @staticmethod
    def _own_keys(req: Request, credentials: byok.Credentials) -> None:
        """The account brings its own key for a provider of the request's routes: those routes
        are tried with it first (or only: :func:`relay.byok.arrange`), as a plan of tries
        that no conversation pin reorders."""
        plan = req.plan
        tries = (
            plan.tries if plan is not None else [(req.model, r) for r in ordered_routes(req.routes)]
        )
        arranged = byok.arrange(tries, credentials)
        if arranged is not None:
            req.plan = routing.Plan(arranged, 1)

    async def relay(self, scope: Scope, receive: Any, send: Any, req: Request, api: str) -> None:
        # The key first: a client without one never has its body read.
        req.body_pending = True
        req.key = await self.authenticate(scope)
        req.account = int(req.key["account"])
        raw = await self.read_body(scope, receive, req)
        body = req.body = self.parse(raw, api)
        # Routing preferences never reach an upstream. Without any (the common case) this is
        # three dict look-ups, and the plain path below.
        given = body.pop("provider", None)
        fallbacks = body.pop("models", None)
        defaults = req.key.get("routing")
        if api == "responses":
            # Translated to chat once: routes, limits and the hold see a chat request.
            req.original = body
            body = req.body = responses.responses_request_to_chat(body)
        shape = "chat" if api == "responses" else api
        try:
            model = self._model(body["model"], api)
        except RelayError:
            # OpenRouter's shortcuts: "<model>:floor" sorts by price, "<model>:nitro" by
            # throughput (looked for only once the name is not a model's).
            model, given = self._shortcut(req, api, given)
        ip = limits.client_ip(scope, self.trusted)
        limits.check(req.key, model["id"], ip, req.started)
        req.client_net = coarse(ip)
        req.model = model
        # A parameter the model or its provider does not take is refused before any hold.
        if api == "responses" and "reasoning_effort" in body and not reasons(model):
            # Responses clients (Codex) send a reasoning effort whatever the model: where the
            # model does not reason it is dropped, not refused.
            del body["reasoning_effort"]
        req.routes = self._routes(model, body, api, shape)
        if given is not None or fallbacks is not None or defaults:
            req.plan = await self.plan(req, api, shape, ip, given, fallbacks, defaults)
        # (Most accounts bring no key: a cached empty answer costs no await.)
        views = self.views
        credentials = views.credentials.get(req.account) if views.live else None
        if credentials is None:
            credentials = await views.byok(req.account)
        if credentials:
            self._own_keys(req, credentials)
        req.stream = shape in ("chat", "messages", "completions") and bool(req.body.get("stream"))
        await self.hold(req, self.worst_case(req, len(raw), shape))
        metrics.HOLDS.inc()

        # From here on the client's disconnect cancels the upstream request at once.
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - narrows for mypy: handle() runs in a task
        unwatch = self.watch_disconnect(scope, receive, req, task)
        try:
            await self.forward(scope, send, req, api)
        except asyncio.CancelledError:
            if not req.disconnected:
                raise
            task.uncancel()
            await self.finish(req, None, status="client_closed", http_status=499)
        finally:
            unwatch()
            metrics.HOLDS.dec()


app = Relay()
