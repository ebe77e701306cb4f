"""The servers' HTTP protocol (``serving.protocol``) at its byte boundary: a transport that
records what the protocol writes, so that how many writes an answer takes can be seen. The
same protocol serves real sockets in test_slow_clients.py and behind every relay test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from serving.protocol import GuardedHttpToolsProtocol

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """What a socket's transport would be given, kept in order, one entry per write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.writes.append(b"".join(bytes(d) for d in list_of_data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def served(app: App, *requests: bytes, settle: float = 0.05) -> RecordingTransport:
    """Feed the requests (a GET by default) to a fresh connection and return what was written
    back."""

    async def run() -> RecordingTransport:
        config = Config(app=app, lifespan="off", log_level="critical", http="httptools")
        config.load()
        protocol = GuardedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for data in requests or (GET,):
            protocol.data_received(data)
        await asyncio.sleep(settle)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


def whole(body: bytes = b'{"ok": true}', status: int = 200) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def test_a_whole_answer_leaves_in_one_write() -> None:
    transport = served(whole())
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 12" in head
    assert body == b'{"ok": true}'


@pytest.mark.parametrize("size", [0, 300_000])
def test_empty_and_large_bodies_join_their_head(size: int) -> None:
    transport = served(whole(b"x" * size))
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"\r\n\r\n" + b"x" * size)


def test_a_streams_head_leaves_before_its_first_chunk_is_ready() -> None:
    seen_before_chunk: list[list[bytes]] = []
    transport_box: list[RecordingTransport] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await asyncio.sleep(0.01)  # the upstream's first byte is on its way
        seen_before_chunk.append(list(transport_box[0].writes))
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    original = RecordingTransport.__init__

    def remember(self: RecordingTransport) -> None:
        original(self)
        transport_box.append(self)

    RecordingTransport.__init__ = remember  # type: ignore[method-assign]
    try:
        transport = served(app)
    finally:
        RecordingTransport.__init__ = original  # type: ignore[method-assign]
    assert len(seen_before_chunk[0]) == 1 and seen_before_chunk[0][0].startswith(b"HTTP/1.1 200")
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]


def test_a_head_request_gets_its_head() -> None:
    transport = served(whole(), HEAD)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")


def test_pipelined_requests_are_answered_in_order() -> None:
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        count += 1
        await whole(f"answer {count}".encode())(scope, receive, send)

    transport = served(app, GET + HEAD + GET)
    joined = b"".join(transport.writes)
    assert joined.count(b"HTTP/1.1 200 OK") == 3
    assert joined.index(b"answer 1") < joined.index(b"answer 3")
    assert b"answer 2" not in joined  # a HEAD answer has no body


def test_expect_100_continue_is_written_at_once_and_the_answer_after() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        await whole(message["body"])(scope, receive, send)

    transport = served(
        app,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        b"hello",
    )
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b"\r\n\r\nhello")


def test_an_answer_with_connection_close_is_sent_before_the_close() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-length", b"2"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": b"no"})

    transport = served(app)
    assert transport.closed and len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 401") and transport.writes[0].endswith(b"no")


def test_an_app_that_fails_before_answering_gets_a_500() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    transport = served(app)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 500")
    assert transport.writes[0].endswith(b"Internal Server Error") and transport.closed
