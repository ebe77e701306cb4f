"""The relay's usage reporter: how events are cut into batches, on a broker of the test's own
(a private redis-server) and, with that broker stopped, in the spool."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import redis as redis_lib
from kombu import compression

from relay.config import Config
from relay.reporter import TASK, Reporter

from .conftest import PrivateRedis, run_apart


def events(count: int) -> list[dict[str, Any]]:
    return [{"request_id": f"req-{i}", "cost_nanos": i} for i in range(count)]


def batch_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A broker message's batch, decoded as a worker decodes it: the body base64-decoded (the
    Redis transport's encoding), decompressed by kombu's decoder for the message's compression,
    then JSON (``[args, kwargs, embed]``, the batch the one argument)."""
    body = base64.b64decode(message["body"])
    body = compression.decompress(body, message["headers"]["compression"])
    return json.loads(body)[0][0]  # type: ignore[no-any-return]


def add_and_flush(reporter: Reporter, batch: list[dict[str, Any]]) -> None:
    async def run() -> None:
        for event in batch:
            reporter.add(event)
        await reporter.flush()

    run_apart(run)


def test_batch_size_comes_from_the_environment(monkeypatch: Any) -> None:
    monkeypatch.delenv("TP_USAGE_BATCH_SIZE", raising=False)
    assert Config.from_env().batch_size == 1000
    monkeypatch.setenv("TP_USAGE_BATCH_SIZE", "250")
    assert Config.from_env().batch_size == 250


def test_events_leave_in_batches_of_at_most_batch_size(tmp_path: Path) -> None:
    broker = PrivateRedis(tmp_path)
    broker.start()
    try:
        reporter = Reporter(broker.url, tmp_path / "spool", batch_size=1000)
        add_and_flush(reporter, events(2500))
        with redis_lib.Redis(port=broker.port) as r:
            messages = [json.loads(m) for m in r.lrange("celery", 0, -1)]
        # LPUSH: the first batch sent is the last in the list.
        messages.reverse()
        assert [m["headers"]["task"] for m in messages] == [TASK] * 3
        assert {m["content-type"] for m in messages} == {"application/json"}
        # zlib-compressed, as kombu's "zlib" (which every worker decompresses by itself)
        assert {m["headers"]["compression"] for m in messages} == {"application/x-gzip"}
        batches = [batch_of(m) for m in messages]
        assert [len(b) for b in batches] == [1000, 1000, 500]
        assert len(base64.b64decode(messages[0]["body"])) < len(orjson.dumps(batches[0])) / 5
        assert [e["request_id"] for b in batches for e in b] == [f"req-{i}" for i in range(2500)]
        assert messages[0]["headers"]["argsrepr"] == "[<1000 usage events>]"
        assert reporter.sent == 2500 and reporter.spooled == 0
    finally:
        broker.stop()


def test_with_the_broker_down_each_batch_is_one_spool_file(tmp_path: Path) -> None:
    broker = PrivateRedis(tmp_path)  # never started: nothing listens on its port
    reporter = Reporter(broker.url, tmp_path / "spool", batch_size=400)
    (tmp_path / "spool").mkdir()
    add_and_flush(reporter, events(1000))
    files = sorted((tmp_path / "spool").glob("usage-*.json"))
    assert [len(orjson.loads(f.read_bytes())) for f in files] == [400, 400, 200]
    assert reporter.spooled == 1000 and reporter.sent == 0


def test_events_that_arrive_during_a_flush_wait_for_the_next_one(tmp_path: Path) -> None:
    """A flush sends what was buffered when it began; it does not chase each event that
    arrives while it sends with a batch of its own (which sent strings of one-event batches,
    each a task and a transaction for the worker). Stopping sends everything."""
    broker = PrivateRedis(tmp_path)
    broker.start()
    try:
        reporter = Reporter(broker.url, tmp_path / "spool", batch_size=1000)

        async def run() -> tuple[int, int]:
            async def during(step: Awaitable[None]) -> None:
                task = asyncio.ensure_future(step)
                await asyncio.sleep(0)  # the step runs up to its send, in the executor
                for event in events(3):
                    reporter.add({**event, "late": True})
                await task

            for event in events(5):
                reporter.add(event)
            await during(reporter.flush())
            waiting = len(reporter.buffer)
            await during(reporter.stop())
            return waiting, len(reporter.buffer)

        waiting, left = run_apart(run)
        assert waiting == 3
        assert left == 0
        with redis_lib.Redis(port=broker.port) as r:
            messages = [json.loads(m) for m in r.lrange("celery", 0, -1)]
        messages.reverse()
        batches = [batch_of(m) for m in messages]
        # The late events of the first flush went with the second; the second's own late
        # events, added while it sent, went too: stopping sends everything.
        assert [len(b) for b in batches] == [5, 3, 3]
        assert reporter.sent == 11
    finally:
        broker.stop()
