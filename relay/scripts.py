"""A lean Redis client for the relay's hot path: running the balance protocol's Lua scripts.

redis-py's asyncio client spends ~250 µs of CPU on one EVALSHA (a pool with locks, a timeout
context per command, layered parsing); the same bytes over a bare connection cost a sixth of
that. The relay runs two scripts per request, so this client does only that: ``EVALSHA``
(falling back to ``EVAL`` when Redis answers ``NOSCRIPT``), pipelined over one connection.
Redis answers a connection's commands in order, so replies go to waiting callers first in,
first out; a caller that gave up (cancelled) still has its reply read and dropped, which keeps
every later reply matched. Replies are parsed by hiredis.

Failures raise redis-py's own exceptions, so callers treat them as before (a Redis outage is a
503 from the relay): ``ConnectionError`` when Redis cannot be reached or the connection drops
(every command in flight on it fails; the next command reconnects), ``TimeoutError`` when the
oldest command in flight has had no reply for ``timeout`` seconds (the connection is then
dropped, like redis-py's ``socket_timeout``), ``ResponseError`` for an error reply.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, cast

import hiredis
import redis.exceptions
from redis.connection import parse_url

Arg = str | bytes | int | float

# The URL parts this client understands; anything else (TLS, unix sockets, ...) uses redis-py.
_SUPPORTED = frozenset({"host", "port", "db", "username", "password"})


def _parse(url: str) -> dict[str, Any]:
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return options


def supports(url: str) -> bool:
    try:
        return set(_parse(url)) <= _SUPPORTED
    except ValueError:
        return False


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP (an array of bulk strings), encoded as redis-py encodes it, by
    hiredis's C encoder (a third of the time of the same loop in Python here)."""
    try:
        # (hiredis's stubs type the tuple as one of one item, and the result as Any.)
        packed: bytes = hiredis.pack_command(cast(Any, tuple(args)))
    except TypeError as exc:  # a bool, None or another type: redis-py's error, naming it
        wrong = [a for a in args if isinstance(a, bool) or not isinstance(a, Arg)]
        named = f"Invalid input of type: {type(wrong[0]).__name__!r}." if wrong else str(exc)
        raise redis.exceptions.DataError(named) from None
    return packed


class _Link(asyncio.Protocol):
    """One connection; its waiters are the callers whose replies have not arrived, in order."""

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        self.waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._pending: list[bytes] | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiters = self.waiters
        try:
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is _INCOMPLETE:
                    return
                if not waiters:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                waiter = waiters.popleft()[0]
                if not waiter.done():
                    waiter.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.fail(redis.exceptions.ConnectionError(f"Protocol error from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.exceptions.ConnectionError("Connection closed by server."))

    # ---- use -------------------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed or self.transport is None:
            raise redis.exceptions.ConnectionError("Connection closed.")
        future: asyncio.Future[Any] = self.loop.create_future()
        idle = not self.waiters
        self.waiters.append((future, self.loop.time() + self.timeout))
        if idle and self._pending is None:
            self.transport.write(packed)  # nothing in flight: no reason to wait
        elif self._pending is None:
            # Under load, commands sent in one pass of the event loop leave in one write.
            self._pending = [packed]
            self.loop.call_soon(self._flush)
        else:
            self._pending.append(packed)
        if self._timer is None:
            self._timer = self.loop.call_at(self.waiters[0][1], self._check)
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and self.transport is not None:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def _check(self) -> None:
        """One timer per connection, not per command: it watches the oldest waiter."""
        self._timer = None
        if not self.waiters:
            return
        deadline = self.waiters[0][1]
        if self.loop.time() >= deadline:
            self.fail(redis.exceptions.TimeoutError("Timeout reading from Redis."))
        else:
            self._timer = self.loop.call_at(deadline, self._check)

    def fail(self, error: Exception) -> None:
        """Drop the connection; every caller still waiting gets ``error``."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        while self.waiters:
            waiter = self.waiters.popleft()[0]
            if not waiter.done():
                waiter.set_exception(error)


_INCOMPLETE = object()


class ScriptClient:
    """Runs commands (in practice EVALSHA) over one pipelined connection, reconnecting on
    demand. Not thread-safe: one event loop."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        options = _parse(url)
        self.host: str = options.get("host") or "localhost"
        self.port: int = int(options.get("port") or 6379)
        self.db: int = int(options.get("db") or 0)
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._link: _Link | None = None
        self._lock = asyncio.Lock()

    async def execute(self, *args: Arg) -> Any:
        link = self._link
        if link is None or link.closed:
            link = await self._connect()
        reply = await link.send(pack(args))
        if isinstance(reply, hiredis.ReplyError):
            raise _response_error(str(reply))
        return reply

    async def execute_asking(self, *args: Arg) -> Any:
        """``ASKING`` and then the command, adjacent on one connection: how a Redis Cluster
        client follows an ``ASK`` redirection (``relay.cluster``)."""
        link = self._link
        if link is None or link.closed:
            link = await self._connect()
        _, reply = await asyncio.gather(link.send(pack(("ASKING",))), link.send(pack(args)))
        if isinstance(reply, hiredis.ReplyError):
            raise _response_error(str(reply))
        return reply

    async def aclose(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.fail(redis.exceptions.ConnectionError("Client closed."))

    async def _connect(self) -> _Link:
        async with self._lock:
            link = self._link
            if link is not None and not link.closed:
                return link
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, link = await loop.create_connection(
                        lambda: _Link(self.timeout), self.host, self.port
                    )
            except (OSError, TimeoutError) as exc:
                raise redis.exceptions.ConnectionError(
                    f"Error connecting to {self.host}:{self.port}. {exc}"
                ) from exc
            try:
                if self.password is not None:
                    auth: tuple[str, ...] = (
                        (self.username, self.password) if self.username else (self.password,)
                    )
                    await self._handshake(link, "AUTH", *auth)
                if self.db:
                    await self._handshake(link, "SELECT", self.db)
            except BaseException:
                link.fail(redis.exceptions.ConnectionError("Handshake failed."))
                raise
            self._link = link
            return link

    @staticmethod
    async def _handshake(link: _Link, *args: Arg) -> None:
        reply = await link.send(pack(args))
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if "WRONGPASS" in message or "NOAUTH" in message or "invalid password" in message:
                raise redis.exceptions.AuthenticationError(message)
            raise redis.exceptions.ConnectionError(f"{args[0]!r} failed: {message}")


def _response_error(message: str) -> redis.exceptions.ResponseError:
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    return redis.exceptions.ResponseError(message)


class Executor(Protocol):
    """What a :class:`Script` runs on: :class:`ScriptClient`, or ``relay.cluster``'s client."""

    async def execute(self, *args: Arg) -> Any: ...


class Script:
    """A Lua script called as redis-py's registered scripts are: ``await script(keys=,
    args=)``. Sent by SHA; if Redis does not have it (a restart, SCRIPT FLUSH), sent whole
    with EVAL, which also caches it for the next call."""

    def __init__(self, client: Executor, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.client.execute("EVAL", self.source, len(keys), *keys, *args)
