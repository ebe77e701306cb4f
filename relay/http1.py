"""A lean HTTP/1.1 client for the relay's hot path: the request to the upstream.

aiohttp's client spends about 250 µs of CPU on one small POST here (a URL object and a
multidict of headers per request, a payload writer with compression hooks, a stream reader,
tracing signals, a timer context); the same exchange over a bare asyncio protocol with
httptools' parser (llhttp, the parser uvicorn runs on the relay's other side) costs about a fifth
of that. The relay makes one such request for every request it serves, so this client does only
what an upstream API needs, the way aiohttp did it for the relay:

- ``POST`` with a body of bytes, over ``http`` or ``https`` (the system's CA store unless a
  context is given; SNI and the hostname checked). No redirects, cookies or proxies.
- Keep-alive connections pooled per origin and reused newest first; one is dropped when the
  server closes it, when either side says ``Connection: close``, or after ``idle_timeout``
  seconds unused. At most ``limit`` connections are in use at once; further requests wait.
- The answer's status and headers, then its body whole (``read``) or as it arrives
  (``content.readany``). Content-Length, chunked and read-until-close bodies are decoded by
  llhttp; content codings are not (the relay asks for ``identity``). While more than
  ``HIGH_WATER`` bytes wait unread, the connection stops reading, so an upstream faster than
  the client never piles a long stream up in memory.

A connection goes back to the pool only when its answer was read to the end; anything else (an
error, a cancelled request, a body left unread) closes it. Failures raise :class:`ClientError`:
:class:`ConnectError` when no connection could be made (:class:`ConnectTimeout`, also a
``TimeoutError``, when that took longer than ``connect_timeout``), :class:`ServerDisconnected`
when the connection dropped before the answer ended, :class:`ProtocolError` for an answer that
is not HTTP/1.1, :class:`InvalidRequest` for a URL or header this client will not send.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Set by this client from the URL and the body; a caller's own would contradict them.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class ClientError(Exception):
    """The request failed below HTTP's status codes (any status is an answer, not an error)."""


class ConnectError(ClientError):
    """No connection to the upstream could be made."""


class ConnectTimeout(ConnectError, TimeoutError):
    """Connecting took longer than the client's ``connect_timeout``."""


class ServerDisconnected(ClientError):
    """The connection dropped before the answer ended."""


class ProtocolError(ClientError):
    """The upstream's answer is not valid HTTP/1.1."""


class InvalidRequest(ClientError, ValueError):
    """A URL or header this client will not send (an unknown scheme, a line break...)."""


class Headers:
    """An answer's headers: :meth:`get` by name, case-insensitively (the first value)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default


class _Origin:
    """Where a URL's requests go: the pool's key, how to connect, the Host header."""

    __slots__ = ("authorization", "host", "host_header", "key", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int, authorization: bytes) -> None:
        self.key = f"{scheme}://{host}:{port}"
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        shown = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            shown = f"{shown}:{port}"
        self.host_header = shown.encode("idna" if not shown.isascii() else "ascii")
        self.authorization = authorization


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``response`` is the answer it is reading, if any."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.complete:
            self.close()  # bytes nobody asked for: this connection can't be trusted again
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(ProtocolError("The upstream switched protocols."))
            self.close()
        except httptools.HttpParserError as exc:
            response.fail(ProtocolError(f"The upstream's answer is not valid HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.complete:
            if response.until_close:
                response.finish()  # a body without a length ends when the connection does
            else:
                response.fail(ServerDisconnected("The upstream closed the connection."))

    # ---- httptools' callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.raw_headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        response = cast(Response, self.response)
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # "100 Continue" and the like: the answer is still to come
            response.raw_headers = []
            response.informational = True
            return
        response.status = status
        # (llhttp knows it from here to the body's end, not after)
        response.keep_alive = self.parser.should_keep_alive()
        response.until_close = not any(
            key.lower() in (b"content-length", b"transfer-encoding")
            for key, _ in response.raw_headers
        ) and status not in (204, 304)
        response.wake()

    def on_body(self, body: bytes) -> None:
        response = cast(Response, self.response)
        response.chunks.append(body)
        response.buffered += len(body)
        if response.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        response.wake()

    def on_message_complete(self) -> None:
        response = cast(Response, self.response)
        if response.informational:
            response.informational = False
            return
        response.finish()

    # ---- use -------------------------------------------------------------------------------

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def reusable(self) -> bool:
        response = self.response
        return (
            not self.closed
            and response is not None
            and response.complete
            and response.error is None
            and not response.until_close
            and not response.chunks
            and response.keep_alive
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """The upstream's answer: ``status`` and ``headers`` once the request is entered, then the
    body by :meth:`read` or ``content.readany()``."""

    def __init__(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.loop = loop
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.informational = False
        self.until_close = False
        self.keep_alive = False
        self.error: ClientError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def headers(self) -> Headers:
        return Headers(self.raw_headers)

    @property
    def content(self) -> Response:
        """aiohttp's spelling (``resp.content.readany()``), kept for its readers."""
        return self

    # ---- fed by the connection ------------------------------------------------------------

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def finish(self) -> None:
        self.complete = True
        self.wake()

    def fail(self, error: ClientError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.wake()

    async def _wait(self) -> None:
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # ---- read by the caller -----------------------------------------------------------------

    async def started(self) -> None:
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def readany(self) -> bytes:
        """What has arrived of the body (waiting for some), or ``b""`` at its end."""
        chunks = self.chunks
        while not chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self.buffered = 0
        connection = self.connection
        if connection.paused:
            connection.resume()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        while True:
            data = await self.readany()
            if not data:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(data)


class _Exchange:
    """``async with client.post(...) as response``: the connection is the request's until the
    block ends, then back in the pool (the answer read to its end) or closed."""

    __slots__ = ("client", "connection", "data", "headers", "response", "url")

    def __init__(self, client: Client, url: str, data: bytes, headers: Mapping[str, str]) -> None:
        self.client = client
        self.url = url
        self.data = data
        self.headers = headers
        self.connection: _Connection | None = None
        self.response: Response | None = None

    async def __aenter__(self) -> Response:
        client = self.client
        origin, target = client.target(self.url)
        head = client.head(origin, target, self.headers, len(self.data))
        await client.slots.acquire()
        try:
            connection = self.connection = await client.connection(origin)
            response = self.response = Response(connection, client.loop)
            connection.response = response
            transport = cast(asyncio.Transport, connection.transport)
            data = self.data
            if len(data) < 65536:
                transport.write(head + data)
            else:
                transport.writelines((head, data))
            await response.started()
        except BaseException:
            self._done(keep=False)
            raise
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done(keep=exc_type is None)

    def _done(self, *, keep: bool) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            if keep and connection.reusable():
                self.client.park(connection)
            else:
                connection.response = None
                connection.close()
        self.client.slots.release()


class Client:
    """A pool of keep-alive connections to any number of origins (one per relay process)."""

    def __init__(
        self,
        *,
        limit: int = 100,
        connect_timeout: float = 10.0,
        idle_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(limit)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._ssl = ssl_context
        self._idle: dict[str, list[_Connection]] = {}
        self._targets: dict[str, tuple[_Origin, bytes]] = {}
        self._closed = False

    def post(self, url: str, *, data: bytes, headers: Mapping[str, str]) -> _Exchange:
        return _Exchange(self, url, data, headers)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    # ---- the parts of a request -----------------------------------------------------------

    def target(self, url: str) -> tuple[_Origin, bytes]:
        """The URL's origin and request target, parsed once per URL."""
        known = self._targets.get(url)
        if known is not None:
            return known
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidRequest(f"Not a URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise InvalidRequest(f"Not an http(s) URL: {url!r}")
        authorization = b""
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = base64.b64encode(credentials.encode())
        origin = _Origin(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], authorization)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        if not path.isascii() or any(c in path for c in " \r\n"):
            raise InvalidRequest("The URL's path must be ASCII without spaces or line breaks.")
        if len(self._targets) >= 1024:
            self._targets.clear()
        known = self._targets[url] = (origin, path.encode("ascii"))
        return known

    @staticmethod
    def head(origin: _Origin, target: bytes, headers: Mapping[str, str], length: int) -> bytes:
        lines = [b"POST %s HTTP/1.1\r\nHost: %s\r\n" % (target, origin.host_header)]
        append = lines.append
        authorized = False
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise InvalidRequest(f"The header {name!r} holds a line break or a colon.")
            lowered = name.lower()
            if lowered in _OWN_HEADERS:
                continue
            authorized = authorized or lowered == "authorization"
            try:
                append(f"{name}: {value}\r\n".encode("latin-1"))
            except UnicodeEncodeError:
                raise InvalidRequest(f"The header {name!r} is not Latin-1.") from None
        if origin.authorization and not authorized:
            append(b"Authorization: Basic %s\r\n" % origin.authorization)
        append(b"Content-Length: %d\r\n\r\n" % length)
        return b"".join(lines)

    async def connection(self, origin: _Origin) -> _Connection:
        """The newest idle connection to the origin that is still open, or a new one."""
        idle = self._idle.get(origin.key)
        if idle:
            horizon = self.loop.time() - self.idle_timeout
            while idle and idle[0].idle_since < horizon:  # the oldest first: past their time
                idle.pop(0).close()
            while idle:
                connection = idle.pop()
                if not connection.closed:
                    return connection
        if self._closed:
            raise ConnectError("The client is closed.")
        context = None
        if origin.tls:
            context = self._ssl
            if context is None:
                context = self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout) as deadline:
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(origin),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError:
            if deadline.expired():
                raise ConnectTimeout(
                    f"Connecting to {origin.key} took over {self.connect_timeout:g} s."
                ) from None
            raise
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"Cannot connect to {origin.key}: {exc}") from exc
        return connection

    def park(self, connection: _Connection) -> None:
        connection.response = None
        if self._closed:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.origin.key, []).append(connection)
