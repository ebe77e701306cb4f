"""The relay's lean HTTP/1.1 client for its upstream requests (relay/http1.py): what it sends,
each way an answer's body can be framed, keep-alive reuse and when a connection is not reused,
reading paused while a stream waits unread, TLS, and each failure as its own error.

The servers here are bare asyncio servers that write the bytes each test wants, so the framing
is exactly what the test says, not what an HTTP library would choose."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay import http1

from .conftest import run_apart

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """Answers each request on a connection with ``handler``; counts connections and keeps
    every request's head and body as received."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head, body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def answering(*responses: bytes, close: bool = False) -> Handler:
    """Each request on a connection gets the next of ``responses`` (the last one repeats);
    ``close`` closes the connection after each answer."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        index = 0
        while await server.read_request(reader) is not None:
            writer.write(responses[min(index, len(responses) - 1)])
            await writer.drain()
            index += 1
            if close:
                return

    return handler


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


async def post(
    client: http1.Client, server: Server, body: bytes = b"{}", **headers: str
) -> tuple[int, bytes, http1.Headers]:
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions?x=1"
    async with client.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


def test_the_request_is_sent_as_written_and_the_connection_is_reused() -> None:
    async def main() -> None:
        server = await Server(answering(OK)).start()
        client = http1.Client(limit=4)
        for n in range(3):
            status, body, headers = await post(
                client, server, b'{"n": %d}' % n, Authorization="Bearer sk-1", **{"X-Demo": "a"}
            )
            assert (status, body) == (200, b'{"ok":true}')
            assert headers.get("content-type") == "application/json"
            assert headers.get("CONTENT-LENGTH") == "11"
            assert headers.get("retry-after") is None
        assert server.connections == 1
        head, body = server.requests[2]
        assert body == b'{"n": 2}'
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}" in lines
        assert "Authorization: Bearer sk-1" in lines
        assert "X-Demo: a" in lines
        assert "Content-Length: 8" in lines
        await client.close()
        await server.stop()

    run_apart(main)


@pytest.mark.parametrize(
    "raw, expected, reused",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
            True,
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            b"hello",
            False,
            id="connection-close",
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi", False, id="http-1.0"
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"ok",
            True,
            id="after-100-continue",
        ),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", b"", True, id="no-content"),
    ],
)
def test_each_framing_of_the_body(raw: bytes, expected: bytes, reused: bool) -> None:
    async def main() -> None:
        server = await Server(answering(raw)).start()
        client = http1.Client()
        for _ in range(2):
            _, body, _ = await post(client, server)
            assert body == expected
        assert server.connections == (1 if reused else 2)
        await client.close()
        await server.stop()

    run_apart(main)


def test_a_body_without_a_length_ends_with_the_connection() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"part two")
        await writer.drain()

    async def main() -> None:
        server = await Server(handler).start()
        client = http1.Client()
        _, body, _ = await post(client, server)
        assert body == b"part one, part two"
        _, body, _ = await post(client, server)  # a new connection: that one ended
        assert server.connections == 2
        await client.close()
        await server.stop()

    run_apart(main)


def test_a_stream_arrives_as_it_is_written() -> None:
    async def main() -> None:
        steps = [asyncio.Event() for _ in range(3)]

        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
        ) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for n, step in enumerate(steps):
                await step.wait()
                data = b"data: %d\n\n" % n
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await server.read_request(reader)  # keep the connection open

        server = await Server(handler).start()
        client = http1.Client()
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        received = []
        async with client.post(url, data=b"{}", headers={}) as resp:
            assert resp.status == 200
            for step in steps:
                step.set()
                received.append(await resp.content.readany())
            assert await resp.content.readany() == b""
        assert received == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
        await client.close()
        await server.stop()

    run_apart(main)


def test_reading_pauses_while_a_long_stream_waits_unread() -> None:
    total = 8 * 1024 * 1024
    piece = b"x" * 65536

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // len(piece)):
            writer.write(piece)
            await writer.drain()

    async def main() -> None:
        server = await Server(handler).start()
        client = http1.Client()
        url = f"http://127.0.0.1:{server.port}/"
        async with client.post(url, data=b"", headers={}) as resp:
            await asyncio.sleep(0.3)  # the server writes as fast as it can meanwhile
            assert resp.connection.paused
            assert resp.buffered < http1.HIGH_WATER + 2 * 65536 + 16384
            got = 0
            while data := await resp.content.readany():
                got += len(data)
                assert resp.buffered <= http1.HIGH_WATER + 2 * 65536
            assert got == total
        await client.close()
        await server.stop()

    run_apart(main)


def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async def main() -> None:
        server = await Server(answering(OK, close=True)).start()
        # The server closes after each answer though it said nothing: the next request still
        # gets an answer, on a new connection.
        client = http1.Client()
        for _ in range(3):
            status, _, _ = await post(client, server)
            await asyncio.sleep(0.05)
            assert status == 200
        assert server.connections == 3
        await client.close()
        await server.stop()

    run_apart(main)


def test_connections_idle_too_long_are_closed_and_replaced() -> None:
    async def main() -> None:
        server = await Server(answering(OK)).start()
        client = http1.Client(idle_timeout=0.05)
        await post(client, server)
        await post(client, server)
        assert server.connections == 1
        await asyncio.sleep(0.1)
        await post(client, server)
        assert server.connections == 2
        await client.close()
        await server.stop()

    run_apart(main)


def test_at_most_limit_connections_are_in_use_and_the_rest_wait() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await server.read_request(reader) is not None:
            await asyncio.sleep(0.02)
            writer.write(OK)
            await writer.drain()

    async def main() -> None:
        server = await Server(handler).start()
        client = http1.Client(limit=3)
        results = await asyncio.gather(*(post(client, server) for _ in range(12)))
        assert [status for status, _, _ in results] == [200] * 12
        assert server.connections == 3
        await client.close()
        await server.stop()

    run_apart(main)


def test_a_connection_whose_answer_was_not_read_or_was_cancelled_is_closed() -> None:
    async def main() -> None:
        server = await Server(answering(OK)).start()
        client = http1.Client()
        url = f"http://127.0.0.1:{server.port}/"
        async with client.post(url, data=b"", headers={}) as resp:
            assert resp.status == 200  # the body is never read
        await post(client, server)
        assert server.connections == 2

        slow = await Server(lambda r, w, s: asyncio.sleep(10)).start()
        one = http1.Client(limit=1)
        task = asyncio.create_task(post(one, slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Its one slot was given back: the next request does not wait for it.
        async with asyncio.timeout(2):
            assert (await post(one, server))[0] == 200
        await one.close()
        await client.close()
        await server.stop()
        await slow.stop()

    run_apart(main)


def test_failures_raise_client_errors() -> None:
    async def cut(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async def garbage(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async def hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)

    async def main() -> None:
        client = http1.Client(connect_timeout=2)
        servers = [await Server(h).start() for h in (cut, garbage, hang_up)]
        with pytest.raises(http1.ServerDisconnected):
            await post(client, servers[0])
        with pytest.raises(http1.ProtocolError):
            await post(client, servers[1])
        with pytest.raises(http1.ServerDisconnected):
            await post(client, servers[2])
        port = servers[2].port
        await servers[2].stop()
        await asyncio.sleep(0.01)
        with pytest.raises(http1.ConnectError):
            async with client.post(f"http://127.0.0.1:{port}/", data=b"", headers={}):
                pass
        for bad in ("ftp://example.com/", "http:///nohost", "http://example.com:99999/"):
            with pytest.raises(http1.InvalidRequest):
                async with client.post(bad, data=b"", headers={}):
                    pass
        for headers in ({"X-A": "one\r\nX-Injected: two"}, {"X\nB": "1"}, {"X-A": "\u20ac"}):
            with pytest.raises(http1.InvalidRequest):
                async with client.post(
                    f"http://127.0.0.1:{servers[0].port}/", data=b"", headers=headers
                ):
                    pass
        assert issubclass(http1.ConnectTimeout, TimeoutError)
        await client.close()
        for server in servers[:2]:
            await server.stop()

    run_apart(main)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_checks_the_certificate_and_reuses_the_connection(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)

    async def main() -> None:
        server = await Server(answering(OK)).start(tls=server_side)
        url = f"https://localhost:{server.port}/v1/chat/completions"
        trusting = ssl.create_default_context(cafile=str(cert))
        client = http1.Client(ssl_context=trusting)
        for _ in range(2):
            async with client.post(url, data=b"{}", headers={}) as resp:
                assert (resp.status, await resp.read()) == (200, b'{"ok":true}')
        assert server.connections == 1
        assert f"Host: localhost:{server.port}" in server.requests[0][0].decode()
        await client.close()

        # The system's CAs do not know this certificate: no request is sent.
        default = http1.Client()
        with pytest.raises(http1.ConnectError):
            async with default.post(url, data=b"{}", headers={}):
                pass
        await default.close()
        await server.stop()

    run_apart(main)


def test_credentials_in_the_url_become_basic_authorization() -> None:
    async def main() -> None:
        server = await Server(answering(OK)).start()
        client = http1.Client()
        url = f"http://user:p%40ss@127.0.0.1:{server.port}/"
        async with client.post(url, data=b"", headers={}) as resp:
            await resp.read()
        assert b"Authorization: Basic dXNlcjpwQHNz\r\n" in server.requests[0][0]
        await client.close()
        await server.stop()

    run_apart(main)
