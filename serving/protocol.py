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

The settings come from the environment, read once when the module is imported (each worker
process imports it): ``TP_HTTP_HEADER_TIMEOUT`` (seconds, default 10), ``TP_HTTP_BODY_TIMEOUT``
(default 60) and ``TP_HTTP_MAX_BODY_BYTES`` (0: no limit here).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


HEADER_TIMEOUT = _number("TP_HTTP_HEADER_TIMEOUT", 10.0)
BODY_TIMEOUT = _number("TP_HTTP_BODY_TIMEOUT", 60.0)
MAX_BODY_BYTES = int(_number("TP_HTTP_MAX_BODY_BYTES", 0))


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
        super().on_headers_complete()
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
