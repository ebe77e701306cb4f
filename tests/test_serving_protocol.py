"""What ``serving.protocol`` adds to uvicorn for the relay's hot path: a whole response in one
write, and the disconnect callback in the scope. Served by uvicorn itself on a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl

from relay import request as relay_request
from serving import protocol
from serving.protocol import DISCONNECT, GuardedHttpToolsProtocol

from .conftest import run_apart

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


@asynccontextmanager
async def serve(app: App) -> AsyncIterator[int]:
    """uvicorn with the project's protocol on a free port of 127.0.0.1 (the port is yielded)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        loop="none",
        http=GuardedHttpToolsProtocol,
        ws="none",
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def head_of(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


def test_the_relay_and_the_server_name_the_same_extension() -> None:
    assert relay_request.DISCONNECT == DISCONNECT


class Recording:
    """The transport's side of a cycle's writes (the socket boundary): each ``write`` and,
    apart, each ``writelines`` with its parts as given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.lines: list[list[bytes]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.lines.append(list(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def resume_reading(self) -> None:
        pass


def cycle_transport(loop: asyncio.AbstractEventLoop) -> tuple[Any, Recording]:
    recording = Recording()
    flow = FlowControl(recording)  # type: ignore[arg-type]
    return protocol._CycleTransport(recording, loop, flow), recording  # type: ignore[arg-type]


def test_a_head_and_its_body_go_out_in_one_write() -> None:
    async def main() -> None:
        wrapped, recording = cycle_transport(asyncio.get_running_loop())
        wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        wrapped.write(b"ok")
        assert recording.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        wrapped.write(b"more")  # the next writes go straight through
        assert recording.writes[1:] == [b"more"]
        await asyncio.sleep(0)
        assert len(recording.writes) == 2  # nothing was left to flush

    run_apart(main)


def test_a_head_alone_goes_out_at_the_end_of_the_loops_pass() -> None:
    async def main() -> None:
        wrapped, recording = cycle_transport(asyncio.get_running_loop())
        wrapped.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        assert recording.writes == []
        await asyncio.sleep(0)
        assert recording.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]

    run_apart(main)


def test_a_large_body_is_not_copied_into_the_head_and_close_flushes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wrapped, recording = cycle_transport(loop)
        body = b"x" * 100_000
        wrapped.write(b"HEAD")
        wrapped.write(body)
        assert recording.writes == []
        assert len(recording.lines) == 1
        head, sent = recording.lines[0]
        assert head == b"HEAD" and sent is body  # the body itself, not a copy joined to the head
        wrapped, recording = cycle_transport(loop)
        wrapped.write(b"HEAD")
        wrapped.close()  # a cycle that closes at once still sends what it wrote first
        assert (recording.writes, recording.closed) == ([b"HEAD"], True)

    run_apart(main)


def test_whole_responses_on_a_kept_alive_connection() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        async with serve(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for path in ("/one", "/two"):
                writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                head = await head_of(reader)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                assert await reader.readexactly(len(path)) == path.encode()
            writer.close()

    run_apart(main)


def test_a_streams_head_does_not_wait_for_its_first_chunk() -> None:
    head_seen = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.wait_for(head_seen.wait(), 5)  # the client has the head before any body
        await send({"type": "http.response.body", "body": b"chunk"})

    async def main() -> None:
        async with serve(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            head = await head_of(reader)
            assert b"transfer-encoding: chunked" in head
            head_seen.set()
            assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == (
                b"5\r\nchunk\r\n0\r\n\r\n"
            )
            writer.close()

    run_apart(main)


@pytest.mark.parametrize(
    ("client_stays", "app_waits"),
    [
        pytest.param(0.2, 0.0, id="watching-when-the-client-leaves"),
        pytest.param(0.0, 0.5, id="watch-begun-after-the-client-left"),  # called back at once
    ],
)
def test_the_disconnect_callback_fires_when_the_client_hangs_up(
    client_stays: float, app_waits: float
) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(app_waits)
        gone = asyncio.Event()
        scope["extensions"][DISCONNECT]["watch"](lambda: (called.append("gone"), gone.set()))
        await asyncio.wait_for(gone.wait(), 5)  # no answer: the client leaves first

    async def main() -> None:
        async with serve(app) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            await writer.drain()
            await asyncio.sleep(client_stays)
            writer.close()
            for _ in range(300):
                if called:
                    break
                await asyncio.sleep(0.01)

    run_apart(main)
    assert called == ["gone"]


def test_no_callback_once_the_response_is_complete_or_the_watch_is_stopped() -> None:
    called: list[str] = []
    finished = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        watch = scope["extensions"][DISCONNECT]["watch"]
        if scope["path"] == "/stopped":
            watch(lambda: called.append("stopped"))
            watch(None)
            await asyncio.sleep(0.5)  # the client leaves meanwhile, unanswered
            return
        watch(lambda: called.append("complete"))
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        await asyncio.sleep(0.5)  # the client leaves meanwhile, answered
        finished.set()

    async def main() -> None:
        async with serve(app) as port:
            for path in ("/complete", "/stopped"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                if path == "/complete":
                    await head_of(reader)
                    assert await reader.readexactly(2) == b"ok"
                else:
                    await asyncio.sleep(0.2)
                writer.close()
            await asyncio.wait_for(finished.wait(), 5)
            await asyncio.sleep(0.6)

    run_apart(main)
    assert called == []


@pytest.mark.parametrize("extensions", [None, {}], ids=["no-extensions", "not-this-one"])
def test_under_another_server_the_relay_watches_receive(extensions: Any) -> None:
    """Without the extension (another ASGI server), the relay's watch is a task waiting on
    ``receive()`` for ``http.disconnect``: the request's task is cancelled all the same."""
    req = relay_request.Request()

    async def main() -> bool:
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def request() -> None:
            scope = {"type": "http", "extensions": extensions}
            unwatch = relay_request.ClientSide().watch_disconnect(scope, messages.get, req, task)
            try:
                await asyncio.sleep(5)  # the upstream, taking its time
            finally:
                unwatch()

        task = asyncio.create_task(request())
        await asyncio.sleep(0)
        await messages.put({"type": "http.disconnect"})
        try:
            await asyncio.wait_for(task, 2)
        except asyncio.CancelledError:
            return True
        return False

    assert run_apart(main) is True
    assert req.disconnected
