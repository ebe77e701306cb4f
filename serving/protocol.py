"""uvicorn's httptools protocol with the deadlines it lacks.

uvicorn closes a kept-alive connection that stays idle after a response, but it sets no limit
on a new connection that sends nothing, on headers that arrive a byte at a time, or on a body
that never finishes: a few hundred such connections hold their sockets (and whatever was
buffered) for as long as the client likes. This protocol gives every request two deadlines:

* **headers**: from the connection's start (or the first byte of the next request on a kept-alive
  connection) until its headers are complete;
* **body**: from the end of the headers until the end of the body.

A request that misses one is answered ``408 Request Timeout`` (if it sent anything and nothing
was answered yet) and its connection is closed. A declared ``Content-Length`` above the
maximum is answered ``413`` before any of the body is read, when a maximum is set (the relay
sets none here: it answers 413 itself, in the OpenAI error shape).

Two more things for the relay's hot path, through :class:`_CycleTransport` (the transport as
each request's cycle sees it):

* **a whole response leaves in one write**: uvicorn writes a response's head as soon as the app
  sends ``http.response.start`` and its body on ``http.response.body``, two writes for every
  answer (two segments, two wake-ups of the client). The head is held back until the first
  body write of the same pass of the event loop, and both go together.
* **a disconnect callback** in the scope, ``scope["extensions"]["tokenpapa.disconnect"]["watch"]``:
  a function taking a callable, called (once, on the event loop) if the client hangs up before
  the response is complete, or None to forget it. The relay uses it instead of a task per
  request that waits on ``receive()`` for ``http.disconnect``; under another server it keeps
  that task.

The settings come from the environment, read once when the module is imported (each worker
process imports it): ``TP_HTTP_HEADER_TIMEOUT`` (seconds, default 10), ``TP_HTTP_BODY_TIMEOUT``
(default 60) and ``TP_HTTP_MAX_BODY_BYTES`` (0: no limit here).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


HEADER_TIMEOUT = _number("TP_HTTP_HEADER_TIMEOUT", 10.0)
BODY_TIMEOUT = _number("TP_HTTP_BODY_TIMEOUT", 60.0)
MAX_BODY_BYTES = int(_number("TP_HTTP_MAX_BODY_BYTES", 0))

# The scope extension of the disconnect callback (the relay names it too: neither imports the
# other).
DISCONNECT = "tokenpapa.disconnect"


class _CycleTransport:
    """The connection's transport as one request's cycle sees it: the cycle's first write (a
    response's head) is held until its next write, which carries it, or until the end of the
    event loop's pass (a stream's head does not wait for its first chunk); every other write
    goes straight through. And the request's disconnect callback (:meth:`watch`).

    It refers to neither the cycle nor the scope (both refer to it): no reference cycle for
    the collector to find, request after request."""

    __slots__ = ("_first", "_flow", "_gone", "_handle", "_held", "_loop", "_transport", "lost")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, flow: FlowControl
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._flow = flow
        self._first = True
        self._held = b""
        self._handle: asyncio.Handle | None = None
        self._gone: Callable[[], Any] | None = None
        # The client hung up before the response was complete.
        self.lost = False

    def watch(self, callback: Callable[[], Any] | None) -> None:
        """Call ``callback`` if the client hangs up before the response is complete (at once,
        on the loop's next pass, if it already has); None forgets it. Reading is resumed, as
        uvicorn's ``receive()`` does while it waits, so a hang-up is seen."""
        if callback is not None and self.lost:
            self._gone = None
            self._loop.call_soon(callback)
            return
        self._gone = callback
        if callback is not None:
            self._flow.resume_reading()

    def disconnected(self) -> None:
        """The protocol's word that the client hung up before the response was complete."""
        self.lost = True
        callback, self._gone = self._gone, None
        if callback is not None:
            callback()

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = data
            self._handle = self._loop.call_soon(self._flush)
            return
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
            held, self._held = self._held, b""
            if len(data) < 65536:
                self._transport.write(held + data)
            else:  # not copied
                self._transport.writelines((held, data))
            return
        self._transport.write(data)

    def _flush(self) -> None:
        self._handle = None
        held, self._held = self._held, b""
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        # "idle" (nothing of a request yet), "headers" (some of them arrived), "body".
        self._phase = "idle"
        self._body_bytes = 0

    # ---- the deadlines ------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        unanswered = self._phase == "headers" or (
            self._phase == "body" and self.cycle is not None and not self.cycle.response_started
        )
        if unanswered:
            if self.cycle is not None and self._phase == "body":
                self.cycle.keep_alive = False
            self._refuse(408, b"Request Timeout")
        else:  # nothing was sent, or an answer is already under way: just hang up
            self.transport.close()

    def _refuse(self, status: int, message: bytes) -> None:
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(message),
                    b"connection: close\r\n\r\n",
                    message,
                ]
            )
        )
        self.transport.close()

    # ---- protocol and parser callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(HEADER_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        cycle = self.cycle
        if cycle is not None and cycle.disconnected:
            transport = cycle.transport
            if isinstance(transport, _CycleTransport):
                transport.disconnected()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "headers"
        if self._deadline is None:  # a kept-alive connection's next request begins
            self._arm(HEADER_TIMEOUT)

    def on_headers_complete(self) -> None:
        self._disarm()
        if MAX_BODY_BYTES:
            for name, value in self.headers:
                if name == b"content-length":
                    try:
                        too_large = int(value) > MAX_BODY_BYTES
                    except ValueError:
                        too_large = False  # the parser refuses a malformed length itself
                    if too_large:
                        self._refuse(413, b"Request Entity Too Large")
                        return
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            wrapped = _CycleTransport(self.transport, self.loop, self.flow)
            cycle.transport = wrapped  # type: ignore[assignment]
            # (The app's task is created, not yet run: it sees the scope as it is now.)
            # (ASGI's extensions are dicts: this one holds the function as "watch".)
            extension: dict[object, object] = {"watch": wrapped.watch}
            extensions = {**self.scope.get("extensions", {}), DISCONNECT: extension}
            self.scope["extensions"] = extensions
        self._phase = "body"
        self._body_bytes = 0
        if not self.pipeline:  # a pipelined request waits, unread, for the one before it
            self._arm(BODY_TIMEOUT)

    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():  # after a refusal above
            return
        self._body_bytes += len(body)
        if MAX_BODY_BYTES and self._body_bytes > MAX_BODY_BYTES:  # chunked, no length given
            self._disarm()
            if self.cycle.response_started:
                self.transport.close()
            else:
                self.cycle.keep_alive = False
                self._refuse(413, b"Request Entity Too Large")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._phase = "idle"
        if not self.transport.is_closing():
            super().on_message_complete()
