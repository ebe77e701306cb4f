"""One relayed request: what it has learnt so far (:class:`Request`), and the relay's side
that faces its client (:class:`ClientSide`): the key, the body within the relay's budget, the
JSON, the answer, and noticing when the client hangs up."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable
from typing import Any

import orjson

from core import keyformat

from . import media, prices
from .adapters import anthropic, completions, responses
from .config import Config
from .errors import RelayError, bad_request, unauthorized
from .exchange_types import StreamTranslator
from .routing import Plan
from .views import Views

Scope = dict[str, Any]

# The scope extension by which ``python -m serving`` calls back on a client's disconnect
# (serving.protocol names it too: neither imports the other).
DISCONNECT = "tokenpapa.disconnect"

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


class ClientGone(Exception):
    """The client hung up while its body was being read."""


class Request:
    """What one relayed request has learnt so far; enough to bill it however it ends."""

    __slots__ = (
        "account",
        "api",
        "attempts",
        "body",
        "body_pending",
        "body_reserved",
        "cap_key",
        "chunks",
        "client_net",
        "disconnected",
        "done",
        "finish_reason",
        "held",
        "hold_nanos",
        "id",
        "key",
        "media",
        "member_cap_key",
        "model",
        "original",
        "plan",
        "price",
        "prompt_estimate",
        "rate_headers",
        "responded",
        "route",
        "routes",
        "started",
        "status",
        "stream",
        "tokens_counted",
        "tpm_key",
        "translator",
        "ttfb",
        "upstream_done",
        "upstream_sent",
    )

    def __init__(self) -> None:
        # 96 bits from OpenSSL's generator (fork-safe, seeded by the kernel), not os.urandom:
        # its getrandom() call lets go of the GIL, and taking it back waits for the usage
        # thread whenever that is publishing a batch (py-spy: 5.5 % of the relay's samples at
        # concurrency 32 were on that line; RAND_bytes keeps the GIL, ~0.6 µs).
        self.id = "req_" + ssl.RAND_bytes(12).hex()
        self.api = ""
        # Routes that failed before the one that answered: [provider, upstream model, outcome].
        self.attempts: list[list[str]] = []
        self.started = time.time()
        self.ttfb: float | None = None
        self.status = 0  # the HTTP status sent to the client (0: none was)
        # The last upstream attempt: when it was sent, and when its answer ended (0: it did not).
        self.upstream_sent = 0.0
        self.upstream_done = 0.0
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
        self.finish_reason = ""  # of a whole answer (a stream's is its translator's)
        self.prompt_estimate = 0
        self.tokens_counted = 0
        self.account: int = 0
        self.key: dict[str, Any] = {}
        self.model: dict[str, Any] = {}
        self.route: dict[str, Any] = {}
        self.routes: list[dict[str, Any]] = []  # the model's routes that take the request
        self.price: prices.NanoPrice | None = None
        # The (model, route) tries of a request with routing preferences (relay.routing);
        # None on the plain path (the model's routes, in the operator's order).
        self.plan: Plan | None = None
        self.body: dict[str, Any] = {}
        # A Responses request as the client sent it (``body`` is its chat translation).
        self.original: dict[str, Any] | None = None
        self.cap_key = ""
        self.member_cap_key: str | None = None
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


class ClientSide:
    """Reading the client's request and answering it (a part of :class:`relay.app.Relay`)."""

    config: Config
    views: Views
    body_bytes: int  # request bodies in flight, against config.body_budget_bytes

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

    @staticmethod
    def presented_key(scope: Scope) -> str:
        """The key from ``Authorization: Bearer`` (OpenAI SDKs) or ``x-api-key`` (Anthropic's);
        empty when none was sent."""
        secret = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    secret = token.strip()
                    break
            elif name == b"x-api-key":
                secret = value.decode("latin-1").strip()
        return secret

    async def authenticate(self, scope: Scope) -> dict[str, Any]:
        secret = self.presented_key(scope)
        if not secret:
            raise unauthorized("Missing API key: send it as 'Authorization: Bearer tp-sk-...'.")
        if not keyformat.is_well_formed(secret):
            raise unauthorized("Incorrect API key provided: it is not a well-formed tp-sk- key.")
        record = await self.views.key(secret)
        if record is None:
            raise unauthorized("Incorrect API key provided, or the key was revoked.")
        return record

    async def check_presented_key(self, scope: Scope) -> None:
        """For what is public (the model list): no key is fine, a wrong or revoked one is a 401,
        so a client that tests its connection with it learns of a typo."""
        if self.presented_key(scope):
            await self.authenticate(scope)

    def parse(self, raw: bytes, api: str) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("The request body is not valid JSON (UTF-8).") from None
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        model = body.get("model")
        if model is None and isinstance(body.get("models"), list) and body["models"]:
            # OpenRouter's fallback list without a model: its first is the model.
            model = body["model"] = body["models"][0]
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required and must be a string.", param="model")
        if api == "messages":
            anthropic.validate_anthropic_request(body)
        elif api == "count_tokens":
            anthropic.validate_anthropic_request(body, count_only=True)
        elif api == "completions":
            completions.validate_completions_request(body)
        elif api == "responses":
            responses.validate_responses_request(body)
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
        req.status = status
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def watch_disconnect(
        self, scope: Scope, receive: Any, req: Request, task: asyncio.Task[Any]
    ) -> Callable[[], Any]:
        """From here on the client's disconnect cancels ``task`` (the request's) at once; returns
        what stops the watch. Served by ``python -m serving`` the server calls back (the scope's
        ``tokenpapa.disconnect`` extension); elsewhere a task waits on ``receive()``."""
        extension = (scope.get("extensions") or {}).get(DISCONNECT)
        if extension is not None:
            watch = extension["watch"]
            watch(functools.partial(self._gone, req, task))
            return functools.partial(watch, None)
        watcher = asyncio.create_task(self._watch(receive, req, task))
        return watcher.cancel

    @staticmethod
    def _gone(req: Request, task: asyncio.Task[Any]) -> None:
        if not req.done:
            req.disconnected = True
            task.cancel()

    async def _watch(self, receive: Any, req: Request, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone(req, task)
                return
