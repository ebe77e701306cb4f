"""The relay's lean Redis client for its Lua scripts (relay/scripts.py): the same answers and
errors as redis-py, pipelining that keeps replies matched, and a server that goes away and
comes back."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as redis_lib
import redis.exceptions
from django.conf import settings
from redis.connection import PythonRespSerializer

from core import state
from relay.scripts import Script, ScriptClient, pack, supports

from .conftest import PrivateRedis

T = TypeVar("T")

ECHO = "return {ARGV[1], tonumber(ARGV[2]), KEYS[1]}"


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """In a thread of its own: the browser tests' Playwright keeps an event loop in this one."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> T:
        return await factory()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """tests.conftest.wait_until for a coroutine: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await asyncio.sleep(0.005)


def in_flight(client: ScriptClient) -> int:
    """Commands written to the connection whose replies have not arrived (the client's own
    count: a paused server cannot be asked)."""
    link = client._link
    return 0 if link is None or link._pending else len(link.waiters)


class Server(PrivateRedis):
    """Stopped with SIGKILL: these tests simulate a crash."""

    def __init__(self, directory: Path, *extra: str) -> None:
        super().__init__(directory, *extra, kill=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    yield s
    s.stop()


def test_commands_are_encoded_as_redis_py_encodes_them() -> None:
    serializer = PythonRespSerializer(
        6000, redis_lib.connection.Encoder("utf-8", "strict", False).encode
    )
    for args in (
        ("EVALSHA", "abc", 2, "tp:{a1}", "tp:{a1}:holds", "req_1", 123456789012, -1, 0),
        ("SET", "k", "é ünïcode", 3.25, b"\x00raw\r\n"),
        ("PING",),
    ):
        assert pack(args) == b"".join(serializer.pack(*args))
    with pytest.raises(redis.exceptions.DataError):
        pack(("SET", "k", True))


def test_supported_urls() -> None:
    assert supports("redis://127.0.0.1:6379/15")
    assert supports("redis://user:secret@localhost:6390/2")
    assert not supports("unix:///tmp/redis.sock")
    assert not supports("rediss://127.0.0.1:6379/0")


def test_scripts_answer_as_redis_py_scripts_do() -> None:
    async def both() -> tuple[list[Any], list[Any]]:
        import redis.asyncio as aioredis

        reference = aioredis.Redis.from_url(settings.REDIS_URL)
        client = ScriptClient(settings.REDIS_URL)
        ours = Script(client, state.RESERVE)
        theirs = reference.register_script(state.RESERVE)
        release_ours = Script(client, state.RELEASE)
        results: tuple[list[Any], list[Any]] = ([], [])
        try:
            for account, runner, release, out in (
                (990001, ours, release_ours, results[0]),
                (990002, theirs, reference.register_script(state.RELEASE), results[1]),
            ):
                await reference.delete(
                    state.account(account), state.account_holds(account), state.hold_times(account)
                )
                await reference.hset(state.account(account), "posted", 1000)
                keys = [
                    state.account(account),
                    state.account_holds(account),
                    state.hold_times(account),
                    state.no_cap(account),
                    state.rate_window(account, 1, "r", 1),
                    state.rate_window(account, 1, "t", 1),
                ]
                for rid, amount in (("a", 600), ("a", 600), ("b", 600), ("c", 400)):
                    args = [rid, amount, 1, -1, 0, -1, -1, 10, 120]
                    out.append(await runner(keys=keys, args=args))
                out.append(await release(keys=keys[:4], args=["a"]))
                out.append(await reference.hget(state.account(account), "held"))
                await reference.delete(
                    state.account(account), state.account_holds(account), state.hold_times(account)
                )
        finally:
            await client.aclose()
            await reference.aclose()
        return results

    ours, theirs = run(both)
    assert ours == theirs
    assert ours[:4] == [[1, 1, 10], [1, 0, 0], [0, 0, 0], [1, 1, 10]]


def test_a_script_redis_does_not_have_is_sent_whole() -> None:
    async def go() -> list[Any]:
        client = ScriptClient(settings.REDIS_URL)
        script = Script(client, ECHO + " -- " + str(random.random()))
        try:
            first = await script(keys=["k"], args=["x", 7])
            second = await script(keys=["k"], args=["y", 8])  # by SHA now
            await client.execute("SCRIPT", "FLUSH")
            third = await script(keys=["k"], args=["z", 9])
            return [first, second, third]
        finally:
            await client.aclose()

    assert run(go) == [[b"x", 7, b"k"], [b"y", 8, b"k"], [b"z", 9, b"k"]]


def test_error_replies_raise_response_errors_and_the_connection_stays_usable() -> None:
    async def go() -> Any:
        client = ScriptClient(settings.REDIS_URL)
        try:
            with pytest.raises(redis.exceptions.ResponseError, match="boom"):
                await Script(client, "return redis.error_reply('boom')")(keys=[], args=[])
            with pytest.raises(redis.exceptions.ResponseError):
                await client.execute("NOSUCHCOMMAND")
            return await client.execute("PING")
        finally:
            await client.aclose()

    assert run(go) == b"PONG"


def test_many_concurrent_callers_each_get_their_own_reply_even_when_some_give_up() -> None:
    async def go() -> None:
        client = ScriptClient(settings.REDIS_URL)
        script = Script(client, ECHO)
        try:

            async def one(i: int) -> None:
                await asyncio.sleep(random.random() / 100)
                assert await script(keys=[f"k{i}"], args=[f"r{i}", i]) == [
                    f"r{i}".encode(),
                    i,
                    f"k{i}".encode(),
                ]

            tasks = [asyncio.create_task(one(i)) for i in range(600)]
            await asyncio.sleep(0.003)
            cancelled = tasks[::7]
            for task in cancelled:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for i, result in enumerate(results):
                if isinstance(result, asyncio.CancelledError):
                    assert tasks[i] in cancelled
                else:
                    assert result is None, result
            # Still in step after the cancellations.
            assert await script(keys=["last"], args=["end", 1]) == [b"end", 1, b"last"]
        finally:
            await client.aclose()

    run(go)


def test_a_server_that_goes_away_and_comes_back(server: Server) -> None:
    async def go() -> None:
        client = ScriptClient(server.url, connect_timeout=1, timeout=2)
        script = Script(client, ECHO)
        try:
            assert await script(keys=["k"], args=["a", 1]) == [b"a", 1, b"k"]
            # Killed while commands are in flight: each of them fails, none hangs.
            await client.execute("CLIENT", "PAUSE", "2000")
            pending = [asyncio.create_task(script(keys=["k"], args=["b", i])) for i in range(20)]
            await until(lambda: in_flight(client) == 20)
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            for outcome in await asyncio.gather(*pending, return_exceptions=True):
                assert isinstance(outcome, redis.exceptions.ConnectionError), outcome
            # Down: every call fails fast with a ConnectionError.
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(redis.exceptions.ConnectionError):
                    await script(keys=["k"], args=["c", 1])
                assert time.monotonic() - started < 1.5
            # Back (empty, so without the script): the next call reconnects and loads it.
            await asyncio.get_running_loop().run_in_executor(None, server.start)
            assert await script(keys=["k"], args=["d", 2]) == [b"d", 2, b"k"]
        finally:
            await client.aclose()

    run(go)


def test_a_server_that_stops_answering_times_out(server: Server) -> None:
    async def go() -> None:
        client = ScriptClient(server.url, timeout=0.3)
        try:
            assert await client.execute("PING") == b"PONG"
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                outcomes = await asyncio.gather(
                    *(client.execute("PING") for _ in range(5)), return_exceptions=True
                )
                assert all(isinstance(o, redis.exceptions.TimeoutError) for o in outcomes), outcomes
                assert time.monotonic() - started < 1.5
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert await client.execute("PING") == b"PONG"
        finally:
            await client.aclose()

    run(go)


def test_password_and_database_are_used(tmp_path: Path) -> None:
    secured = Server(tmp_path, "--requirepass", "s3cret")
    secured.start()
    try:

        async def go() -> None:
            client = ScriptClient(f"redis://:s3cret@127.0.0.1:{secured.port}/3")
            try:
                await client.execute("SET", "where", "here")
            finally:
                await client.aclose()
            wrong = ScriptClient(f"redis://:nope@127.0.0.1:{secured.port}/3")
            with pytest.raises(redis.exceptions.AuthenticationError):
                await wrong.execute("PING")
            await wrong.aclose()

        run(go)
        check = redis_lib.Redis(port=secured.port, password="s3cret", db=3)
        assert check.get("where") == b"here"
        check.close()
    finally:
        secured.stop()
